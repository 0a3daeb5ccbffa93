"""Reserve, release, confirm, get, search, reschedule, cancel, expiry: statuses and 404/409s."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import requests
from sandbox_helpers import ACME, CUSTOMER, Api, error_of, reserve_body

from airflow_provider_qmatic import contract
from airflow_provider_qmatic.models import AppointmentStatus
from airflow_provider_qmatic.sandbox import SandboxServer

APPOINTMENT_KEYS = {
    "appointmentId",
    "status",
    "timeSlot",
    "branch",
    "service",
    "customer",
    "numberOfReservations",
    "notes",
    "expiresAt",
}
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def status_of(sandbox: SandboxServer, appointment_id: str) -> str:
    found = [a for a in sandbox.appointments() if a["appointmentId"] == appointment_id]
    return str(found[0]["status"])


def free_places(sandbox: SandboxServer, slot: dict[str, Any]) -> int:
    for item in sandbox.free_slots(slot["branchId"], slot["serviceId"], limit=100_000):
        if item["startTime"] == slot["startTime"]:
            return int(item["available"])
    return 0


def test_reserve_returns_a_reserved_appointment(
    api: Api, sandbox: SandboxServer, slot: dict[str, Any]
) -> None:
    before = datetime.now().astimezone()
    response = api.post(contract.RESERVE.path, json=reserve_body(slot, notes="first visit", resourceId=None))
    assert response.status_code == 201
    body = response.json()
    assert set(body) == APPOINTMENT_KEYS
    assert body["status"] == "RESERVED"
    assert body["customer"] is None
    assert body["notes"] == "first visit"
    assert body["timeSlot"] == {"startTime": slot["startTime"], "endTime": slot["endTime"]}
    assert body["branch"]["id"] == slot["branchId"]
    assert body["service"]["id"] == slot["serviceId"]
    assert set(body["branch"]) == {"id", "name"}
    assert set(body["service"]) == {"id", "name"}
    expires = datetime.fromisoformat(body["expiresAt"])
    assert timedelta(minutes=14) < expires - before < timedelta(minutes=16)
    assert free_places(sandbox, slot) == 1


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
    assert error_of(api.post(contract.RESERVE.path, json=reserve_body(slot, 3)))[:2] == (409, "slot_unavailable")


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
    got = api.get(contract.GET.path.format(appointment_id=appointment["appointmentId"])).json()
    assert got["status"] == "RELEASED"
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
    assert set(confirmed) == APPOINTMENT_KEYS
    assert confirmed["status"] == "CONFIRMED"
    assert confirmed["expiresAt"] is None
    assert confirmed["appointmentId"] == reserved["appointmentId"]
    assert confirmed["customer"]["personalIdentifier"] == CUSTOMER["personalIdentifier"]
    assert confirmed["customer"]["email"] == CUSTOMER["email"]

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


def test_search_lists_cancelled_ones_too(api: Api, sandbox: SandboxServer) -> None:
    first, second = sandbox.free_slots(limit=2)
    a = api.book(first)
    b = api.book(second)
    assert api.delete(contract.GET.path.format(appointment_id=a["appointmentId"])).status_code == 204
    api.reserve(sandbox.free_slots(limit=1)[0])  # a reservation has no customer: not listed
    found = api.post(contract.SEARCH.path, json={"customer": {"personalIdentifier": CUSTOMER["personalIdentifier"]}})
    by_id = {x["appointmentId"]: x["status"] for x in found.json()}
    assert by_id == {a["appointmentId"]: "CANCELLED", b["appointmentId"]: "CONFIRMED"}


def test_unknown_malformed_and_foreign_ids_are_404(
    sandbox: SandboxServer, api: Api, slot: dict[str, Any]
) -> None:
    for ident in (UNKNOWN_ID, "not-a-guid"):
        assert error_of(api.get(contract.GET.path.format(appointment_id=ident)))[:2] == (404, "not_found")
        assert error_of(api.delete(contract.GET.path.format(appointment_id=ident)))[:2] == (404, "not_found")
        assert error_of(api.delete(contract.RELEASE.path.format(appointment_id=ident)))[:2] == (404, "not_found")
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
    assert moved["status"] == "CONFIRMED"
    assert moved["timeSlot"] == {"startTime": new["startTime"], "endTime": new["endTime"]}
    assert moved["customer"] == appointment["customer"]
    assert free_places(sandbox, old) == 2
    assert free_places(sandbox, new) == 1
    # The reservation is used up and gone (Part B leaves its fate open; the sandbox uses no status
    # outside Part B): reading, reusing, confirming or releasing it is 404, never a second move.
    reservation_id = reservation["appointmentId"]
    assert reservation_id not in {a["appointmentId"] for a in sandbox.appointments()}
    assert {a["status"] for a in sandbox.appointments()} <= {s.value for s in AppointmentStatus}
    assert error_of(api.get(contract.GET.path.format(appointment_id=reservation_id)))[:2] == (404, "not_found")
    again = api.put(url, json={"reservationId": reservation_id})
    assert error_of(again)[:2] == (404, "not_found")
    confirm = api.post(contract.CONFIRM.path.format(appointment_id=reservation_id), json={"customer": CUSTOMER})
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
    assert api.get(url).json()["status"] == "CANCELLED"
    assert error_of(api.delete(url))[:2] == (409, "invalid_state")
    reschedule = api.put(
        contract.RESCHEDULE.path.format(appointment_id=reserved["appointmentId"]),
        json={"reservationId": api.reserve(slot)["appointmentId"]},
    )
    assert error_of(reschedule)[:2] == (409, "invalid_state")


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
    assert (
        api.get(contract.GET.path.format(appointment_id=reserved["appointmentId"])).json()["status"]
        == "EXPIRED"
    )
    assert free_places(sandbox, slot) == 2


def test_json_errors_everywhere(api: Api, slot: dict[str, Any]) -> None:
    response = api.post(contract.RESERVE.path, data=b"{not json", headers={"Content-Type": "application/json"})
    status, code, message = error_of(response)
    assert (status, code) == (400, "invalid_request")
    assert message.startswith("body")
    response = api.post(contract.RESERVE.path, json=[1, 2])
    assert error_of(response)[:2] == (400, "invalid_request")
    assert isinstance(requests.Response, type)
