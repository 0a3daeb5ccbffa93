"""The bulk runner against the sandbox: validation before sending, duplicates, failure policy,
results files, skip_existing, and the reschedule and cancel flows."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from airflow_provider_qmatic.bulk.runner import (
    FAILED,
    INVALID,
    SKIPPED_EXISTING,
    SUCCEEDED,
    BulkResult,
    BulkRunner,
    BulkSummary,
    RowOutcome,
)
from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.exceptions import QmaticBulkError, QmaticBulkRetryableError, QmaticConfigError
from airflow_provider_qmatic.flows import RESERVE_BUDGET
from airflow_provider_qmatic.sandbox import SandboxServer
from airflow_provider_qmatic.state import request_budget

from .conftest import (
    booking_rows,
    confirmed_by_customer,
    make_client,
    make_config,
    read_outcomes,
    requests_to,
    statuses,
)


def _by_row(result: BulkResult) -> dict[int, RowOutcome]:
    return {o.row: o for o in result.outcomes}


def test_invalid_rows_and_duplicates_are_reported_and_never_sent(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    rows = booking_rows(sandbox, 6)
    bad_email = dict(booking_rows(sandbox, 1)[0], email="not-an-email")
    no_customer_id = {k: v for k, v in booking_rows(sandbox, 1)[0].items() if k != "personal_identifier"}
    naive = dict(booking_rows(sandbox, 1)[0])
    naive["start_time"] = naive["start_time"][:19]  # offset cut off and no timezone given
    naive.pop("end_time")
    duplicate = dict(rows[1], first_name="Someone", last_name="Else")  # same customer, slot: row 2
    rows += [bad_email, no_customer_id, naive, duplicate]
    client = make_client(sandbox, tmp_path)
    results = tmp_path / "results.csv"

    result = BulkRunner(client).book(rows, results_path=str(results))

    by_row = _by_row(result)
    assert [by_row[n].status for n in range(1, 7)] == [SUCCEEDED] * 6
    assert all(by_row[n].appointment_id for n in range(1, 7))
    assert by_row[7].status == INVALID
    assert by_row[7].error.startswith("customer.email:")
    assert by_row[8].status == INVALID
    assert "customer.personal_identifier: is required" in by_row[8].error
    assert by_row[9].status == INVALID
    assert by_row[9].error.startswith("start_time:")
    assert "no UTC offset" in by_row[9].error
    assert by_row[10].status == INVALID
    assert by_row[10].error.startswith("duplicate of row 2")
    s = result.summary
    assert (s.total, s.succeeded, s.invalid, s.failed, s.skipped_existing) == (10, 6, 4, 0, 0)
    # Only valid rows reached Qmatic, each once: 6 reserves, 6 confirms, each customer booked once.
    assert requests_to(sandbox, "reserve") == 6
    assert requests_to(sandbox, "confirm") == 6
    assert s.api_requests == 12
    assert s.token_requests == 1
    assert sorted(confirmed_by_customer(sandbox).values()) == [1] * 6
    # The results file has every row, and no personal data (errors name fields, not values).
    written = read_outcomes(results)
    assert [o["row"] for o in written] == list(range(1, 11))
    assert written[6]["status"] == "invalid"
    text = results.read_text()
    for row in rows:
        for field in ("personal_identifier", "email", "first_name", "last_name"):
            if row.get(field):
                assert row[field] not in text
    # XCom form: the summary plus outcomes for small jobs; none with the threshold below the size.
    xcom = result.to_xcom()
    assert xcom["invalid"] == 4
    assert len(xcom["outcomes"]) == 10
    assert xcom["results_path"] == str(results)
    assert "outcomes" not in result.to_xcom(max_outcomes=9)
    json.dumps(xcom)  # JSON-ready

    # Failure policy: 4 bad rows of 10.
    with pytest.raises(QmaticBulkError) as info:
        result.check_policy(max_failed_rows=0)
    assert not isinstance(info.value, QmaticBulkRetryableError)
    assert "duplicate of row 2 (same customer, branch, service and start) (rows 10)" in str(info.value)
    assert "not-an-email" not in str(info.value)
    result.check_policy(max_failed_rows=4)
    result.check_policy(max_failed_rows=None, max_failed_ratio=0.4)
    with pytest.raises(QmaticBulkError):
        result.check_policy(max_failed_rows=None, max_failed_ratio=0.39)


def test_missing_columns_fail_before_any_request(sandbox: SandboxServer, tmp_path: Path) -> None:
    path = tmp_path / "bookings.csv"
    path.write_text("branch_id,service_id,start_time,first_name\nx,y,z,Ada\n", encoding="utf-8")
    client = make_client(sandbox, tmp_path)
    with pytest.raises(QmaticConfigError, match="personal_identifier, last_name, email"):
        BulkRunner(client).book(path)
    stats = sandbox.stats()
    assert stats["api_requests"] == 0
    assert stats["token_requests"] == 0


def test_skip_existing_auto_skips_on_a_retry_only(sandbox: SandboxServer, tmp_path: Path) -> None:
    rows = booking_rows(sandbox, 10, with_end=False)  # end_time from the service's duration
    client = make_client(sandbox, tmp_path)

    first = BulkRunner(client, attempt=1).book(rows)
    assert first.summary.succeeded == 10
    assert requests_to(sandbox, "search") == 0  # attempt 1: nothing to look for
    # The end from the listed free slots, one listing per service and day, the services never read.
    listings = {(r["branch_id"], r["service_id"], r["start_time"][:10]) for r in rows}
    assert requests_to(sandbox, "timeslots") == len(listings)
    assert requests_to(sandbox, "services") == 0
    for appointment in sandbox.appointments(status="CONFIRMED"):
        slot = appointment["timeSlot"]
        minutes = (
            datetime.fromisoformat(slot["endTime"]) - datetime.fromisoformat(slot["startTime"])
        ).seconds / 60
        assert minutes in (10, 15, 20, 30, 45)

    retry = BulkRunner(client, attempt=2).book(rows)  # skip_existing="auto" on try 2
    assert retry.summary.skipped_existing == 10
    assert retry.summary.succeeded == 0
    assert {o.appointment_id for o in retry.outcomes} == {o.appointment_id for o in first.outcomes}
    assert requests_to(sandbox, "reserve") == 10  # nothing sent again
    assert requests_to(sandbox, "search") == 10

    # "never" on a retry does not look: the same rows are booked a second time (capacity allows).
    again = BulkRunner(client, attempt=2, skip_existing="never").book(rows[:2])
    assert again.summary.succeeded == 2
    assert requests_to(sandbox, "reserve") == 12


def test_policy_distinguishes_retryable_failures() -> None:
    def result(*outcomes: RowOutcome) -> BulkResult:
        counts = {
            status: sum(1 for o in outcomes if o.status == status) for status in (SUCCEEDED, FAILED, INVALID)
        }
        summary = BulkSummary(
            "book", len(outcomes), counts[SUCCEEDED], 0, counts[FAILED], counts[INVALID], 0, 0, 1.0, 0.0, 100
        )
        return BulkResult(summary, list(outcomes))

    ok = RowOutcome(1, SUCCEEDED, "a")
    server = RowOutcome(2, FAILED, error="confirm: HTTP 500", retryable=True)
    taken = RowOutcome(3, FAILED, error="reserve: HTTP 409 slot_unavailable")
    invalid = RowOutcome(4, INVALID, error="customer.email: ...")
    with pytest.raises(QmaticBulkRetryableError) as info:
        result(ok, server).check_policy(max_failed_rows=0)
    assert "may pass on a retry" in str(info.value)
    # A retry could fix the 5xx row, but the 409 alone breaks the policy: no retry.
    with pytest.raises(QmaticBulkError) as info2:
        result(ok, server, taken).check_policy(max_failed_rows=0)
    assert not isinstance(info2.value, QmaticBulkRetryableError)
    # With one failure allowed, only the 5xx row would remain: worth a retry.
    with pytest.raises(QmaticBulkRetryableError):
        result(ok, server, taken, RowOutcome(5, FAILED, error="x", retryable=True)).check_policy(
            max_failed_rows=1
        )
    with pytest.raises(QmaticBulkError):
        result(ok, invalid).check_policy(max_failed_rows=None, max_failed_ratio=0.49)
    result(ok, invalid).check_policy(max_failed_rows=None, max_failed_ratio=0.5)
    result(ok, invalid).check_policy(max_failed_rows=None, max_failed_ratio=None)
    with pytest.raises(QmaticConfigError):
        result(ok).check_policy(max_failed_rows=-1)
    with pytest.raises(QmaticConfigError):
        result(ok).check_policy(max_failed_ratio=1.5)


def test_server_faults_fail_rows_retryably_and_reserves_are_counted(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    rows = booking_rows(sandbox, 3)
    sandbox.configure(fail_rate=1.0, fault_endpoints=["reserve"])  # every reserve: 500, nothing stored
    config = make_config(sandbox, tmp_path / "tokens")
    client = QmaticClient(config, limiter=request_budget(config), sleep=lambda _s: None)

    result = BulkRunner(client, sleep=lambda _s: None).book(rows)

    assert result.summary.failed == 3
    assert all(o.retryable and o.error == "reserve: HTTP 500 internal_error" for o in result.outcomes)
    # A lost reserve answer is retried (the budget less the one kept for the task's retry), never
    # confirmed blindly; each counts.
    assert requests_to(sandbox, "reserve") == 3 * (RESERVE_BUDGET - 1)
    assert result.summary.possibly_orphaned_reservations == 3 * (RESERVE_BUDGET - 1)
    assert requests_to(sandbox, "confirm") == 0
    with pytest.raises(QmaticBulkRetryableError):
        result.check_policy()


def test_wrong_credentials_stop_the_run_early(sandbox: SandboxServer, tmp_path: Path) -> None:
    rows = booking_rows(sandbox, 20)
    config = make_config(sandbox, tmp_path / "tokens")
    config = type(config).from_values(
        client_id=config.client_id,
        client_secret="wrong-secret",
        tenant=config.tenant,
        base_url=config.base_url,
        system_id=config.system_id,
        credential_cache_dir=config.credential_cache_dir,
    )
    client = QmaticClient(config, limiter=request_budget(config))
    result = BulkRunner(client, concurrency=2).book(rows)
    assert result.fatal
    assert result.summary.failed == 20
    assert "not attempted" in result.outcomes[-1].error
    # One row per thread was tried (each met the 401), then the run stopped; nothing reached the API.
    tried = [o for o in result.outcomes if not o.error.startswith("not attempted")]
    assert 1 <= len(tried) <= 2
    assert all("HTTP 401" in o.error for o in tried)
    assert sandbox.stats()["api_requests"] == 0
    assert sandbox.stats()["requests"]["token"].get("401", 0) == len(tried)
    with pytest.raises(QmaticBulkError, match="stopped early") as info:
        result.check_policy(max_failed_rows=None)
    assert not isinstance(info.value, QmaticBulkRetryableError)
    assert "wrong-secret" not in str(info.value)


def test_bulk_reschedule_moves_once_and_skips_what_is_moved(sandbox: SandboxServer, tmp_path: Path) -> None:
    client = make_client(sandbox, tmp_path)
    booked = BulkRunner(client).book(booking_rows(sandbox, 9))
    ids = [o.appointment_id for o in booked.outcomes]
    current = {a["appointmentId"]: a for a in sandbox.appointments(status="CONFIRMED")}
    client.cancel(ids[8])  # the last one cannot be moved any more
    rows = []
    for appointment_id in ids:
        appointment = current[appointment_id]
        candidates = sandbox.free_slots(appointment["branch"]["id"], appointment["service"]["id"], limit=40)
        taken = {r["start_time"] for r in rows} | {appointment["timeSlot"]["startTime"]}
        target = next(s for s in reversed(candidates) if s["startTime"] not in taken)
        rows.append({"appointment_id": appointment_id, "start_time": target["startTime"]})
    rows.append({"appointment_id": "not-a-guid", "start_time": rows[0]["start_time"]})
    results = tmp_path / "moves.jsonl"

    result = BulkRunner(client).reschedule(rows, results_path=results)

    by_row = _by_row(result)
    assert [by_row[n].status for n in range(1, 9)] == [SUCCEEDED] * 8
    assert by_row[9].status == FAILED
    assert by_row[9].error == "get: HTTP 404 not_found"  # a cancel deletes (Part B, second edition)
    assert by_row[10].status == INVALID
    assert by_row[10].error.startswith("appointment_id:")
    after = {a["appointmentId"]: a for a in sandbox.appointments(status="CONFIRMED")}
    for row in rows[:8]:
        moved = after[row["appointment_id"]]
        assert datetime.fromisoformat(moved["timeSlot"]["startTime"]) == datetime.fromisoformat(
            row["start_time"]
        )
        old = current[row["appointment_id"]]["timeSlot"]
        duration = datetime.fromisoformat(old["endTime"]) - datetime.fromisoformat(old["startTime"])
        new = moved["timeSlot"]
        assert datetime.fromisoformat(new["endTime"]) - datetime.fromisoformat(new["startTime"]) == duration
    assert statuses(sandbox).get("RESERVED", 0) == 0  # every new reservation was used up
    assert [o["status"] for o in read_outcomes(results)][:8] == [SUCCEEDED] * 8
    reserves = requests_to(sandbox, "reserve")

    again = BulkRunner(client, attempt=2).reschedule(rows[:8])
    assert again.summary.skipped_existing == 8
    assert requests_to(sandbox, "reserve") == reserves  # done means: already at the target slot


def test_bulk_cancel_and_its_skip_semantics(sandbox: SandboxServer, tmp_path: Path) -> None:
    client = make_client(sandbox, tmp_path)
    booked = BulkRunner(client).book(booking_rows(sandbox, 6))
    rows = [{"appointment_id": o.appointment_id} for o in booked.outcomes]
    rows.append({"appointment_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6"})  # unknown: 404

    result = BulkRunner(client).cancel(rows)

    # A 404 to a first, clearly answered cancel: cancelled (deleted) before the job, nothing to do.
    assert [o.status for o in result.outcomes] == [SUCCEEDED] * 6 + [SKIPPED_EXISTING]
    assert statuses(sandbox).get("CONFIRMED", 0) == 0
    deletes = requests_to(sandbox, "cancel")
    assert deletes == 7

    # Without looking first, a second cancel meets Qmatic's 404 (or 409) and reports it as done.
    never = BulkRunner(client, skip_existing="never").cancel(rows[:6])
    assert never.summary.skipped_existing == 6
    assert never.summary.failed == 0
    assert requests_to(sandbox, "cancel") == deletes + 6


def test_an_unwritable_results_file_fails_retryably_after_every_row(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("", encoding="utf-8")
    result = BulkRunner(make_client(sandbox, tmp_path)).book(
        booking_rows(sandbox, 2), results_path=blocker / "results.csv"
    )
    assert result.summary.succeeded == 2
    assert result.results_path is None
    assert result.results_error
    with pytest.raises(QmaticBulkRetryableError, match="results file could not be written"):
        result.check_policy()
