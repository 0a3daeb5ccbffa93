"""Reserve, release, confirm, get, search, reschedule, cancel, expiry: statuses and 404/409s.

Answers are checked in the public shape (the default) and, where a field only the rich shape
carries matters, in the rich one; outcomes are judged by the introspection state, as the public
shape carries no status.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
from sandbox_helpers import ACME, CUSTOMER, Api, error_of, reserve_body

from airflow_provider_qmatic.api import contract
from airflow_provider_qmatic.sandbox import SandboxServer
from airflow_provider_qmatic.sandbox.records import STATUSES

# Exactly the keys of the public examples (search and get on the reschedule page).
PUBLIC_KEYS = {"appointmentId", "timeSlot", "customer", "service", "branch", "numberOfReservations"}
RICH_KEYS = PUBLIC_KEYS | {"status", "notes", "expiresAt"}
PUBLIC_CUSTOMER_KEYS = {"firstName", "lastName", "phoneNumber", "email", "dateOfBirth"}
PUBLIC_BRANCH_KEYS = {"id", "name", "address", "location"}
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def status_of(sandbox: SandboxServer, appointment_id: str) -> str:
    found = [a for a in sandbox.appointments() if a["appointmentId"] == appointment_id]
    return str(found[0]["status"])


def free_places(sandbox: SandboxServer, slot: dict[str, Any]) -> int:
    for item in sandbox.free_slots(slot["branchId"], slot["serviceId"], limit=100_000):
        if item["startTime"] == slot["startTime"]:
            return int(item["available"])
    return 0


def test_reserve_answers_the_public_shape(api: Api, sandbox: SandboxServer, slot: dict[str, Any]) -> None:
    response = api.post(contract.RESERVE.path, json=reserve_body(slot, notes="first visit", resourceId=None))
    assert response.status_code == 201
    body = response.json()
    assert set(body) == PUBLIC_KEYS
    assert body["customer"] is None
    assert body["timeSlot"] == {"startTime": slot["startTime"], "endTime": slot["endTime"]}
    assert set(body["branch"]) == PUBLIC_BRANCH_KEYS
    assert body["branch"]["id"] == slot["branchId"]
    assert set(body["branch"]["address"]) == {"streetName", "zipCode", "city", "country"}
    assert set(body["branch"]["location"]) == {"longitude", "latitude"}
    assert body["service"] == {
        "id": slot["serviceId"],
        "name": body["service"]["name"],
        "config": {"maxNumberOfReservations": 0},
    }
    assert body["numberOfReservations"] == 1
    stored = sandbox.appointments()[0]
    assert (stored["status"], stored["notes"]) == ("RESERVED", "first visit")
    assert free_places(sandbox, slot) == 1


def test_reserve_in_the_rich_shape_carries_status_and_expiry(
    api: Api, sandbox: SandboxServer, slot: dict[str, Any]
) -> None:
    sandbox.configure(answer_shape="rich")
    before = datetime.now().astimezone()
    body = api.reserve(slot, notes="first visit")
    assert set(body) == RICH_KEYS
    assert body["status"] == "RESERVED"
    assert body["notes"] == "first visit"
    assert set(body["branch"]) == PUBLIC_BRANCH_KEYS | {"timeZone"}
    assert set(body["service"]) == {"id", "name", "config", "durationMinutes"}
    expires = datetime.fromisoformat(body["expiresAt"])
    assert timedelta(minutes=14) < expires - before < timedelta(minutes=16)


def test_number_of_reservations_defaults_to_one(
    api: Api, sandbox: SandboxServer, slot: dict[str, Any]
) -> None:
    body = reserve_body(slot)
    del body["numberOfReservations"]
    response = api.post(contract.RESERVE.path, json=body)
    assert response.status_code == 201, response.text
    assert response.json()["numberOfReservations"] == 1
    assert free_places(sandbox, slot) == 1


def test_requested_resource_id_and_the_old_resource_id_are_both_taken(
    api: Api, sandbox: SandboxServer
) -> None:
    first, second = sandbox.free_slots(limit=2)
    api.reserve(first, requestedResourceId="res-1")
    api.reserve(second, resourceId="res-2")
    assert sorted(a["resourceId"] for a in sandbox.appointments()) == ["res-1", "res-2"]


def test_reserve_with_the_same_instant_in_utc(api: Api, slot: dict[str, Any]) -> None:
    start = datetime.fromisoformat(slot["startTime"]).astimezone().isoformat()
    body = reserve_body(slot)
    body["timeSlot"] = {"startTime": start.replace("+00:00", "Z")}  # no endTime: it is optional
    response = api.post(contract.RESERVE.path, json=body)
    assert response.status_code == 201, response.text
    assert response.json()["timeSlot"]["startTime"] == slot["startTime"]


def test_number_of_reservations_counts_against_capacity(
    api: Api, sandbox: SandboxServer, slot: dict[str, Any]
) -> None:
    assert api.reserve(slot, number=2)["numberOfReservations"] == 2
    status, code, _ = error_of(api.post(contract.RESERVE.path, json=reserve_body(slot)))
    assert (status, code) == (409, "slot_unavailable")


def test_too_many_for_an_empty_slot(api: Api, slot: dict[str, Any]) -> None:
    assert error_of(api.post(contract.RESERVE.path, json=reserve_body(slot, 3)))[:2] == (
        409,
        "slot_unavailable",
    )


@pytest.mark.parametrize(
    "change",
    [
        {"startTime": "+7min"},  # not a slot start
        {"endTime": "+1min"},  # the end does not match the slot's end
        {"startTime": "weekend"},
    ],
)
def test_times_that_are_not_a_slot_are_409(api: Api, slot: dict[str, Any], change: dict[str, str]) -> None:
    body = reserve_body(slot)
    start = datetime.fromisoformat(slot["startTime"])
    end = datetime.fromisoformat(slot["endTime"])
    if change.get("startTime") == "+7min":
        body["timeSlot"] = {"startTime": (start + timedelta(minutes=7)).isoformat()}
    elif change.get("endTime"):
        body["timeSlot"]["endTime"] = (end + timedelta(minutes=1)).isoformat()
    else:
        saturday = start + timedelta(days=(5 - start.weekday()) % 7 or 7)
        body["timeSlot"] = {"startTime": saturday.isoformat()}
    assert error_of(api.post(contract.RESERVE.path, json=body))[:2] == (409, "slot_unavailable")


def test_past_slot_is_409(api: Api, sandbox: SandboxServer, slot: dict[str, Any]) -> None:
    sandbox.advance_clock(60 * 86400)  # beyond every slot; the token is renewed
    api = Api(sandbox)
    assert error_of(api.post(contract.RESERVE.path, json=reserve_body(slot)))[:2] == (409, "slot_unavailable")


def test_unknown_branch_or_service_in_the_body_is_404(api: Api, slot: dict[str, Any]) -> None:
    body = reserve_body(slot)
    body["serviceId"] = UNKNOWN_ID
    assert error_of(api.post(contract.RESERVE.path, json=body))[:2] == (404, "not_found")
    body["branchId"] = UNKNOWN_ID
    assert error_of(api.post(contract.RESERVE.path, json=body))[:2] == (404, "not_found")


def test_release_frees_the_slot_at_once(api: Api, sandbox: SandboxServer, slot: dict[str, Any]) -> None:
    appointment = api.reserve(slot, number=2)
    assert free_places(sandbox, slot) == 0
    url = contract.RELEASE.path.format(appointment_id=appointment["appointmentId"])
    response = api.delete(url)
    assert response.status_code == 204
    assert response.content == b""
    assert free_places(sandbox, slot) == 2
    assert status_of(sandbox, appointment["appointmentId"]) == "RELEASED"
    got = api.get(contract.GET.path.format(appointment_id=appointment["appointmentId"]))
    assert got.status_code == 200
    assert set(got.json()) == PUBLIC_KEYS
    assert error_of(api.delete(url))[:2] == (409, "invalid_state")
    confirm = api.post(
        contract.CONFIRM.path.format(appointment_id=appointment["appointmentId"]), json={"customer": CUSTOMER}
    )
    assert error_of(confirm)[:2] == (409, "reservation_expired")


def test_confirm_get_and_search(api: Api, sandbox: SandboxServer, slot: dict[str, Any]) -> None:
    reserved = api.reserve(slot)
    url = contract.CONFIRM.path.format(appointment_id=reserved["appointmentId"])
    questions = [{"questionId": "q1", "answer": "x" * 2048}]
    response = api.post(url, json={"customer": CUSTOMER, "informationQuestions": questions})
    assert response.status_code == 201
    confirmed = response.json()
    assert set(confirmed) == PUBLIC_KEYS
    assert confirmed["appointmentId"] == reserved["appointmentId"]
    # The public example echoes no personal identifier.
    assert confirmed["customer"] == {k: CUSTOMER[k] for k in PUBLIC_CUSTOMER_KEYS}
    assert status_of(sandbox, reserved["appointmentId"]) == "CONFIRMED"

    got = api.get(contract.GET.path.format(appointment_id=reserved["appointmentId"]))
    assert got.status_code == 200
    assert got.json() == confirmed

    again = api.post(url, json={"customer": CUSTOMER})
    assert error_of(again)[:2] == (409, "invalid_state")
    release = api.delete(contract.RELEASE.path.format(appointment_id=reserved["appointmentId"]))
    assert error_of(release)[:2] == (409, "invalid_state")

    search = {"customer": {"personalIdentifier": CUSTOMER["personalIdentifier"]}}
    found = api.post(contract.SEARCH.path, json=search, headers={"Accept-Language": "fr_FR"})
    assert found.status_code == 200
    assert found.json() == [confirmed]
    nobody = api.post(contract.SEARCH.path, json={"customer": {"personalIdentifier": "NOBODY00000"}})
    assert nobody.status_code == 200
    assert nobody.json() == []


def test_confirm_in_the_rich_shape(api: Api, sandbox: SandboxServer, slot: dict[str, Any]) -> None:
    sandbox.configure(answer_shape="rich")
    confirmed = api.book(slot)
    assert set(confirmed) == RICH_KEYS
    assert (confirmed["status"], confirmed["expiresAt"]) == ("CONFIRMED", None)
    assert confirmed["customer"] == {k: CUSTOMER[k] for k in PUBLIC_CUSTOMER_KEYS | {"personalIdentifier"}}
    got = api.get(contract.GET.path.format(appointment_id=confirmed["appointmentId"]))
    assert got.json() == confirmed


def test_search_leaves_out_cancelled_ones(api: Api, sandbox: SandboxServer) -> None:
    first, second = sandbox.free_slots(limit=2)
    a = api.book(first)
    b = api.book(second)
    assert api.delete(contract.GET.path.format(appointment_id=a["appointmentId"])).status_code == 204
    api.reserve(sandbox.free_slots(limit=1)[0])  # a reservation has no customer: not listed
    found = api.post(
        contract.SEARCH.path, json={"customer": {"personalIdentifier": CUSTOMER["personalIdentifier"]}}
    )
    assert [x["appointmentId"] for x in found.json()] == [b["appointmentId"]]
    assert status_of(sandbox, a["appointmentId"]) == "CANCELLED"


@pytest.mark.parametrize("answer", ["array", "object"])
def test_search_answer_array_or_one_object(api: Api, sandbox: SandboxServer, answer: str) -> None:
    sandbox.configure(search_answer=answer)
    search = {"customer": {"personalIdentifier": CUSTOMER["personalIdentifier"]}}
    assert api.post(contract.SEARCH.path, json=search).json() == []
    first, second = sandbox.free_slots(limit=2)
    one = api.book(first)
    found = api.post(contract.SEARCH.path, json=search).json()
    assert found == (one if answer == "object" else [one])
    two = api.book(second)
    assert api.post(contract.SEARCH.path, json=search).json() == [one, two]


def test_unknown_malformed_and_foreign_ids_are_404(
    sandbox: SandboxServer, api: Api, slot: dict[str, Any]
) -> None:
    for ident in (UNKNOWN_ID, "not-a-guid"):
        assert error_of(api.get(contract.GET.path.format(appointment_id=ident)))[:2] == (404, "not_found")
        assert error_of(api.delete(contract.GET.path.format(appointment_id=ident)))[:2] == (404, "not_found")
        assert error_of(api.delete(contract.RELEASE.path.format(appointment_id=ident)))[:2] == (
            404,
            "not_found",
        )
        confirm = api.post(contract.CONFIRM.path.format(appointment_id=ident), json={"customer": CUSTOMER})
        assert error_of(confirm)[:2] == (404, "not_found")
    mine = api.book(slot)
    other = Api(sandbox, client=ACME)
    assert error_of(other.get(contract.GET.path.format(appointment_id=mine["appointmentId"])))[:2] == (
        404,
        "not_found",
    )
    search = other.post(
        contract.SEARCH.path, json={"customer": {"personalIdentifier": CUSTOMER["personalIdentifier"]}}
    )
    assert search.json() == []


def test_unknown_endpoint_is_a_json_404(api: Api) -> None:
    assert error_of(api.get("/external/v1/nothing-here"))[:2] == (404, "not_found")


def test_reschedule_moves_the_appointment(api: Api, sandbox: SandboxServer) -> None:
    old, new = sandbox.free_slots(limit=2)
    appointment = api.book(old)
    reservation = api.reserve(new)
    url = contract.RESCHEDULE.path.format(appointment_id=appointment["appointmentId"])
    response = api.put(url, json={"reservationId": reservation["appointmentId"]})
    assert response.status_code == 200, response.text
    moved = response.json()
    assert moved["appointmentId"] == appointment["appointmentId"]
    assert status_of(sandbox, appointment["appointmentId"]) == "CONFIRMED"
    assert moved["timeSlot"] == {"startTime": new["startTime"], "endTime": new["endTime"]}
    assert moved["customer"] == appointment["customer"]
    assert free_places(sandbox, old) == 2
    assert free_places(sandbox, new) == 1
    # The reservation is used up and gone (Part B leaves its fate open; the sandbox uses no status
    # outside Part B): reading, reusing, confirming or releasing it is 404, never a second move.
    reservation_id = reservation["appointmentId"]
    assert reservation_id not in {a["appointmentId"] for a in sandbox.appointments()}
    assert {a["status"] for a in sandbox.appointments()} <= set(STATUSES)
    assert error_of(api.get(contract.GET.path.format(appointment_id=reservation_id)))[:2] == (
        404,
        "not_found",
    )
    again = api.put(url, json={"reservationId": reservation_id})
    assert error_of(again)[:2] == (404, "not_found")
    confirm = api.post(
        contract.CONFIRM.path.format(appointment_id=reservation_id), json={"customer": CUSTOMER}
    )
    assert error_of(confirm)[:2] == (404, "not_found")
    release = api.delete(contract.RELEASE.path.format(appointment_id=reservation_id))
    assert error_of(release)[:2] == (404, "not_found")
    assert free_places(sandbox, new) == 1


def test_reschedule_with_reschedule_scope_only(sandbox: SandboxServer) -> None:
    old, new = sandbox.free_slots(limit=2)
    appointment = Api(sandbox).book(old)
    api = Api(sandbox, scopes=["reschedule"])
    reservation = api.reserve(new)  # the reserve step accepts the reschedule scope
    url = contract.RESCHEDULE.path.format(appointment_id=appointment["appointmentId"])
    assert api.put(url, json={"reservationId": reservation["appointmentId"]}).status_code == 200


def test_reschedule_conflicts(api: Api, sandbox: SandboxServer) -> None:
    first, second, third = sandbox.free_slots(limit=3)
    reserved = api.reserve(first)
    reservation = api.reserve(second)
    url = contract.RESCHEDULE.path.format(appointment_id=reserved["appointmentId"])
    # Only a CONFIRMED appointment can be rescheduled.
    assert error_of(api.put(url, json={"reservationId": reservation["appointmentId"]}))[:2] == (
        409,
        "invalid_state",
    )
    api.confirm(reserved["appointmentId"])
    # An unknown reservation is 404; a missing field is 400.
    assert error_of(api.put(url, json={"reservationId": UNKNOWN_ID}))[:2] == (404, "not_found")
    status, code, message = error_of(api.put(url, json={}))
    assert (status, code) == (400, "invalid_request")
    assert message.startswith("reservationId")
    # A reservation for another service is invalid_state: the service never changes.
    other_service = next(
        s
        for s in sandbox.free_slots(limit=10_000)
        if s["serviceId"] != first["serviceId"] and s["branchId"] == first["branchId"]
    )
    foreign = api.reserve(other_service)
    assert error_of(api.put(url, json={"reservationId": foreign["appointmentId"]}))[:2] == (
        409,
        "invalid_state",
    )
    # Using the appointment itself as the reservation: not a live reservation.
    assert error_of(api.put(url, json={"reservationId": reserved["appointmentId"]}))[:2] == (
        409,
        "reservation_expired",
    )
    # An expired reservation.
    late = api.reserve(third)
    sandbox.advance_clock(15 * 60 + 1)
    api = Api(sandbox)
    assert error_of(api.put(url, json={"reservationId": late["appointmentId"]}))[:2] == (
        409,
        "reservation_expired",
    )


def test_cancel(api: Api, sandbox: SandboxServer, slot: dict[str, Any]) -> None:
    reserved = api.reserve(slot)
    url = contract.GET.path.format(appointment_id=reserved["appointmentId"])
    assert error_of(api.delete(url))[:2] == (409, "invalid_state")  # a reservation is released, not cancelled
    api.confirm(reserved["appointmentId"])
    response = api.delete(url)
    assert response.status_code == 204
    assert response.content == b""
    assert free_places(sandbox, slot) == 2
    # Cancel deletes: a later get, cancel, reschedule or update is 404 ...
    assert error_of(api.get(url))[:2] == (404, "not_found")
    assert error_of(api.delete(url))[:2] == (404, "not_found")
    reschedule = api.put(
        contract.RESCHEDULE.path.format(appointment_id=reserved["appointmentId"]),
        json={"reservationId": api.reserve(slot)["appointmentId"]},
    )
    assert error_of(reschedule)[:2] == (404, "not_found")
    update = api.put(
        contract.UPDATE_CUSTOMER.path.format(appointment_id=reserved["appointmentId"]), json=CUSTOMER
    )
    assert error_of(update)[:2] == (404, "not_found")
    # ... while the introspection state still knows it was cancelled.
    stored = next(a for a in sandbox.appointments() if a["appointmentId"] == reserved["appointmentId"])
    assert (stored["status"], stored["deleted"]) == ("CANCELLED", True)
    assert sandbox.stats()["appointments"]["CANCELLED"] == 1


def test_finalized_refuses_release_cancel_reschedule_and_update(api: Api, sandbox: SandboxServer) -> None:
    first, second = sandbox.free_slots(limit=2)
    booked = api.book(first)
    appointment_id = booked["appointmentId"]
    assert sandbox.finalize(appointment_id)["status"] == "FINALIZED"
    assert status_of(sandbox, appointment_id) == "FINALIZED"
    release = api.delete(contract.RELEASE.path.format(appointment_id=appointment_id))
    status, code, message = error_of(release)
    assert (status, code) == (409, "invalid_state")
    assert "FINALIZED" in message
    assert error_of(api.delete(contract.CANCEL.path.format(appointment_id=appointment_id)))[:2] == (
        409,
        "invalid_state",
    )
    reschedule = api.put(
        contract.RESCHEDULE.path.format(appointment_id=appointment_id),
        json={"reservationId": api.reserve(second)["appointmentId"]},
    )
    assert error_of(reschedule)[:2] == (409, "invalid_state")
    update = api.put(contract.UPDATE_CUSTOMER.path.format(appointment_id=appointment_id), json=CUSTOMER)
    assert error_of(update)[:2] == (409, "invalid_state")
    # Still readable and found (the visit happened); only CONFIRMED can be finalized.
    assert api.get(contract.GET.path.format(appointment_id=appointment_id)).status_code == 200
    with pytest.raises(requests.HTTPError, match="409"):
        sandbox.finalize(appointment_id)
    with pytest.raises(requests.HTTPError, match="404"):
        sandbox.finalize(UNKNOWN_ID)


def test_a_reservation_left_alone_expires_and_frees_its_slot(
    api: Api, sandbox: SandboxServer, slot: dict[str, Any]
) -> None:
    reserved = api.reserve(slot, number=2)
    assert free_places(sandbox, slot) == 0
    sandbox.advance_clock(15 * 60 - 5)
    assert status_of(sandbox, reserved["appointmentId"]) == "RESERVED"
    sandbox.advance_clock(6)
    assert free_places(sandbox, slot) == 2
    assert status_of(sandbox, reserved["appointmentId"]) == "EXPIRED"
    sandbox.configure(answer_shape="rich")
    got = api.get(contract.GET.path.format(appointment_id=reserved["appointmentId"])).json()
    assert got["status"] == "EXPIRED"
    confirm = api.post(
        contract.CONFIRM.path.format(appointment_id=reserved["appointmentId"]), json={"customer": CUSTOMER}
    )
    assert error_of(confirm)[:2] == (409, "reservation_expired")
    release = api.delete(contract.RELEASE.path.format(appointment_id=reserved["appointmentId"]))
    assert error_of(release)[:2] == (409, "reservation_expired")


def test_a_short_hold_expires_in_real_time(sandbox: SandboxServer, api: Api, slot: dict[str, Any]) -> None:
    import time

    sandbox.configure(reservation_hold=0.3)
    reserved = api.reserve(slot)
    time.sleep(0.4)
    assert api.get(contract.GET.path.format(appointment_id=reserved["appointmentId"])).status_code == 200
    assert status_of(sandbox, reserved["appointmentId"]) == "EXPIRED"
    assert free_places(sandbox, slot) == 2


def test_json_errors_everywhere(api: Api, slot: dict[str, Any]) -> None:
    response = api.post(
        contract.RESERVE.path, data=b"{not json", headers={"Content-Type": "application/json"}
    )
    status, code, message = error_of(response)
    assert (status, code) == (400, "invalid_request")
    assert message.startswith("body")
    response = api.post(contract.RESERVE.path, json=[1, 2])
    assert error_of(response)[:2] == (400, "invalid_request")
    assert isinstance(requests.Response, type)
