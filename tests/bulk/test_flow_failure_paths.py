"""The flows' failure paths against the sandbox with its faults, for single calls and bulk rows.

Each test reads the outcome from the sandbox's own store and counters (``/_sandbox/``): what is
held, what is booked, which requests reached it and how they were answered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.api.contract import Scope
from airflow_provider_qmatic.api.models import BookingRequest, RescheduleRequest
from airflow_provider_qmatic.bulk.runner import (
    FAILED,
    SKIPPED_EXISTING,
    SUCCEEDED,
    BulkRunner,
    QmaticBulkError,
    QmaticBulkRetryableError,
    _fingerprint,
    _instant,
)
from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.exceptions import QmaticCoordinationError, QmaticOwnHoldsError, QmaticServerError
from airflow_provider_qmatic.flows import RESERVE_BUDGET, FlowEvents, Flows
from airflow_provider_qmatic.sandbox import SandboxServer
from airflow_provider_qmatic.state import request_budget
from airflow_provider_qmatic.state.budget import RateLimiter
from airflow_provider_qmatic.state.journal import DONE, FINGERPRINTS, RESERVING, FileJournal

from .conftest import booking_rows, make_client, make_config, requests_to, statuses

HOLD_S = 900.0  # the sandbox's reservation hold (Qmatic's 15 minutes)


@pytest.fixture(params=["public", "rich"])
def qmatic_answer_shape(request: pytest.FixtureRequest) -> str:
    """Every failure path in both answer shapes: the public one (no status, notes, expiresAt or
    personal identifier; a cancelled appointment deleted) and the richer first-edition one."""
    return str(request.param)


def _no_wait_client(sandbox: SandboxServer, tmp_path: Path) -> QmaticClient:
    """A client whose retries do not sleep (server faults are retried at once). It cannot wait
    for the token endpoint's 1 request per second either, so that limit is off here."""
    sandbox.configure(token_requests_per_second=0)
    config = make_config(sandbox, tmp_path / "tokens")
    return QmaticClient(config, limiter=request_budget(config), sleep=lambda _s: None)


def _booking(row: dict[str, str]) -> BookingRequest:
    nested: dict[str, Any] = {k: row[k] for k in ("branch_id", "service_id", "start_time", "end_time")}
    nested["customer"] = {k: row[k] for k in ("personal_identifier", "first_name", "last_name", "email")}
    return BookingRequest.parse(nested)


def _fingerprint_of(client: QmaticClient, row: dict[str, str]) -> str:
    """The row's fingerprint as the runner makes it with this client's connection."""
    request = _booking(row)
    return _fingerprint(
        client.config.derived_key(FINGERPRINTS),
        "book",
        request.customer.personal_identifier,
        request.branch_id,
        request.service_id,
        _instant(request.start_time),
    )


def _other_slot(sandbox: SandboxServer, appointment: dict[str, Any]) -> dict[str, Any]:
    slots = sandbox.free_slots(appointment["branch"]["id"], appointment["service"]["id"], limit=30)
    return next(s for s in reversed(slots) if s["startTime"] != appointment["timeSlot"]["startTime"])


# -- (a) a failed reschedule releases its reservation with a book token ----------------------------


def test_a_failed_reschedule_releases_its_reservation_with_a_book_token(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    client = _no_wait_client(sandbox, tmp_path)
    flows = Flows(client, sleep=lambda _s: None)
    booked = [flows.book(_booking(row)).appointment_id for row in booking_rows(sandbox, 2)]
    stored = {a["appointmentId"]: a for a in sandbox.appointments(status="CONFIRMED")}
    targets = [_other_slot(sandbox, stored[i]) for i in booked]
    sandbox.configure(fail_rate=1.0, fault_endpoints=["reschedule"])  # every move: 500

    # A single call, as the reschedule operator makes it.
    single = RescheduleRequest.parse({"appointment_id": booked[0], "start_time": targets[0]["startTime"]})
    events = FlowEvents()
    with pytest.raises(QmaticServerError):
        flows.reschedule(single, events=events)
    assert events.step == "reschedule"
    assert events.possibly_orphaned == 0

    # A bulk row: the same flow.
    rows = [{"appointment_id": booked[1], "start_time": targets[1]["startTime"]}]
    result = BulkRunner(client, sleep=lambda _s: None).reschedule(rows)
    (outcome,) = result.outcomes
    assert outcome.status == FAILED
    assert outcome.retryable
    assert outcome.error == "reschedule: HTTP 500 internal_error"
    assert result.summary.possibly_orphaned_reservations == 0

    # Part B: release needs "book". Both reservations were released (204; a reschedule-scoped
    # token would have met 403 and left them held for 15 minutes).
    requests = sandbox.stats()["requests"]
    assert requests["release"] == {"204": 2}
    assert sandbox.appointments(status="RESERVED") == []
    assert {a["status"] for a in sandbox.appointments() if a["appointmentId"] not in booked} == {"RELEASED"}
    after = {a["appointmentId"]: a for a in sandbox.appointments(status="CONFIRMED")}
    for appointment_id in booked:  # neither moved
        assert after[appointment_id]["timeSlot"] == stored[appointment_id]["timeSlot"]


# -- (b) a cancel whose answer was lost is this run's cancel ---------------------------------------


def test_a_cancel_whose_answer_was_lost_is_counted_as_cancelled_by_this_run(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    client = make_client(sandbox, tmp_path)
    booked = BulkRunner(client).book(booking_rows(sandbox, 61))
    ids = [o.appointment_id for o in booked.outcomes]
    # A third of the cancels are carried out and then answered 500 or dropped: the client repeats
    # them (DELETE is safe to repeat) and meets 409, because the first one did cancel.
    sandbox.configure(commit_then_fail_rate=0.3, fault_endpoints=["cancel"])

    # A single call, as the cancel operator makes it, until one met a lost answer.
    flows = Flows(client)
    single = flows.cancel(ids[0])
    assert single.changed
    assert Flows(client).cancel(ids[0]).changed is False  # now it was cancelled before this call

    result = BulkRunner(client).cancel([{"appointment_id": i} for i in ids[1:]])

    s = result.summary
    faults = sandbox.stats()["faults"]
    lost = faults.get("commit_then_fail_500", 0) + faults.get("commit_then_fail_drop", 0)
    assert lost >= 5
    assert (s.succeeded, s.skipped_existing, s.failed) == (60, 0, 0)
    assert statuses(sandbox)["CANCELLED"] == 61
    # Every lost answer was repeated once and answered 409 (rich: the appointment stays, cancelled)
    # or 404 (public: deleted), plus the one repeated single call.
    answered = sandbox.stats()["requests"]["cancel"]
    assert answered.get("409", 0) + answered.get("404", 0) == lost + 1

    # A 409 that no read explains (a reservation is no appointment) stays the cancel's refusal.
    slot = sandbox.free_slots(limit=1)[0]
    reservation = client.reserve(
        {
            "branchId": slot["branchId"],
            "serviceId": slot["serviceId"],
            "timeSlot": {"startTime": slot["startTime"], "endTime": slot["endTime"]},
            "numberOfReservations": 1,
        }
    )
    refused = BulkRunner(client).cancel([{"appointment_id": reservation.appointment_id}])
    (outcome,) = refused.outcomes
    assert (outcome.status, outcome.error, outcome.retryable) == (
        FAILED,
        "cancel: HTTP 409 invalid_state",
        False,
    )


# -- (c) a slot filled by the row's own lost reserves: retryable -----------------------------------


def test_a_slot_full_of_its_own_lost_reserves_fails_retryably_and_a_later_retry_books(
    sandbox: SandboxServer, tmp_path: Path, journal_dir: Path
) -> None:
    sandbox.configure(slot_capacity=1)
    single_row, bulk_row = booking_rows(sandbox, 2)
    # Every reserve is stored, then answered 500: the next reserve finds the one place taken.
    sandbox.configure(commit_then_fail_rate=1.0, commit_then_fail_mode="500", fault_endpoints=["reserve"])
    client = _no_wait_client(sandbox, tmp_path)

    with pytest.raises(QmaticOwnHoldsError) as raised:
        Flows(client, sleep=lambda _s: None).book(_booking(single_row))
    assert raised.value.retryable  # the single operator lets Airflow retry it
    assert raised.value.code == "slot_unavailable"

    journal = journal_dir / "task.jsonl"
    first = BulkRunner(client, journal_path=journal, sleep=lambda _s: None).book([bulk_row])
    (outcome,) = first.outcomes
    assert outcome.status == FAILED
    assert outcome.retryable
    assert outcome.error == "reserve: HTTP 409 slot_unavailable"
    assert first.summary.possibly_orphaned_reservations == 1
    with pytest.raises(QmaticBulkRetryableError):
        first.check_policy()
    assert requests_to(sandbox, "reserve") == 4  # two per booking: the lost one, then the 409

    # Once the holds have expired, the task's retry books the row.
    sandbox.configure(commit_then_fail_rate=0.0)
    sandbox.advance_clock(HOLD_S + 1)
    retry = BulkRunner(client, attempt=2, journal_path=journal).book([bulk_row])
    assert [o.status for o in retry.outcomes] == [SUCCEEDED]
    assert statuses(sandbox).get("RESERVED", 0) == 0


def test_a_reserve_a_killed_attempt_never_saw_answered_counts_as_a_possible_hold(
    sandbox: SandboxServer, tmp_path: Path, journal_dir: Path
) -> None:
    """Killed while its reserve was out: Qmatic stored the hold, the journal has only "reserving".
    The retry's 409 on the full slot is then the row's own hold (retryable), not a refusal."""
    sandbox.configure(slot_capacity=1)
    [row] = booking_rows(sandbox, 1)
    client = _no_wait_client(sandbox, tmp_path)
    client.reserve(_booking(row).reservation_body(), scopes=frozenset({Scope.BOOK}))  # the stored hold
    journal = journal_dir / "task.jsonl"
    killed = FileJournal(journal)
    killed.open()
    killed.record_attempt(1, key=client.config.derived_key(FINGERPRINTS))
    killed.record(RESERVING, fingerprint=_fingerprint_of(client, row), row=1)
    killed.close()

    second = BulkRunner(client, attempt=2, journal_path=journal, sleep=lambda _s: None).book([row])
    (outcome,) = second.outcomes
    assert (outcome.status, outcome.error, outcome.retryable) == (
        FAILED,
        "reserve: HTTP 409 slot_unavailable",
        True,
    )

    sandbox.advance_clock(HOLD_S + 1)  # the hold expires; the next retry books the row
    third = BulkRunner(client, attempt=3, journal_path=journal).book([row])
    assert [o.status for o in third.outcomes] == [SUCCEEDED]
    assert requests_to(sandbox, "reserve") == 3  # the killed one, the refused one, the booking


# -- (d) one reserve budget per row, across task retries -------------------------------------------


def test_each_row_has_one_reserve_budget_across_task_retries(
    sandbox: SandboxServer, tmp_path: Path, journal_dir: Path
) -> None:
    rows = booking_rows(sandbox, 2)
    sandbox.configure(fail_rate=1.0, fault_endpoints=["reserve"])  # every reserve answered 500
    client = _no_wait_client(sandbox, tmp_path)
    journal = journal_dir / "task.jsonl"

    def attempt(number: int) -> Any:
        return BulkRunner(client, attempt=number, journal_path=journal, sleep=lambda _s: None).book(rows)

    first = attempt(1)  # reserves until one is left for a retry
    assert requests_to(sandbox, "reserve") == 2 * (RESERVE_BUDGET - 1)
    assert first.summary.possibly_orphaned_reservations == 2 * (RESERVE_BUDGET - 1)
    assert all(o.retryable for o in first.outcomes)

    second = attempt(2)  # the last reserve of each row; nothing is left for a third try
    assert requests_to(sandbox, "reserve") == 2 * RESERVE_BUDGET
    assert second.summary.possibly_orphaned_reservations == 2
    assert not any(o.retryable for o in second.outcomes)
    with pytest.raises(QmaticBulkError) as raised:
        second.check_policy()
    assert not isinstance(raised.value, QmaticBulkRetryableError)

    third = attempt(3)  # a cleared task: the journal says the budget is spent; nothing is sent
    assert requests_to(sandbox, "reserve") == 2 * RESERVE_BUDGET
    for outcome in third.outcomes:
        assert outcome.error is not None
        assert outcome.error.startswith("reserve: no reserve left for this booking")
        assert outcome.error.endswith("(reserve_budget_spent)")
        assert not outcome.retryable


# -- resume: only rows in flight are looked up -----------------------------------------------------


@pytest.mark.parametrize("journal_complete", [True, False], ids=["complete", "attempt-missing"])
def test_a_retry_looks_up_only_the_rows_that_were_in_flight(
    sandbox: SandboxServer, tmp_path: Path, journal_dir: Path, journal_complete: bool
) -> None:
    rows = booking_rows(sandbox, 6)
    client = make_client(sandbox, tmp_path)
    done = Flows(client).book(_booking(rows[0])).appointment_id
    path = journal_dir / "task.jsonl"
    # What attempt 1 left: row 1 done, row 2 in flight (its reserve sent when the task was
    # killed), rows 3-6 never started. Without the attempt's own line, the journal cannot prove
    # that no other host ran an attempt: then every row not done is looked up.
    journal = FileJournal(path)
    journal.open()
    if journal_complete:
        journal.record_attempt(1, key=client.config.derived_key(FINGERPRINTS))
    journal.record(DONE, fingerprint=_fingerprint_of(client, rows[0]), row=1, appointment_id=done)
    journal.record(RESERVING, fingerprint=_fingerprint_of(client, rows[1]), row=2)
    journal.close()

    retry = BulkRunner(client, attempt=2, journal_path=path).book(rows)

    assert [o.status for o in retry.outcomes] == [SKIPPED_EXISTING] + [SUCCEEDED] * 5
    assert requests_to(sandbox, "search") == (1 if journal_complete else 5)
    assert requests_to(sandbox, "reserve") == 6


# -- (e) a confirm that never left is not looked up ------------------------------------------------


class _LostBudget(RateLimiter):
    """A budget whose Redis is lost for the acquisitions numbered in ``lost`` (1 is the first)."""

    def __init__(self, lost: set[int]) -> None:
        super().__init__(60_000, burst=5)
        self.lost = lost
        self.calls = 0

    def acquire(self, n: float = 1.0) -> float:
        self.calls += 1
        if self.calls in self.lost:
            raise QmaticCoordinationError("Redis of connection 'r' lost during the request budget")
        return super().acquire(n)


@pytest.mark.parametrize("unclear_first", [False, True], ids=["never-sent", "sent-then-not"])
def test_a_confirm_never_sent_is_released_without_a_read_but_an_unclear_one_is_read(
    unclear_first: bool, sandbox: SandboxServer, tmp_path: Path
) -> None:
    """Redis lost at the confirm: no attempt of it left, so it cannot have taken effect; the flow
    releases the reservation at once instead of waiting on the lost Redis for a read. If an earlier
    attempt did leave (stored, its answer a 500), the read still settles it: booked, not released."""
    sandbox.configure(token_requests_per_second=0)
    if unclear_first:
        sandbox.configure(commit_then_fail_rate=1.0, fault_endpoints=["confirm"])
    config = make_config(sandbox, tmp_path / "tokens")
    # Acquisitions: the token, the reserve, then the confirm's two attempts (the first one sent
    # when unclear_first), then a read or the release.
    budget = _LostBudget({4} if unclear_first else {3, 4})
    client = QmaticClient(config, limiter=budget, max_attempts=2, sleep=lambda _s: None)
    flows = Flows(client, sleep=lambda _s: None)
    [row] = booking_rows(sandbox, 1)
    if unclear_first:
        assert flows.book(_booking(row)).appointment_id
        assert requests_to(sandbox, "get") == 1
        assert len(sandbox.appointments(status="CONFIRMED")) == 1
        assert requests_to(sandbox, "release") == 0
    else:
        with pytest.raises(QmaticCoordinationError):
            flows.book(_booking(row))
        assert requests_to(sandbox, "confirm") == 0
        assert requests_to(sandbox, "get") == 0
        assert sandbox.stats()["requests"]["release"] == {"204": 1}
        assert sandbox.appointments(status="CONFIRMED") == []
    assert sandbox.appointments(status="RESERVED") == []
