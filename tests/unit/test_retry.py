"""Retry-After parsing: only a real wait is a wait."""

from __future__ import annotations

import math

import pytest

from airflow_provider_qmatic.client.retry import parse_retry_after


@pytest.mark.parametrize("value", ["NaN", "nan", "inf", "Infinity", "-inf", "-1", "1e400"])
def test_a_retry_after_that_is_not_a_wait_is_absent(value: str) -> None:
    assert parse_retry_after(value) is None


@pytest.mark.parametrize(("value", "seconds"), [("0", 0.0), ("2.5", 2.5), ("1e308", 120.0)])
def test_a_retry_after_in_seconds_is_kept_and_capped(value: str, seconds: float) -> None:
    parsed = parse_retry_after(value)
    assert parsed is not None
    assert math.isclose(parsed, seconds)
