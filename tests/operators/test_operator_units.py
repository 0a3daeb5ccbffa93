"""Operator details that need no task run: import cost, templated fields, error classes, parsing."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_qmatic.api import slots
from airflow_provider_qmatic.compat import AirflowFailException
from airflow_provider_qmatic.exceptions import (
    QmaticConfigError,
    QmaticConflictError,
    QmaticRateLimitError,
    QmaticServerError,
    QmaticUnknownOutcomeError,
    QmaticValidationError,
)
from airflow_provider_qmatic.operators import appointments
from airflow_provider_qmatic.operators._base import rendered
from airflow_provider_qmatic.operators.appointments import (
    QmaticBookAppointmentOperator,
    QmaticCancelAppointmentOperator,
    QmaticFindTimeslotsOperator,
    QmaticRescheduleAppointmentOperator,
)
from tests.operators.conftest import PASSPORT, STOCKHOLM

pytestmark = pytest.mark.airflow

_IMPORT_PROBE = """
import json, sys
import airflow_provider_qmatic.compat  # Airflow's own authoring interface: the baseline
added = {}
for name in sys.argv[1:]:
    before = set(sys.modules)
    __import__(name)
    added[name] = sorted(set(sys.modules) - before)
print(json.dumps(added))
"""
# DAG files import these; each may add only itself and its small bases (the sensor: Airflow's
# sensor base too), never the trigger, hook, client or models, which load when a task runs.
LIGHT = ("airflow_provider_qmatic.operators.appointments", "airflow_provider_qmatic.sensors.timeslots")
HEAVY = ("requests", "pydantic", "fastapi", "uvicorn", "urllib3")
OURS_HEAVY = (
    "airflow_provider_qmatic.api.models",
    "airflow_provider_qmatic.client.client",
    "airflow_provider_qmatic.sandbox",
    "airflow_provider_qmatic.hooks.qmatic",
    "airflow_provider_qmatic.client.auth",
    "airflow_provider_qmatic.state.budget",
    "airflow_provider_qmatic.triggers",
)


def test_importing_the_operators_and_the_sensor_loads_nothing_heavy() -> None:
    """DAG files import these modules on every parse: each may add only itself and its small bases."""
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_PROBE, *LIGHT],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    added = json.loads(result.stdout.strip().splitlines()[-1])
    for module in LIGHT:
        assert module in added[module]  # the probe measured something
        for name in added[module]:
            assert name.split(".")[0] not in HEAVY, (module, name)
            assert not any(name == m or name.startswith(m + ".") for m in OURS_HEAVY), (module, name)


def test_templated_fields() -> None:
    assert QmaticBookAppointmentOperator.template_fields == (
        "branch_id",
        "service_id",
        "service_ids",
        "start_time",
        "end_time",
        "customer",
        "notes",
        "resource_id",
        "number_of_reservations",
        "information_questions",
        "timezone",
        "qmatic_conn_id",
    )
    assert QmaticBookAppointmentOperator.template_fields_renderers == {
        "customer": "json",
        "information_questions": "json",
        "service_ids": "json",
    }
    assert QmaticRescheduleAppointmentOperator.template_fields == (
        "appointment_id",
        "start_time",
        "end_time",
        "timezone",
        "notes",
        "service_ids",
        "qmatic_conn_id",
    )
    assert QmaticCancelAppointmentOperator.template_fields == ("appointment_id", "qmatic_conn_id")
    assert QmaticFindTimeslotsOperator.template_fields == (
        "branch_id",
        "service_id",
        "service_ids",
        "date_from",
        "date_to",
        "limit",
        "qmatic_conn_id",
    )


class _Hook:
    """The facade the operators use, failing every call with ``error``; its journals in ``tmp``."""

    def __init__(self, error: Exception, tmp: Path) -> None:
        self.error = error
        self.config = SimpleNamespace(
            credential_cache="file",
            credential_cache_dir=str(tmp),
            base_url="https://demo.qmatic.cloud",
            tenant="demo",
            system_id="sys-1",
            client_id="c",
        )
        self.flows = SimpleNamespace(book=self.find_timeslots, settle=self.find_timeslots)

    def find_timeslots(self, *args: Any, **kwargs: Any) -> list[Any]:
        raise self.error


def _book_operator(error: Exception, tmp: Path) -> QmaticBookAppointmentOperator:
    op = QmaticBookAppointmentOperator(
        task_id="book",
        branch_id=STOCKHOLM,
        service_id=PASSPORT,
        start_time="2030-12-02T09:00:00+01:00",
        customer={
            "personal_identifier": "19800430ADA01",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada@example.com",
        },
    )
    op.__dict__["hook"] = _Hook(error, tmp)  # the hook is a cached_property: replace it
    return op


CONTEXT = {"ti": SimpleNamespace(try_number=1, dag_id="d", task_id="book", run_id="r", map_index=-1)}


@pytest.mark.parametrize(
    "error",
    [
        QmaticRateLimitError("over the limit", status=429, code="rate_limited"),
        QmaticServerError("bad gateway", status=502),
        QmaticUnknownOutcomeError("no answer to reserve"),
        QmaticConflictError("hold ran out", status=409, code="reservation_expired"),
    ],
    ids=["429", "502", "unknown-outcome", "reservation-expired"],
)
def test_retryable_errors_reach_airflow_unchanged(error: Exception, tmp_path: Path) -> None:
    """So that the task's own retries apply."""
    with pytest.raises(type(error)) as raised:
        _book_operator(error, tmp_path).execute(CONTEXT)
    assert raised.value is error
    find = QmaticFindTimeslotsOperator(task_id="find", branch_id=STOCKHOLM, service_id=PASSPORT)
    find.__dict__["hook"] = _Hook(error, tmp_path)
    with pytest.raises(type(error)):
        find.execute(CONTEXT)


def test_refusals_become_a_failure_without_retry(tmp_path: Path) -> None:
    error = QmaticConflictError("slot full", status=409, code="slot_unavailable")
    with pytest.raises(AirflowFailException, match="QmaticConflictError: slot full"):
        _book_operator(error, tmp_path).execute(CONTEXT)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"personal_identifier": "X"}', {"personal_identifier": "X"}),
        ("{'personal_identifier': 'X'}", {"personal_identifier": "X"}),  # str(dict), as Jinja renders it
        ('[{"question_id": "q", "answer": "a"}]', [{"question_id": "q", "answer": "a"}]),
    ],
)
def test_customer_rendered_to_text_is_read_back(text: str, expected: Any) -> None:
    assert rendered(text, "customer") == expected


@pytest.mark.parametrize("text", ["", "Ada Lovelace", "42", "__import__('os')"])
def test_text_that_is_no_object_is_refused(text: str) -> None:
    with pytest.raises(QmaticValidationError, match="customer: must be an object") as raised:
        rendered(text, "customer")
    assert raised.value.field == "customer"


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a": ' * 5_000 + "1" + "}" * 5_000, "-" * 100_000 + "1"])
def test_text_nested_too_deeply_is_a_config_error_naming_the_argument(text: str) -> None:
    with pytest.raises(QmaticConfigError, match="customer: is nested too deeply") as raised:
        rendered(text, "customer")
    assert raised.value.field == "customer"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-12-01", date(2026, 12, 1)),
        (" 2026-12-01 ", date(2026, 12, 1)),
        ("2026-12-01T23:30:00+01:00", date(2026, 12, 1)),
        ("2026-12-01T08:00:00Z", date(2026, 12, 1)),
        (date(2026, 12, 1), date(2026, 12, 1)),
        (datetime(2026, 12, 1, 23, 30, tzinfo=timezone(timedelta(hours=-5))), date(2026, 12, 1)),
        (None, None),
        ("", None),
    ],
)
def test_dates_accepted_by_find(value: Any, expected: date | None) -> None:
    assert slots.as_date(value, "date_from") == expected


@pytest.mark.parametrize("value", ["2026-12-01garbage", "12/01/2026", "tomorrow", 20261201])
def test_dates_refused_by_find(value: Any) -> None:
    with pytest.raises(QmaticValidationError, match="date_to: must be a date") as raised:
        slots.as_date(value, "date_to")
    assert raised.value.field == "date_to"


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("", None), ("3", 3), (0, 0), (20, 20)])
def test_limit(value: Any, expected: int | None) -> None:
    assert slots.as_limit(value) == expected


@pytest.mark.parametrize("value", ["-1", "many", True, 2.5])
def test_bad_limit(value: Any) -> None:
    with pytest.raises(QmaticValidationError, match="limit"):
        slots.as_limit(value)


def test_times_in_log_lines() -> None:
    start = datetime(2026, 12, 1, 9, 0, tzinfo=timezone(timedelta(hours=1)))
    assert appointments._when(start, None) == "2026-12-01 09:00 UTC+01:00"
    assert appointments._when(start, "Europe/Stockholm") == "2026-12-01 09:00 Europe/Stockholm"
    assert appointments._when(start, "America/New_York") == "2026-12-01 03:00 America/New_York"
    assert appointments._when(start.astimezone(timezone.utc), "") == "2026-12-01 08:00 UTC"
    assert appointments._when(start, "No/Such_Zone") == "2026-12-01 09:00 UTC+01:00"
    assert appointments._when(None, None) == "an unknown time"
