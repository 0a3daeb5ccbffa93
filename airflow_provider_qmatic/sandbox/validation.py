"""Request-body rules of Part A and Part B, checked by hand so every 400 names the failing field.

Hand-written rather than pydantic models because the message format is part of the contract
(``"<field>: <problem>"``, e.g. ``customer.email: must look like an email address``) and because
the checks run on every request of a bulk job: plain ``isinstance`` tests are the cheapest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

from airflow_provider_qmatic.sandbox.errors import bad_request
from airflow_provider_qmatic.sandbox.settings import TenantSettings

MAX_NAME = 255
MAX_ANSWER = 2048
_PERSONAL_ID = re.compile(r"[A-Za-z0-9]{10,48}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIMESTAMP = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"(?P<offset>[Zz]|[+-]\d{2}(?::?\d{2})?)?"
)


@dataclass(frozen=True)
class ReserveRequest:
    branch_id: str
    service_ids: tuple[str, ...]
    resource_id: str | None
    start: datetime
    end: datetime | None
    notes: str | None
    number: int


def json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or 400 naming ``body``."""
    if not body.strip():
        raise bad_request("body", "is empty; send a JSON object")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise bad_request("body", "is not valid JSON") from None
    if not isinstance(data, dict):
        raise bad_request("body", "must be a JSON object")
    return data


def parse_timestamp(field: str, value: Any) -> datetime:
    """An ISO-8601 date-time WITH a UTC offset; a naive one is refused, since its instant is unknown."""
    example = "e.g. 2026-12-01T09:00:00+01:00"
    if not isinstance(value, str):
        raise bad_request(field, f"must be an ISO-8601 date-time string, {example}")
    match = _TIMESTAMP.fullmatch(value.strip())
    if match is None:
        raise bad_request(field, f"is not an ISO-8601 date-time, {example}")
    offset_text = match.group("offset")
    if offset_text is None:
        raise bad_request(field, f"has no UTC offset; a time zone offset is required, {example}")
    year, month, day, hour, minute, second, fraction = match.groups()[:7]
    try:
        if offset_text in ("Z", "z"):
            tz = timezone.utc
        else:
            digits = offset_text[1:].replace(":", "")
            delta = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
            tz = timezone(-delta if offset_text[0] == "-" else delta)
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro, tzinfo=tz
        )
    except ValueError:
        raise bad_request(field, f"is not a valid date-time, {example}") from None


def parse_date(field: str, value: Any) -> date:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        raise bad_request(field, "must be a date YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise bad_request(field, "is not a valid calendar date (YYYY-MM-DD)") from None


def parse_reserve(data: dict[str, Any], *, combination: bool = False) -> ReserveRequest:
    """A reserve body: ``serviceId``, or (a combination's) ``serviceIds``, a list of two or more."""
    branch_id = _required_text("branchId", data.get("branchId"))
    if combination:
        raw = data.get("serviceIds")
        if not isinstance(raw, list) or len(raw) < 2:
            raise bad_request("serviceIds", "is required: a list of two or more service ids")
        service_ids = tuple(_required_text(f"serviceIds[{i}]", value) for i, value in enumerate(raw))
        if len(set(service_ids)) != len(service_ids):
            raise bad_request("serviceIds", "names a service twice")
    else:
        service_ids = (_required_text("serviceId", data.get("serviceId")),)
    # The public name is requestedResourceId; Part A's resourceId is still accepted.
    resource_id = _optional_text("requestedResourceId", data.get("requestedResourceId"))
    if resource_id is None:
        resource_id = _optional_text("resourceId", data.get("resourceId"))
    slot = data.get("timeSlot")
    if not isinstance(slot, dict):
        raise bad_request("timeSlot", "is required: an object with startTime (and endTime)")
    start = parse_timestamp("timeSlot.startTime", slot.get("startTime"))
    end = None
    if slot.get("endTime") is not None:
        end = parse_timestamp("timeSlot.endTime", slot.get("endTime"))
        if end <= start:
            raise bad_request("timeSlot.endTime", "must be after timeSlot.startTime")
    notes = _optional_text("notes", data.get("notes"))
    # Required by the page, 1 by default: an absent or null number books one place.
    number = data.get("numberOfReservations")
    if number is None:
        number = 1
    return ReserveRequest(
        branch_id, service_ids, resource_id, start, end, notes, _reservations("numberOfReservations", number)
    )


def parse_timeslot_filters(query: Mapping[str, str]) -> int:
    """The optional ``requestedResourceId`` (any text: the sandbox has no resources) and
    ``numberOfReservations`` (default 1) filters of a time-slot query; returns the number."""
    _optional_text("requestedResourceId", query.get("requestedResourceId"), MAX_NAME)
    raw = query.get("numberOfReservations")
    if raw is None or raw == "":
        return 1
    if not raw.isdigit():
        raise bad_request("numberOfReservations", "must be an integer of at least 1")
    return _reservations("numberOfReservations", int(raw))


def parse_service_ids(values: list[str]) -> list[str]:
    """The ``serviceId`` query values of a combination call: repeated, or one comma-separated
    value (both plausible readings of the page); at least one."""
    ids = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if not ids:
        raise bad_request("serviceId", "is required: one or more service ids (repeat the parameter)")
    for service_id in ids:
        _optional_text("serviceId", service_id, MAX_NAME)
    return ids


def _reservations(field: str, number: Any) -> int:
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise bad_request(field, "must be an integer of at least 1")
    return number


def parse_customer(value: Any, prefix: str = "customer") -> dict[str, Any]:
    """Part A's customer rules; returns the stored customer (known fields only).

    ``prefix`` is where the customer sits in the body (``customer`` in a confirm, nothing in an
    update), so every 400 names the field as the caller wrote it. ``phoneNumber`` may be text or
    an integer (the page types it integer, its examples are text); it is stored as text.
    """
    at = f"{prefix}." if prefix else ""
    if not isinstance(value, dict):
        raise bad_request(
            prefix or "body", "is required: an object with personalIdentifier, firstName, lastName, email"
        )
    customer: dict[str, Any] = {"personalIdentifier": _personal_identifier(f"{at}personalIdentifier", value)}
    for name in ("firstName", "lastName"):
        customer[name] = _required_text(f"{at}{name}", value.get(name), MAX_NAME)
    email = _required_text(f"{at}email", value.get("email"), MAX_NAME)
    if not _EMAIL.fullmatch(email):
        raise bad_request(f"{at}email", "must look like an email address (name@example.com)")
    customer["email"] = email
    phone = value.get("phoneNumber")
    if isinstance(phone, int) and not isinstance(phone, bool):
        phone = str(phone)
    elif phone is not None and not isinstance(phone, str):
        raise bad_request(f"{at}phoneNumber", "must be text, an integer or null")
    customer["phoneNumber"] = _optional_text(f"{at}phoneNumber", phone, MAX_NAME)
    birth = value.get("dateOfBirth")
    if birth is not None:
        parse_date(f"{at}dateOfBirth", birth)
    customer["dateOfBirth"] = birth
    return customer


def require_tenant_fields(
    tenant: TenantSettings,
    customer: dict[str, Any],
    questions: list[dict[str, str]] | None,
    prefix: str = "customer",
) -> None:
    """The fields this tenant's configuration makes required: 400 naming the first one missing
    (``customer.dateOfBirth``, ``informationQuestions[<questionId>]``). ``questions`` is None where
    the call carries no answers (an update of the customer)."""
    if tenant.require_date_of_birth and customer.get("dateOfBirth") is None:
        field = f"{prefix}.dateOfBirth" if prefix else "dateOfBirth"
        raise bad_request(field, "is required by this tenant's configuration (YYYY-MM-DD)")
    if questions is None:
        return
    answered = {q["questionId"] for q in questions if q["answer"].strip()}
    for question_id in tenant.required_questions:
        if question_id not in answered:
            raise bad_request(
                f"informationQuestions[{question_id}]",
                "an answer is required by this tenant's configuration: send "
                f'{{"questionId": "{question_id}", "answer": "..."}}',
            )


def parse_update_customer(data: dict[str, Any]) -> dict[str, Any]:
    """The body of an update: the customer's fields at the top level."""
    return parse_customer(data, prefix="")


def parse_confirm(data: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    customer = parse_customer(data.get("customer"))
    raw = data.get("informationQuestions")
    questions: list[dict[str, str]] = []
    if raw is not None:
        if not isinstance(raw, list):
            raise bad_request("informationQuestions", "must be a list of {questionId, answer}")
        for i, item in enumerate(raw):
            where = f"informationQuestions[{i}]"
            if not isinstance(item, dict):
                raise bad_request(where, "must be an object {questionId, answer}")
            question_id = _required_text(f"{where}.questionId", item.get("questionId"))
            answer = item.get("answer")
            if not isinstance(answer, str):
                raise bad_request(f"{where}.answer", "must be text")
            if len(answer) > MAX_ANSWER:
                raise bad_request(f"{where}.answer", f"is longer than {MAX_ANSWER} characters")
            questions.append({"questionId": question_id, "answer": answer})
    return customer, questions


def parse_search(data: dict[str, Any]) -> str:
    customer = data.get("customer")
    if not isinstance(customer, dict):
        raise bad_request("customer", "is required: an object with personalIdentifier")
    return _personal_identifier("customer.personalIdentifier", customer)


def parse_reschedule(data: dict[str, Any]) -> str:
    return _required_text("reservationId", data.get("reservationId"))


def _personal_identifier(field: str, customer: dict[str, Any]) -> str:
    value = customer.get("personalIdentifier")
    if value is None or value == "":
        raise bad_request(field, "is required")
    if not isinstance(value, str) or not _PERSONAL_ID.fullmatch(value):
        raise bad_request(field, "must be 10 to 48 characters of A-Z, a-z and 0-9")
    return value


def _required_text(field: str, value: Any, max_len: int | None = None) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise bad_request(field, "is required")
    if not isinstance(value, str):
        raise bad_request(field, "must be text")
    if max_len is not None and len(value) > max_len:
        raise bad_request(field, f"is longer than {max_len} characters")
    return value


def _optional_text(field: str, value: Any, max_len: int | None = None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise bad_request(field, "must be text or null")
    if max_len is not None and len(value) > max_len:
        raise bad_request(field, f"is longer than {max_len} characters")
    return value
