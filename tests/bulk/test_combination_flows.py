"""Booking and moving appointments of several services (Qmatic's service combinations) through
the flows and the bulk runner, against one sandbox with combinations on at Stockholm City
(passport application + document pick-up): the same guarantees as a single service."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.api.models import BookingRequest, RescheduleRequest
from airflow_provider_qmatic.bulk.runner import SKIPPED_EXISTING, SUCCEEDED, BulkRunner
from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.exceptions import QmaticServerError, QmaticValidationError
from airflow_provider_qmatic.flows import Flows
from airflow_provider_qmatic.sandbox import SandboxServer, SandboxSettings

from .conftest import customer_id, make_client

STOCKHOLM = "e3e70682-c209-4cac-a29f-6fbed82c07cd"
PASSPORT = "c8a70639-eb11-47b3-a7a9-c3787c65c1e5"
PICK_UP = "e87a1613-e443-4f78-9558-867f5ba91faf"
LICENCE = "7a024204-f7c1-4d87-8da5-e709d4713d60"
PAIR = (PASSPORT, PICK_UP)
SETTINGS = SandboxSettings(
    requests_per_minute=0,
    token_requests_per_second=0,
    service_combinations=True,
    combination_branches={"Stockholm City": ("Passport application", "Document pick-up")},
)


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(SETTINGS) as started:
        yield started


@pytest.fixture
def sandbox(server: SandboxServer) -> SandboxServer:
    server.reset()
    return server


@pytest.fixture
def client(sandbox: SandboxServer, tmp_path: Path) -> QmaticClient:
    return make_client(sandbox, tmp_path, sleep=lambda _s: None)


def _slots(client: QmaticClient, n: int) -> list[Any]:
    from datetime import date, timedelta

    first = date.today() + timedelta(days=1)
    listed = client.find_combination_timeslots(STOCKHOLM, PAIR, first, first + timedelta(days=7))
    apart: list[Any] = []  # windows that share no service's slot (each holds a place in all it covers)
    for slot in listed:
        if not apart or slot.start_time >= apart[-1].end_time + timedelta(minutes=15):
            apart.append(slot)
    return apart[:n]


def _row(slot: Any, services: str = f"{PASSPORT};{PICK_UP}") -> dict[str, Any]:
    pid = customer_id("C")
    return {
        "branch_id": STOCKHOLM,
        "service_ids": services,
        "start_time": slot.start_time.isoformat(),
        "personal_identifier": pid,
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": f"{pid.lower()}@example.org",
    }


def _request(slot: Any, services: str = f"{PASSPORT};{PICK_UP}") -> BookingRequest:
    row = _row(slot, services)
    fields = ("personal_identifier", "first_name", "last_name", "email")
    nested = {k: v for k, v in row.items() if k not in fields}
    return BookingRequest.parse({**nested, "customer": {k: row[k] for k in fields}})


def _endpoints(sandbox: SandboxServer) -> list[str]:
    return [r["endpoint"] for r in sandbox.recent_requests(limit=1000)]


def test_a_combination_is_booked_once_and_found_again(sandbox: SandboxServer, client: QmaticClient) -> None:
    (slot,) = _slots(client, 1)
    request = _request(slot)
    flows = Flows(client)

    result = flows.book(request)  # no end_time: the combination's listed slot gives it

    (stored,) = sandbox.appointments("CONFIRMED")
    assert stored["appointmentId"] == result.appointment_id
    assert [s["id"] for s in stored["services"]] == list(PAIR)
    assert stored["timeSlot"]["endTime"] == slot.end_time.isoformat()
    assert stored["numberOfReservations"] == 2  # one person, the sum over two services
    sent = _endpoints(sandbox)
    assert {"combination_reserve", "combination_confirm", "service_combinations"} <= set(sent)
    assert "reserve" not in sent
    assert "confirm" not in sent
    # A retry finds it by the combination search: nobody booked twice.
    again = flows.book(request, check_existing=True)
    assert (again.changed, again.appointment_id) == (False, result.appointment_id)
    assert "combination_search" in _endpoints(sandbox)
    assert len(sandbox.appointments("CONFIRMED")) == 1


@pytest.mark.parametrize("services", [f"{PASSPORT};{LICENCE}", "off"])
def test_services_not_combined_at_the_branch_fail_before_any_reserve(
    sandbox: SandboxServer, client: QmaticClient, services: str
) -> None:
    (slot,) = _slots(client, 1)
    if services == "off":
        sandbox.configure(service_combinations=False)
        services = f"{PASSPORT};{PICK_UP}"
    with pytest.raises(QmaticValidationError) as caught:
        Flows(client).book(_request(slot, services))
    assert caught.value.field == "service_ids"
    for service_id in services.split(";"):
        assert service_id in str(caught.value)
    assert STOCKHOLM in str(caught.value)
    sent = _endpoints(sandbox)
    assert "service_combinations" in sent
    assert not {"reserve", "combination_reserve"} & set(sent)
    assert sandbox.appointments() == []


def test_a_lost_confirm_answer_is_resolved_by_reading_the_combination(
    sandbox: SandboxServer, client: QmaticClient
) -> None:
    (slot,) = _slots(client, 1)
    sandbox.configure(
        commit_then_fail_rate=1.0, commit_then_fail_mode="drop", fault_endpoints=["combination_confirm"]
    )
    result = Flows(client, sleep=lambda _s: None).book(_request(slot))
    (stored,) = sandbox.appointments("CONFIRMED")
    assert stored["appointmentId"] == result.appointment_id
    assert sandbox.appointments("RESERVED") == []
    assert "combination_get" in _endpoints(sandbox)
    assert sum(1 for e in _endpoints(sandbox) if e == "combination_reserve") == 1


def test_a_failed_confirm_releases_the_combination_reservation(
    sandbox: SandboxServer, client: QmaticClient
) -> None:
    (slot,) = _slots(client, 1)
    sandbox.configure(fail_rate=1.0, fault_endpoints=["combination_confirm"])
    with pytest.raises(QmaticServerError):
        Flows(client, sleep=lambda _s: None).book(_request(slot))
    assert sandbox.appointments("RESERVED") == []
    assert sandbox.appointments("CONFIRMED") == []
    assert [a["status"] for a in sandbox.appointments()] == ["RELEASED"]


def test_a_combination_is_moved_and_a_single_service_still_books(
    sandbox: SandboxServer, client: QmaticClient
) -> None:
    first, second = _slots(client, 2)
    flows = Flows(client)
    booked = flows.book(_request(first)).appointment_id
    move = RescheduleRequest.parse(
        {"appointment_id": booked, "start_time": second.start_time.isoformat(), "service_ids": list(PAIR)}
    )
    moved = flows.reschedule(move)
    assert moved.changed
    (stored,) = sandbox.appointments("CONFIRMED")
    assert stored["timeSlot"]["startTime"] == second.start_time.isoformat()
    assert stored["timeSlot"]["endTime"] == second.end_time.isoformat()
    assert "combination_reschedule" in _endpoints(sandbox)
    assert flows.reschedule(move).changed is False
    # One service on this combinations tenant: the single-service calls, unchanged.
    single = _request(first, PASSPORT)
    assert not single.combined
    flows.book(single)
    assert len(sandbox.appointments("CONFIRMED")) == 2
    assert "reserve" in _endpoints(sandbox)


def test_bulk_rows_of_several_services_are_booked_once_across_a_retry(
    sandbox: SandboxServer, client: QmaticClient, tmp_path: Path
) -> None:
    rows = [_row(slot) for slot in _slots(client, 3)]
    journal = tmp_path / "journal" / "book.jsonl"
    journal.parent.mkdir(mode=0o700)
    # The first attempt loses every confirm's answer; the retry resumes from the journal.
    sandbox.configure(
        commit_then_fail_rate=1.0, commit_then_fail_mode="500", fault_endpoints=["combination_confirm"]
    )
    first = BulkRunner(client, sleep=lambda _s: None, journal_path=journal).book(rows)
    sandbox.configure(commit_then_fail_rate=0.0)
    second = BulkRunner(client, sleep=lambda _s: None, journal_path=journal, attempt=2).book(rows)
    third = BulkRunner(client, sleep=lambda _s: None, attempt=3).book(rows)  # no journal: every row looked up

    confirmed = sandbox.appointments("CONFIRMED")
    assert sorted(a["customer"]["personalIdentifier"] for a in confirmed) == sorted(
        r["personal_identifier"] for r in rows
    )
    assert sandbox.appointments("RESERVED") == []
    # The lost answers were resolved by reading in the first attempt; the retry found them done.
    assert {o.status for o in first.outcomes} == {SUCCEEDED}
    assert all(o.status != "failed" for o in second.outcomes)
    assert {o.status for o in third.outcomes} == {SKIPPED_EXISTING}
    assert sum(1 for e in _endpoints(sandbox) if e == "combination_reserve") == 3


def test_a_bad_service_ids_cell_fails_its_row_before_any_request(
    sandbox: SandboxServer, client: QmaticClient
) -> None:
    (slot,) = _slots(client, 1)
    before = len(sandbox.recent_requests(limit=1000))
    result = BulkRunner(client, sleep=lambda _s: None).book([_row(slot, f"{PASSPORT};{PASSPORT}")])
    (outcome,) = result.outcomes
    assert outcome.status == "invalid"
    assert "service_ids" in str(outcome.error)
    assert len(sandbox.recent_requests(limit=1000)) == before


def test_a_dry_run_plans_combination_rows_and_refuses_an_uncombined_one(
    sandbox: SandboxServer, client: QmaticClient
) -> None:
    first, second = _slots(client, 2)
    rows = [_row(first), _row(second, f"{PASSPORT};{LICENCE}")]
    result = BulkRunner(client, sleep=lambda _s: None, dry_run=True).book(rows)
    planned, refused = result.outcomes
    assert planned.status == "planned"
    assert refused.status == "failed"
    assert "service_ids" in str(refused.error)
    assert LICENCE in str(refused.error)
    assert sandbox.appointments() == []
    assert not {"combination_reserve", "reserve"} & set(_endpoints(sandbox))
