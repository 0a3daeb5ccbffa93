"""Part B's second edition in the sandbox: moved paths, reservation caps, tenant-required fields at
confirm, updating a customer. All over HTTP against running sandboxes; outcomes judged by the
introspection state."""

from __future__ import annotations

from typing import Any

import pytest
from sandbox_helpers import ACME, CUSTOMER, DEMO, SETTINGS, Api, error_of, reserve_body

from airflow_provider_qmatic.api import contract
from airflow_provider_qmatic.sandbox import SandboxServer

MOVED_RESERVE = "/external/v2/reservations"
MOVED_GET = "/api/appointments/{appointment_id}"


def stored(sandbox: SandboxServer, appointment_id: str) -> dict[str, Any]:
    return next(a for a in sandbox.appointments() if a["appointmentId"] == appointment_id)


# ------------------------------------------------------------------------------ moved paths
@pytest.fixture(scope="module")
def moved() -> Any:
    with SandboxServer(
        SETTINGS.with_changes({}), moved_paths={"reserve": MOVED_RESERVE, "get": MOVED_GET}
    ) as server:
        yield server


def test_a_moved_operation_answers_only_at_its_new_path(moved: SandboxServer) -> None:
    moved.reset()
    api = Api(moved)
    slot = moved.free_slots(limit=1)[0]
    old = api.post(contract.RESERVE.path, json=reserve_body(slot))
    assert error_of(old)[:2] == (404, "not_found")
    assert moved.appointments() == []  # nothing was reserved at the old path
    new = api.post(MOVED_RESERVE, json=reserve_body(slot))
    assert new.status_code == 201, new.text
    appointment_id = new.json()["appointmentId"]
    # get moved, cancel (same old path, another method) did not: the old GET is 404, not 405.
    assert error_of(api.get(contract.GET.path.format(appointment_id=appointment_id)))[:2] == (
        404,
        "not_found",
    )
    got = api.get(MOVED_GET.format(appointment_id=appointment_id))
    assert got.status_code == 200
    assert got.json()["appointmentId"] == appointment_id
    cancel = api.delete(contract.CANCEL.path.format(appointment_id=appointment_id))
    assert error_of(cancel)[:2] == (409, "invalid_state")  # still served: a reservation is not cancelled
    assert moved.path("reserve") == MOVED_RESERVE
    assert moved.seed()["paths"]["reserve"] == f"POST {MOVED_RESERVE}"


def test_moved_requests_are_counted_limited_and_faulted_as_their_operation(moved: SandboxServer) -> None:
    moved.reset()
    api = Api(moved)
    slot = moved.free_slots(limit=1)[0]
    api.post(MOVED_RESERVE, json=reserve_body(slot))
    api.post(contract.RESERVE.path, json=reserve_body(slot))
    endpoints = [r["endpoint"] for r in moved.recent_requests() if r["method"] == "POST"]
    assert endpoints[-2:] == ["reserve", "unknown"]
    moved.configure(unavailable_rate=1.0, fault_endpoints=["reserve"])
    assert api.post(MOVED_RESERVE, json=reserve_body(slot)).status_code == 503


def test_the_connection_carries_the_moved_paths_as_endpoints(moved: SandboxServer) -> None:
    import json

    (value,) = moved.connection_env().values()
    assert json.loads(value)["extra"]["endpoints"] == {"reserve": MOVED_RESERVE, "get": MOVED_GET}
    (bare,) = moved.connection_env(endpoints={}).values()
    assert "endpoints" not in json.loads(bare)["extra"]
    assert "endpoints=" in moved.conn_uri


@pytest.mark.parametrize(
    ("moved_paths", "message"),
    [
        ({"reserv": "/x"}, "unknown operation"),
        ({"get": "/external/v1/appointments"}, "placeholders"),
        ({"reserve": "https://example.com/reservations"}, "absolute path"),
        ({"reserve": "/external/v1/appointments/search"}, "would both answer"),
    ],
)
def test_moved_paths_are_checked_like_an_endpoints_extra(moved_paths: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=f"moved_paths.*{message}"):
        SandboxServer(moved_paths=moved_paths)


# ------------------------------------------------------------------------------ reservation cap
def test_a_reservation_above_the_services_cap_is_refused(api: Api, sandbox: SandboxServer) -> None:
    sandbox.configure(slot_capacity=10, max_reservations={"*": 2})
    first, second = sandbox.free_slots(limit=2)
    services = api.get(contract.SERVICES.path).json()
    assert {s["config"]["maxNumberOfReservations"] for s in services} == {2}
    status, code, message = error_of(api.post(contract.RESERVE.path, json=reserve_body(first, 3)))
    assert (status, code) == (409, "invalid_state")
    assert message.startswith("numberOfReservations")
    assert sandbox.appointments() == []
    assert api.reserve(first, number=2)["service"]["config"] == {"maxNumberOfReservations": 2}
    # A cap by service id wins over "*"; 0 means no cap.
    sandbox.configure(max_reservations={"*": 2, second["serviceId"]: 0})
    assert api.reserve(second, number=5)["numberOfReservations"] == 5


def test_the_cap_is_per_tenant(sandbox: SandboxServer) -> None:
    sandbox.configure(tenant_config={"acme": {"max_reservations": {"*": 1}}})
    first, second = sandbox.free_slots(limit=2)
    assert Api(sandbox).reserve(first, number=2)["numberOfReservations"] == 2
    refused = Api(sandbox, client=ACME).post(contract.RESERVE.path, json=reserve_body(second, 2))
    assert error_of(refused)[:2] == (409, "invalid_state")


# ------------------------------------------------------------------------------ tenant-required fields
def confirm(api: Api, appointment_id: str, body: dict[str, Any]) -> Any:
    return api.post(contract.CONFIRM.path.format(appointment_id=appointment_id), json=body)


def test_a_tenant_requiring_date_of_birth_refuses_a_confirm_without_it(
    api: Api, sandbox: SandboxServer, slot: dict[str, Any]
) -> None:
    sandbox.configure(require_date_of_birth=True)
    reserved = api.reserve(slot)
    without = {k: v for k, v in CUSTOMER.items() if k != "dateOfBirth"}
    status, code, message = error_of(confirm(api, reserved["appointmentId"], {"customer": without}))
    assert (status, code) == (400, "invalid_request")
    assert message.split(":")[0] == "customer.dateOfBirth"
    assert CUSTOMER["firstName"] not in message
    # The reservation is still held, for the client to release (or confirm with the field).
    assert stored(sandbox, reserved["appointmentId"])["status"] == "RESERVED"
    assert confirm(api, reserved["appointmentId"], {"customer": CUSTOMER}).status_code == 201


def test_required_information_questions(api: Api, sandbox: SandboxServer, slot: dict[str, Any]) -> None:
    sandbox.configure(required_questions=["q-consent", "q-reason"])
    appointment_id = api.reserve(slot)["appointmentId"]
    for answers, missing in [
        (None, "q-consent"),
        ([{"questionId": "q-consent", "answer": "yes"}], "q-reason"),
        (
            [{"questionId": "q-consent", "answer": "yes"}, {"questionId": "q-reason", "answer": "  "}],
            "q-reason",
        ),
    ]:
        body: dict[str, Any] = {"customer": CUSTOMER}
        if answers is not None:
            body["informationQuestions"] = answers
        status, code, message = error_of(confirm(api, appointment_id, body))
        assert (status, code) == (400, "invalid_request")
        assert message.split(":")[0] == f"informationQuestions[{missing}]"
        assert stored(sandbox, appointment_id)["status"] == "RESERVED"
    answers = [{"questionId": "q-reason", "answer": "renewal"}, {"questionId": "q-consent", "answer": "yes"}]
    response = confirm(api, appointment_id, {"customer": CUSTOMER, "informationQuestions": answers})
    assert response.status_code == 201, response.text
    assert stored(sandbox, appointment_id)["informationQuestions"] == answers


def test_required_fields_are_per_tenant(sandbox: SandboxServer) -> None:
    sandbox.configure(tenant_config={"acme": {"require_date_of_birth": True}})
    first, second = sandbox.free_slots(limit=2)
    without = {k: v for k, v in CUSTOMER.items() if k != "dateOfBirth"}
    Api(sandbox, client=DEMO).book(first, without)
    acme = Api(sandbox, client=ACME)
    refused = confirm(acme, acme.reserve(second)["appointmentId"], {"customer": without})
    assert error_of(refused)[:2] == (400, "invalid_request")


# ------------------------------------------------------------------------------ update customer
NEW_CUSTOMER: dict[str, Any] = {
    "personalIdentifier": "CUST000000002",
    "firstName": "Grace",
    "lastName": "Hopper",
    "email": "grace@example.com",
    "phoneNumber": 46700000000,
    "dateOfBirth": "1906-12-09",
}


def search(api: Api, personal_identifier: str) -> list[dict[str, Any]]:
    return list(
        api.post(contract.SEARCH.path, json={"customer": {"personalIdentifier": personal_identifier}}).json()
    )


def test_update_customer_replaces_the_booked_customer(
    api: Api, sandbox: SandboxServer, slot: dict[str, Any]
) -> None:
    booked = api.book(slot)
    url = contract.UPDATE_CUSTOMER.path.format(appointment_id=booked["appointmentId"])
    response = api.put(url, json=NEW_CUSTOMER)
    assert response.status_code == 204, response.text
    assert response.content == b""
    customer = stored(sandbox, booked["appointmentId"])["customer"]
    assert customer == {**NEW_CUSTOMER, "phoneNumber": "46700000000"}
    assert search(api, CUSTOMER["personalIdentifier"]) == []
    assert [a["appointmentId"] for a in search(api, NEW_CUSTOMER["personalIdentifier"])] == [
        booked["appointmentId"]
    ]
    # Repeating it is harmless (PUT), and the same identifier keeps one entry.
    assert api.put(url, json=NEW_CUSTOMER).status_code == 204
    assert len(search(api, NEW_CUSTOMER["personalIdentifier"])) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"personalIdentifier": "short"}, "personalIdentifier"),
        ({"email": "nope"}, "email"),
        ({"firstName": None}, "firstName"),
        ({"dateOfBirth": "09/12/1906"}, "dateOfBirth"),
    ],
)
def test_update_customer_validates_like_confirm(
    api: Api, slot: dict[str, Any], change: dict[str, Any], field: str
) -> None:
    booked = api.book(slot)
    url = contract.UPDATE_CUSTOMER.path.format(appointment_id=booked["appointmentId"])
    status, code, message = error_of(api.put(url, json={**NEW_CUSTOMER, **change}))
    assert (status, code) == (400, "invalid_request")
    assert message.split(":")[0] == field


def test_update_customer_refusals(api: Api, sandbox: SandboxServer) -> None:
    first, second = sandbox.free_slots(limit=2)
    unknown = contract.UPDATE_CUSTOMER.path.format(appointment_id="00000000-0000-4000-8000-000000000000")
    assert error_of(api.put(unknown, json=NEW_CUSTOMER))[:2] == (404, "not_found")
    reserved = api.reserve(first)
    url = contract.UPDATE_CUSTOMER.path.format(appointment_id=reserved["appointmentId"])
    assert error_of(api.put(url, json=NEW_CUSTOMER))[:2] == (409, "invalid_state")
    booked = api.book(second)
    other = Api(sandbox, client=ACME)
    foreign = contract.UPDATE_CUSTOMER.path.format(appointment_id=booked["appointmentId"])
    assert error_of(other.put(foreign, json=NEW_CUSTOMER))[:2] == (404, "not_found")
    sandbox.configure(require_date_of_birth=True)
    without = {k: v for k, v in NEW_CUSTOMER.items() if k != "dateOfBirth"}
    status, code, message = error_of(api.put(foreign, json=without))
    assert (status, code, message.split(":")[0]) == (400, "invalid_request", "dateOfBirth")
    assert stored(sandbox, booked["appointmentId"])["customer"]["firstName"] == CUSTOMER["firstName"]
