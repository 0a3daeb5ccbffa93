"""Exactly once under faults, a SIGKILL mid-run, and tokens expiring mid-run.

The sandbox's store is the ground truth: every customer must end with exactly one CONFIRMED
appointment, and no reservation may stay held. Reservations whose *reserve* answer was lost cannot
be found by any API (they have no customer until confirmed): they hold their slot until the hold
ends, which the tests show by advancing the sandbox's clock past it. With faults on the confirm
step only, nothing may be held even before that.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_qmatic.bulk.runner import BulkRunner
from airflow_provider_qmatic.sandbox import SandboxServer

from .conftest import booking_rows, confirmed_by_customer, make_client, make_config, requests_to, statuses

HOLD_S = 900.0  # the sandbox's reservation hold (Qmatic's 15 minutes)
CHILD = Path(__file__).with_name("bulk_child.py")


def _assert_each_customer_once(sandbox: SandboxServer, rows: list[dict[str, str]]) -> None:
    booked = confirmed_by_customer(sandbox)
    assert set(booked) == {r["personal_identifier"] for r in rows}
    assert set(booked.values()) == {1}, {k: v for k, v in booked.items() if v != 1}


@pytest.mark.slow
def test_300_rows_with_5xx_and_commit_then_fail_everywhere(
    sandbox: SandboxServer, tmp_path: Path, journal_dir: Path
) -> None:
    rows = booking_rows(sandbox, 300)
    # 10% of requests answered 5xx before reaching the API (half 500, half 503), and 5% of the
    # writes that succeed are stored and then answered with a 500 or a dropped connection.
    sandbox.configure(fail_rate=0.05, unavailable_rate=0.05, commit_then_fail_rate=0.05)
    client = make_client(sandbox, tmp_path)

    result = BulkRunner(client, journal_path=journal_dir / "j.jsonl").book(rows)

    s = result.summary
    assert (s.succeeded, s.failed, s.invalid, s.skipped_existing) == (300, 0, 0, 0), result.failures()[:5]
    faults = sandbox.stats()["faults"]
    assert faults.get("error_500", 0) > 0
    assert faults.get("error_503", 0) > 0
    assert faults.get("commit_then_fail_500", 0) + faults.get("commit_then_fail_drop", 0) > 0
    _assert_each_customer_once(sandbox, rows)
    assert len(sandbox.appointments(status="CONFIRMED")) == 300
    # Held now: only reservations whose reserve answer was lost (counted by the runner).
    held = statuses(sandbox).get("RESERVED", 0)
    assert held <= s.possibly_orphaned_reservations
    sandbox.advance_clock(HOLD_S + 1)
    after = statuses(sandbox)
    assert after.get("RESERVED", 0) == 0
    assert after["CONFIRMED"] == 300  # expiry freed only the orphans, never an appointment
    print(f"300 rows: {s.elapsed_s:.1f} s, {s.api_requests} requests, {held} orphaned reservations expired")


def test_faults_on_confirm_only_leave_no_reservation_held(sandbox: SandboxServer, tmp_path: Path) -> None:
    rows = booking_rows(sandbox, 200)
    sandbox.configure(
        fail_rate=0.05, unavailable_rate=0.05, commit_then_fail_rate=0.05, fault_endpoints=["confirm"]
    )
    client = make_client(sandbox, tmp_path)

    result = BulkRunner(client).book(rows)

    assert result.summary.succeeded == 200
    assert result.summary.possibly_orphaned_reservations == 0
    _assert_each_customer_once(sandbox, rows)
    faults = sandbox.stats()["faults"]
    assert faults.get("commit_then_fail_500", 0) + faults.get("commit_then_fail_drop", 0) > 0
    assert requests_to(sandbox, "get") > 0  # unclear confirms were resolved by reading
    assert statuses(sandbox).get("RESERVED", 0) == 0  # no clock advance needed


def _journal_open_reservations(path: Path) -> set[str]:
    open_ids: set[str] = set()
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("e") == "reserved":  # the first line is the marker, not an event
            open_ids.add(entry["res"])
        elif entry.get("res"):
            open_ids.discard(entry["res"])
    return open_ids


def _rows_in_flight(path: Path) -> set[str]:
    """Rows (fingerprints) with a write started and no outcome recorded: what a retry looks up."""
    started: set[str] = set()
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("e") in ("reserving", "reserved", "cancelling"):  # the first line is the marker
            started.add(entry["fp"])
        elif entry.get("e") in ("done", "failed"):
            started.discard(entry["fp"])
    return started


def _in_flight(path: Path, older: float, younger: float) -> bool:
    """True if the journal has a reservation without outcome recorded between the two ages ago."""
    if not path.exists():
        return False
    now = time.time()
    reserved: dict[str, float] = {}
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("e") == "reserved":  # the first line is the marker, not an event
            reserved[entry["res"]] = entry["t"]
        elif entry.get("res"):
            reserved.pop(entry["res"], None)
    return any(older <= now - t <= younger for t in reserved.values())


def test_sigkill_mid_run_then_retry_books_every_row_once(
    sandbox: SandboxServer, tmp_path: Path, journal_dir: Path
) -> None:
    rows = booking_rows(sandbox, 40)
    source = tmp_path / "bookings.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    # Slow confirms: when the kill comes, the workers are between reserve and confirm.
    sandbox.configure(latency_ms=600, fault_endpoints=["confirm"])
    config = make_config(sandbox, tmp_path / "tokens")
    values = {
        "client_id": config.client_id,
        "client_secret": config.client_secret,
        "tenant": config.tenant,
        "base_url": config.base_url,
        "system_id": config.system_id,
        "requests_per_minute": config.requests_per_minute,
        "credential_cache_dir": config.credential_cache_dir,
    }
    journal = journal_dir / "task.jsonl"
    args = json.dumps({"config": values, "rows": str(source), "journal": str(journal)})
    child = subprocess.Popen([sys.executable, str(CHILD), "book", args])
    try:
        deadline = time.monotonic() + 60
        # Kill once some rows are done and a confirm is in flight (its reservation journaled
        # between 50 and 300 ms ago, well inside the confirm's 600 ms latency).
        while not (len(sandbox.appointments(status="CONFIRMED")) >= 8 and _in_flight(journal, 0.05, 0.3)):
            assert child.poll() is None, "the bulk process ended before it could be killed"
            assert time.monotonic() < deadline, "the bulk process made no progress"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(30)
    assert child.returncode == -signal.SIGKILL
    done_before = len(sandbox.appointments(status="CONFIRMED"))
    assert done_before < len(rows)
    unresolved = _journal_open_reservations(journal)
    assert unresolved, "the journal recorded no reservation in flight at the kill"
    in_flight = _rows_in_flight(journal)
    sandbox.configure(latency_ms=0)

    # The retry: try 2 of the same task instance (same journal), skip_existing="auto".
    retry = BulkRunner(make_client(sandbox, tmp_path), attempt=2, journal_path=journal).book(source)

    s = retry.summary
    assert s.failed == 0
    assert s.succeeded + s.skipped_existing == len(rows)
    assert s.skipped_existing >= done_before
    # Only rows in flight at the kill were looked up; rows never started were not searched.
    assert 1 <= len(in_flight) <= 4
    assert requests_to(sandbox, "search") <= len(in_flight)
    _assert_each_customer_once(sandbox, rows)
    by_id = {a["appointmentId"]: a["status"] for a in sandbox.appointments()}
    # Every reservation the journal knew about was settled: confirmed (the kill hit after Qmatic
    # stored the confirm) or released.
    assert {by_id[i] for i in unresolved} <= {"CONFIRMED", "RELEASED"}, {i: by_id[i] for i in unresolved}
    # Reservations whose reserve was in flight at the kill were never journaled: at most one per
    # worker thread, held until the hold ends.
    assert statuses(sandbox).get("RESERVED", 0) <= 4
    sandbox.advance_clock(HOLD_S + 1)
    assert statuses(sandbox).get("RESERVED", 0) == 0
    assert len(sandbox.appointments(status="CONFIRMED")) == len(rows)
    assert _journal_open_reservations(journal) == set()


def test_tokens_expiring_mid_run(sandbox: SandboxServer, tmp_path: Path) -> None:
    rows = booking_rows(sandbox, 60)
    sandbox.configure(token_lifetime=2)  # the client renews after half of it, every second
    client = make_client(sandbox, tmp_path, rpm=2400)  # at least 3 s of requests (120 at 40 a second)
    # Halfway, every issued token dies on the server while the client still trusts its copy: the
    # 401 makes it drop the token and fetch a new one.
    timer = threading.Timer(1.5, lambda: sandbox.advance_clock(60))
    timer.start()
    try:
        result = BulkRunner(client).book(rows)
    finally:
        timer.cancel()

    s = result.summary
    assert s.succeeded == 60
    assert s.failed == 0
    stats = sandbox.stats()
    assert s.token_requests >= 3
    assert stats["token_requests"] == s.token_requests  # every token request was this job's
    refused = sum(
        n for by_status in stats["requests"].values() for code, n in by_status.items() if code == "401"
    )
    assert refused >= 1
    _assert_each_customer_once(sandbox, rows)
