"""400 invalid_request naming the field (Part A's customer rules, timestamps) and 413 over 2 MB."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from sandbox_helpers import CUSTOMER, Api, error_of, reserve_body

from airflow_provider_qmatic.api import contract
from airflow_provider_qmatic.sandbox import SandboxServer


def customer_with(**changes: Any) -> dict[str, Any]:
    customer = dict(CUSTOMER)
    for key, value in changes.items():
        if value is ...:
            customer.pop(key)
        else:
            customer[key] = value
    return customer


CUSTOMER_CASES = [
    ("customer.personalIdentifier", customer_with(personalIdentifier=...)),
    ("customer.personalIdentifier", customer_with(personalIdentifier="SHORT12")),  # < 10
    ("customer.personalIdentifier", customer_with(personalIdentifier="A" * 49)),  # > 48
    ("customer.personalIdentifier", customer_with(personalIdentifier="ABC-123-4567")),  # not A-Za-z0-9
    ("customer.personalIdentifier", customer_with(personalIdentifier=1234567890)),
    ("customer.firstName", customer_with(firstName=...)),
    ("customer.firstName", customer_with(firstName="")),
    ("customer.firstName", customer_with(firstName="x" * 256)),
    ("customer.lastName", customer_with(lastName=...)),
    ("customer.lastName", customer_with(lastName="x" * 256)),
    ("customer.email", customer_with(email=...)),
    ("customer.email", customer_with(email="not-an-email")),
    ("customer.email", customer_with(email="a" * 250 + "@b.com")),
    ("customer.phoneNumber", customer_with(phoneNumber=4670.5)),  # text or an integer, nothing else
    ("customer.phoneNumber", customer_with(phoneNumber=True)),
    ("customer.phoneNumber", customer_with(phoneNumber="1" * 256)),
    ("customer.dateOfBirth", customer_with(dateOfBirth="10/12/1990")),
    ("customer.dateOfBirth", customer_with(dateOfBirth="1990-02-30")),
    ("customer", None),
]


@pytest.mark.parametrize(("field", "customer"), CUSTOMER_CASES)
def test_customer_rules(api: Api, slot: dict[str, Any], field: str, customer: dict[str, Any] | None) -> None:
    reserved = api.reserve(slot)
    body: dict[str, Any] = {} if customer is None else {"customer": customer}
    response = api.post(contract.CONFIRM.path.format(appointment_id=reserved["appointmentId"]), json=body)
    status, code, message = error_of(response)
    assert (status, code) == (400, "invalid_request")
    assert message.split(":")[0] == field, message


def test_customer_limits_that_are_allowed(api: Api, sandbox: SandboxServer) -> None:
    ok = [
        customer_with(personalIdentifier="A" * 10),
        customer_with(personalIdentifier="Ab1" * 16),
        customer_with(firstName="x" * 255, lastName="y" * 255, phoneNumber=..., dateOfBirth=...),
        customer_with(phoneNumber=None, dateOfBirth=None),
        customer_with(phoneNumber=46701234567),  # the page types it integer; stored as text
    ]
    for customer, slot in zip(ok, sandbox.free_slots(limit=len(ok)), strict=True):
        api.book(slot, customer)
    stored = sandbox.appointments()
    assert {a["status"] for a in stored} == {"CONFIRMED"}
    assert stored[-1]["customer"]["phoneNumber"] == "46701234567"


@pytest.mark.parametrize(
    ("questions", "field"),
    [
        ([{"questionId": "q1", "answer": "x" * 2049}], "informationQuestions[0].answer"),
        ([{"questionId": "q1", "answer": "ok"}, {"answer": "x"}], "informationQuestions[1].questionId"),
        ({"q1": "x"}, "informationQuestions"),
    ],
)
def test_information_questions(api: Api, slot: dict[str, Any], questions: Any, field: str) -> None:
    reserved = api.reserve(slot)
    body = {"customer": CUSTOMER, "informationQuestions": questions}
    response = api.post(contract.CONFIRM.path.format(appointment_id=reserved["appointmentId"]), json=body)
    status, code, message = error_of(response)
    assert (status, code) == (400, "invalid_request")
    assert message.split(":")[0] == field


@pytest.mark.parametrize("field", ["startTime", "endTime"])
def test_naive_timestamps_are_400_naming_the_field(api: Api, slot: dict[str, Any], field: str) -> None:
    body = reserve_body(slot)
    body["timeSlot"][field] = body["timeSlot"][field][:19]  # drop the offset
    status, code, message = error_of(api.post(contract.RESERVE.path, json=body))
    assert (status, code) == (400, "invalid_request")
    assert message.startswith(f"timeSlot.{field}:")
    assert "offset" in message


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.pop("branchId"), "branchId"),
        (lambda b: b.update(serviceId=12), "serviceId"),
        (lambda b: b.pop("timeSlot"), "timeSlot"),
        (lambda b: b["timeSlot"].pop("startTime"), "timeSlot.startTime"),
        (lambda b: b["timeSlot"].update(startTime="2026-12-01"), "timeSlot.startTime"),
        (lambda b: b["timeSlot"].update(startTime="tomorrow 9am"), "timeSlot.startTime"),
        (lambda b: b["timeSlot"].update(startTime="2026-13-01T09:00:00+01:00"), "timeSlot.startTime"),
        (lambda b: b["timeSlot"].update(endTime=b["timeSlot"]["startTime"]), "timeSlot.endTime"),
        (lambda b: b.update(numberOfReservations=0), "numberOfReservations"),
        (lambda b: b.update(numberOfReservations="2"), "numberOfReservations"),
        (lambda b: b.update(numberOfReservations=True), "numberOfReservations"),
        (lambda b: b.update(notes=["x"]), "notes"),
    ],
)
def test_reserve_body_rules(api: Api, slot: dict[str, Any], mutate: Any, field: str) -> None:
    body = reserve_body(slot)
    mutate(body)
    status, code, message = error_of(api.post(contract.RESERVE.path, json=body))
    assert (status, code) == (400, "invalid_request")
    assert message.split(":")[0] == field, message


@pytest.mark.parametrize(
    "body",
    [{}, {"customer": {}}, {"customer": {"personalIdentifier": "short"}}, {"customer": "CUST000000001"}],
)
def test_search_rules(api: Api, body: dict[str, Any]) -> None:
    status, code, message = error_of(api.post(contract.SEARCH.path, json=body))
    assert (status, code) == (400, "invalid_request")
    assert message.startswith("customer")


def test_body_over_2_mb_is_413(api: Api, slot: dict[str, Any], sandbox: SandboxServer) -> None:
    body = reserve_body(slot, notes="x" * (2 * 1024 * 1024))
    status, code, _ = error_of(api.post(contract.RESERVE.path, json=body))
    assert (status, code) == (413, "payload_too_large")
    assert sandbox.appointments() == []
    # Just under the limit is fine (the notes field has no length rule of its own).
    body = reserve_body(slot, notes="x" * (2 * 1024 * 1024 - 400))
    assert api.post(contract.RESERVE.path, json=body).status_code == 201


def test_chunked_body_over_2_mb_is_413(api: Api, slot: dict[str, Any]) -> None:
    # No Content-Length: the size is counted while reading.
    def chunks() -> Any:
        yield b'{"notes": "'
        for _ in range(33):
            yield b"x" * 65536
        yield b'"}'

    response = api.post(contract.RESERVE.path, data=chunks(), headers={"Content-Type": "application/json"})
    assert error_of(response)[:2] == (413, "payload_too_large")


def test_413_on_the_token_endpoint_too(sandbox: SandboxServer) -> None:
    response = requests.post(
        sandbox.base_url + contract.TOKEN.path, data=b"x" * (2 * 1024 * 1024 + 1), timeout=10
    )
    assert error_of(response)[:2] == (413, "payload_too_large")
