"""Progress lines: every 5% of the rows or every 30 seconds, and one summary table at the end."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from airflow_provider_qmatic.bulk.progress import ProgressReporter, format_duration
from airflow_provider_qmatic.bulk.runner import BulkRunner
from airflow_provider_qmatic.sandbox import SandboxServer
from airflow_provider_qmatic.state.budget import RateLimiter

from .conftest import booking_rows, make_client


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_5_percent_or_30_seconds(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    sent = [0]
    logger = logging.getLogger("test.bulk.progress")
    reporter = ProgressReporter(
        action="book",
        total=200,
        requests=lambda: sent[0],
        limiter=RateLimiter(100),
        logger=logger,
        clock=clock,
    )
    counts = {"succeeded": 0}
    with caplog.at_level(logging.INFO, logger="test.bulk.progress"):
        for done in range(1, 201):
            clock.now += 1.2  # one row every 1.2 s, 2 requests per row: 100 requests/min
            sent[0] += 2
            counts["succeeded"] = done
            reporter.update(done, counts)
        lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 20  # 10 rows = 5% of 200, reached every 12 s, before 30 s pass
    assert lines[0] == (
        "Qmatic bulk book: 10/200 rows (5.0%) | succeeded 10, skipped_existing 0, failed 0, invalid 0 | "
        "20 requests in 12s (limit 100) | ETA 3m 48s"
    )
    assert lines[4].startswith("Qmatic bulk book: 50/200 rows (25.0%)")
    assert "| 100.0 requests/min since start (limit 100) |" in lines[4]  # 100 requests in 60 s
    assert lines[-1].endswith("| 100.0 requests/min since start (limit 100) | done in 4m 00s")

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="test.bulk.progress"):
        slow = ProgressReporter(
            action="cancel",
            total=10_000,
            requests=lambda: 1,
            limiter=RateLimiter(100),
            logger=logger,
            clock=clock,
        )
        clock.now += 29.0
        slow.update(1, {})  # nothing to say yet: 1 row, 29 s
        clock.now += 1.0
        slow.update(1, {})  # 30 s without a line: a heartbeat even though nothing finished
    assert len(caplog.records) == 1
    assert "1/10000 rows (0.0%)" in caplog.records[0].getMessage()


def test_the_pace_shown_never_exceeds_the_limit_the_limiter_keeps(caplog: pytest.LogCaptureFixture) -> None:
    """The reported case: at 100 requests/min the limiter sends a burst of 5 at once, then paces at
    95/min. A rate extrapolated from the first seconds read 132.8/min; what is shown now is a count
    during the first minute and a since-start rate after it, never above the limit."""
    clock = FakeClock()

    def sleep(seconds: float) -> None:
        clock.now += seconds

    limit = 100.0
    limiter = RateLimiter(limit, burst=5, clock=clock, sleep=sleep)
    sent = [0]
    logger = logging.getLogger("test.bulk.pace")
    reporter = ProgressReporter(
        action="book", total=200, requests=lambda: sent[0], limiter=limiter, logger=logger, clock=clock
    )
    with caplog.at_level(logging.INFO, logger="test.bulk.pace"):
        for done in range(1, 201):
            for _ in range(2):  # reserve and confirm
                limiter.acquire()
                sent[0] += 1
            reporter.update(done, {"succeeded": done})
    lines = [r.getMessage() for r in caplog.records]
    # The first line, at 10 rows: the 5-request burst, then 15 more at 95/min, in 9.5 s.
    assert "| 20 requests in 9s (limit 100) |" in lines[0], lines[0]
    counts = [re.search(r"\| (\d+) requests in (\d+)s \(limit 100\)", line) for line in lines]
    rates = [re.search(r"\| ([\d.]+) requests/min since start \(limit 100\)", line) for line in lines]
    assert all(c or r for c, r in zip(counts, rates, strict=True)), lines
    early = [(int(c.group(1)), int(c.group(2))) for c in counts if c]
    assert early, lines  # the first line comes within the first minute
    for requests, seconds in early:
        assert requests <= limit
        assert requests * 60.0 / max(seconds, 1) > limit  # what the old extrapolation would have shown
    later = [float(r.group(1)) for r in rates if r]
    assert later
    assert all(0.9 * limit <= rate <= limit for rate in later), later


def test_the_run_logs_progress_and_one_summary_table(
    sandbox: SandboxServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("test.bulk.run")
    with caplog.at_level(logging.INFO, logger="test.bulk.run"):
        BulkRunner(make_client(sandbox, tmp_path), logger=logger).book(booking_rows(sandbox, 40))
    messages = [r.getMessage() for r in caplog.records]
    progress = [m for m in messages if " rows (" in m]
    assert len(progress) >= 20  # 2 rows = 5% of 40
    assert progress[-1].startswith("Qmatic bulk book: 40/40 rows (100.0%) | succeeded 40")
    tables = [m for m in messages if m.startswith("Qmatic bulk book: summary")]
    assert len(tables) == 1
    for key in ("total", "succeeded", "requests_per_minute", "token_requests", "elapsed_s"):
        assert f"| {key} " in tables[0]


def test_format_duration() -> None:
    assert format_duration(5) == "5s"
    assert format_duration(185) == "3m 05s"
    assert format_duration(3725) == "1h 02m"
