"""Request and response models: every field rule, its boundaries, the wire shapes and the messages.

Rules are tested through the public doors (``parse``, ``with_end``, ``to_wire``...), as the operators
and the bulk runner use them. Personal data in the fixtures is distinctive so a test can prove that
no message ever quotes it.
"""

from __future__ import annotations

import json
import logging
import pickle
import subprocess
import sys
import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pendulum
import pytest
from pydantic import ValidationError

from airflow_provider_qmatic.api import models
from airflow_provider_qmatic.api.models import (
    ANSWER_MAX,
    EXAMPLE_GUID,
    NAME_MAX,
    NOTES_MAX,
    Appointment,
    AppointmentStatus,
    BookingRequest,
    Branch,
    CancelRequest,
    Customer,
    CustomerUpdate,
    InformationAnswer,
    RescheduleRequest,
    Service,
    ServiceGroup,
    Slot,
    TimeSlot,
    format_wire_datetime,
    resolve_timezone,
    to_qmatic_validation_error,
)
from airflow_provider_qmatic.exceptions import QmaticError, QmaticValidationError

BRANCH = "11111111-2222-4333-8444-555555555555"
SERVICE = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
RESOURCE = "99999999-8888-4777-8666-555555555555"
APPOINTMENT = "0f0f0f0f-1e1e-4d2d-8c3c-4b4b4b4b4b4b"
RESERVATION = "12345678-90ab-4cde-8f01-234567890abc"

# Distinctive personal data: none of it may ever appear in an error message.
PID = "Zq7PersonalId0042"
FIRST = "Ingridunique"
LAST = "Bergqvistsson"
EMAIL = "ingrid.unique@example.org"
PHONE = "+46 70 123 45 67"
DOB = "1984-02-29"

FULLWIDTH_DIGITS = "".join(chr(0xFF10 + d) for d in (1, 2, 3, 4, 5, 6, 7, 8, 9, 0))  # digits, not ASCII


def customer(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "personal_identifier": PID,
        "first_name": FIRST,
        "last_name": LAST,
        "email": EMAIL,
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not _DROP}


def booking(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "branch_id": BRANCH,
        "service_id": SERVICE,
        "start_time": "2026-12-01T09:00:00+01:00",
        "end_time": "2026-12-01T09:30:00+01:00",
        "customer": customer(),
    }
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not _DROP}


_DROP = object()


def customer_error(**overrides: Any) -> QmaticValidationError:
    with pytest.raises(QmaticValidationError) as info:
        Customer.parse(customer(**overrides))
    return info.value


def booking_error(data: dict[str, Any], **kwargs: Any) -> QmaticValidationError:
    with pytest.raises(QmaticValidationError) as info:
        BookingRequest.parse(data, **kwargs)
    return info.value


# --------------------------------------------------------------------------------------------------
# Times
# --------------------------------------------------------------------------------------------------


def read_time(value: Any, timezone: Any = None) -> datetime:
    """A request time read as every request model reads it: a reschedule's start_time."""
    request = RescheduleRequest.parse({"appointment_id": APPOINTMENT, "start_time": value}, timezone=timezone)
    return request.start_time


@pytest.mark.parametrize(
    ("value", "zone", "expected"),
    [
        ("2026-12-01T09:00:00+01:00", None, "2026-12-01T09:00:00+01:00"),
        ("2026-12-01 09:00:00+01:00", None, "2026-12-01T09:00:00+01:00"),
        ("2026-12-01T08:00:00Z", None, "2026-12-01T08:00:00+00:00"),
        ("  2026-12-01T09:00:00-05:00 ", None, "2026-12-01T09:00:00-05:00"),
        ("2026-12-01T09:00:00.987654+01:00", None, "2026-12-01T09:00:00+01:00"),
        (datetime(2026, 12, 1, 9, tzinfo=timezone(timedelta(hours=1))), None, "2026-12-01T09:00:00+01:00"),
        (pendulum.datetime(2026, 12, 1, 9, tz="Europe/Stockholm"), None, "2026-12-01T09:00:00+01:00"),
        (pendulum.datetime(2026, 7, 1, 9, tz="Europe/Stockholm"), None, "2026-07-01T09:00:00+02:00"),
        # Naive values are read in the given zone, DST included.
        ("2026-12-01T09:00:00", "Europe/Stockholm", "2026-12-01T09:00:00+01:00"),
        ("2026-07-01T09:00", "Europe/Stockholm", "2026-07-01T09:00:00+02:00"),
        (datetime(2026, 12, 1, 9), "America/New_York", "2026-12-01T09:00:00-05:00"),
        ("2026-12-01T09:00:00", ZoneInfo("Asia/Tokyo"), "2026-12-01T09:00:00+09:00"),
        ("2026-12-01T09:00:00", pendulum.timezone("Europe/Stockholm"), "2026-12-01T09:00:00+01:00"),
        # A value with an offset keeps it: timezone= only reads naive values.
        ("2026-12-01T09:00:00+05:00", "Europe/Stockholm", "2026-12-01T09:00:00+05:00"),
        ("2026-12-01T09:00:00+01:00", "", "2026-12-01T09:00:00+01:00"),
    ],
)
def test_request_time_accepts(value: Any, zone: Any, expected: str) -> None:
    result = read_time(value, zone)
    assert type(result) is datetime  # pendulum's DateTime is normalised away
    assert result.isoformat() == expected


@pytest.mark.parametrize(
    ("value", "zone", "field", "fragments"),
    [
        (
            "2026-12-01T09:00:00",
            None,
            "start_time",
            ["start_time:", "no UTC offset", "2026-12-01T09:00:00+01:00", 'timezone="Europe/Stockholm"'],
        ),
        (datetime(2026, 12, 1, 9), None, "start_time", ["no UTC offset", "timezone="]),
        ("2026-12-01T09:00:00", "  ", "start_time", ["no UTC offset"]),
        (
            "2026-12-01T09:00:00",
            "Europe/Stokholm",
            "timezone",
            ["'Europe/Stokholm'", "IANA", "Europe/Stockholm"],
        ),
        ("2026-12-01T09:00:00+01:00", "Mars/Olympus", "timezone", ["not a known IANA time zone"]),
        ("2026-12-01T09:00:00", "../../etc/passwd", "timezone", ["not a known IANA time zone"]),
        ("2026-12-01T09:00:00", 5, "timezone", ["got a number"]),
        (
            "tomorrow at nine",
            None,
            "start_time",
            ["cannot read 'tomorrow at nine'", "2026-12-01T09:00:00+01:00"],
        ),
        ("2026-13-01T09:00:00+01:00", None, "start_time", ["cannot read", "ISO-8601"]),
        ("2026-12-01T25:00:00+01:00", None, "start_time", ["cannot read"]),
        ("2026-12-01", None, "start_time", ["date without a time of day"]),
        ("2026-12-01", "Europe/Stockholm", "start_time", ["date without a time of day"]),
        (date(2026, 12, 1), None, "start_time", ["date without a time of day"]),
        (1764579600, None, "start_time", ["got a number"]),
        (None, None, "start_time", ["is required"]),  # None is "not given", as an empty CSV cell
        ([9, 0], None, "start_time", ["got a list"]),
        ("2026-03-29T02:30:00", "Europe/Stockholm", "start_time", ["does not exist in Europe/Stockholm"]),
        (
            "2026-10-25T02:30:00",
            "Europe/Stockholm",
            "start_time",
            ["happens twice", "2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"],
        ),
    ],
)
def test_request_time_refuses(value: Any, zone: Any, field: str, fragments: list[str]) -> None:
    with pytest.raises(QmaticValidationError) as info:
        read_time(value, zone)
    assert info.value.field == field
    assert f"{field}: " in info.value.message
    for fragment in fragments:
        assert fragment in info.value.message


def test_long_unparseable_time_is_cut_in_the_message() -> None:
    with pytest.raises(QmaticValidationError) as info:
        read_time("x" * 500)
    assert "x" * 41 not in info.value.message
    assert "x" * 40 + "..." in info.value.message


def test_pendulum_parser_covers_what_fromisoformat_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.10's fromisoformat refuses "Z" and spaces; the pendulum fallback must cover them."""

    def refuse(text: str) -> datetime:
        raise ValueError(text)

    monkeypatch.setattr(models, "_from_iso", refuse)
    models._aware_text.cache_clear()  # texts read earlier by fromisoformat would not reach pendulum
    utc = read_time("2026-12-01T08:00:00Z")
    assert utc.isoformat() == "2026-12-01T08:00:00+00:00"
    assert type(utc.tzinfo) is timezone  # pendulum's FixedTimezone is not leaked
    spaced = read_time("2026-12-01 09:00:00+01:00")
    assert spaced.isoformat() == "2026-12-01T09:00:00+01:00"
    with pytest.raises(QmaticValidationError, match="no UTC offset"):
        read_time("2026-12-01T09:00:00")
    with pytest.raises(QmaticValidationError, match="cannot read"):
        read_time("2026-12-01T99:00:00Z")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2026, 12, 1, 8, tzinfo=timezone.utc), "2026-12-01T08:00:00+00:00"),
        (
            datetime(2026, 12, 1, 9, 0, 5, 123456, tzinfo=timezone(timedelta(hours=1))),
            "2026-12-01T09:00:05+01:00",
        ),
        (datetime(2026, 12, 1, 9, tzinfo=ZoneInfo("Europe/Stockholm")), "2026-12-01T09:00:00+01:00"),
        (pendulum.datetime(2026, 12, 1, 9, tz="UTC"), "2026-12-01T09:00:00+00:00"),
        (
            datetime(2026, 12, 1, 9, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            "2026-12-01T09:00:00+05:30",
        ),
    ],
)
def test_format_wire_datetime(value: datetime, expected: str) -> None:
    assert format_wire_datetime(value) == expected


def test_format_wire_datetime_refuses_naive() -> None:
    with pytest.raises(QmaticValidationError, match="no UTC offset"):
        format_wire_datetime(datetime(2026, 12, 1, 9))


def test_resolve_timezone() -> None:
    assert resolve_timezone(None) is None
    assert resolve_timezone(" ") is None
    assert resolve_timezone(" Europe/Stockholm ") == ZoneInfo("Europe/Stockholm")
    zone = ZoneInfo("UTC")
    assert resolve_timezone(zone) is zone


# --------------------------------------------------------------------------------------------------
# Customer
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "attribute", "expected"),
    [
        ({"personal_identifier": "A1b2C3d4E5"}, "personal_identifier", "A1b2C3d4E5"),  # 10
        ({"personal_identifier": "a" * 48}, "personal_identifier", "a" * 48),  # 48
        ({"personal_identifier": " 199001011234 "}, "personal_identifier", "199001011234"),
        ({"first_name": "x" * NAME_MAX}, "first_name", "x" * NAME_MAX),
        ({"last_name": "x" * NAME_MAX}, "last_name", "x" * NAME_MAX),
        ({"first_name": "  Åsa  "}, "first_name", "Åsa"),  # names may hold any letters
        ({"last_name": "Öberg-Lindström"}, "last_name", "Öberg-Lindström"),
        ({"email": " a.b+tag@sub.example.com "}, "email", "a.b+tag@sub.example.com"),
        ({"email": "x" * 244 + "@example.se"}, "email", "x" * 244 + "@example.se"),  # 255
        ({"phone_number": "+46 (0)70-123 45 67"}, "phone_number", "+46 (0)70-123 45 67"),
        ({"phone_number": "1" * 64}, "phone_number", "1" * 64),
        ({"phone_number": ""}, "phone_number", None),  # an empty CSV cell means "not given"
        ({"phone_number": None}, "phone_number", None),
        ({"date_of_birth": DOB}, "date_of_birth", date(1984, 2, 29)),
        ({"date_of_birth": date(1984, 2, 29)}, "date_of_birth", date(1984, 2, 29)),
        ({"date_of_birth": datetime(1984, 2, 29, 12)}, "date_of_birth", date(1984, 2, 29)),
        ({"date_of_birth": pendulum.date(1984, 2, 29)}, "date_of_birth", date(1984, 2, 29)),
        ({"date_of_birth": " "}, "date_of_birth", None),
    ],
)
def test_customer_accepts(overrides: dict[str, Any], attribute: str, expected: Any) -> None:
    parsed = Customer.parse(customer(**overrides))
    assert getattr(parsed, attribute) == expected
    if isinstance(expected, date):
        assert type(getattr(parsed, attribute)) is date


@pytest.mark.parametrize(
    ("overrides", "field", "fragments"),
    [
        # personal_identifier: 10 to 48 of A-Z a-z 0-9
        (
            {"personal_identifier": "A1b2C3d4E"},
            "personal_identifier",
            ["must be 10 to 48 letters or digits (A-Z, a-z, 0-9), but got 9 characters", "whole identifier"],
        ),
        ({"personal_identifier": "a" * 49}, "personal_identifier", ["got 49 characters"]),
        ({"personal_identifier": "1234567"}, "personal_identifier", ["got 7 characters"]),
        ({"personal_identifier": "19121212-1212"}, "personal_identifier", ["'-' at position 9", "remove"]),
        ({"personal_identifier": "1912121 21212"}, "personal_identifier", ["a space at position 8"]),
        ({"personal_identifier": "ÅsaÅsaÅsa12"}, "personal_identifier", ["non-ASCII letter at position 1"]),
        ({"personal_identifier": "ABCDEFGHIé"}, "personal_identifier", ["non-ASCII letter", "position 10"]),
        ({"personal_identifier": FULLWIDTH_DIGITS}, "personal_identifier", ["non-ASCII digit"]),
        ({"personal_identifier": "12345678\n90"}, "personal_identifier", ["line break"]),
        ({"personal_identifier": "1-2-3-4-5-6"}, "personal_identifier", ["and 2 more"]),
        ({"personal_identifier": "a-b"}, "personal_identifier", ["got 3 characters and it contains '-'"]),
        ({"personal_identifier": 199001011234}, "personal_identifier", ["got a number", "quotes"]),
        ({"personal_identifier": ["x"]}, "personal_identifier", ["got a list"]),
        ({"personal_identifier": _DROP}, "personal_identifier", ["is required", "personal identifier"]),
        ({"personal_identifier": "   "}, "personal_identifier", ["is required"]),
        # names: required, non-blank, at most 255
        ({"first_name": "x" * (NAME_MAX + 1)}, "first_name", ["at most 255 characters, got 256"]),
        ({"last_name": "x" * (NAME_MAX + 1)}, "last_name", ["at most 255 characters, got 256"]),
        ({"first_name": ""}, "first_name", ["is required", "first name"]),
        ({"last_name": _DROP}, "last_name", ["is required", "last name"]),
        ({"first_name": "Anna\nMaria"}, "first_name", ["line breaks"]),
        ({"last_name": 42}, "last_name", ["must be text, got a number"]),
        # email: at most 255, one @, a dot in the domain, no spaces
        ({"email": "x" * 245 + "@example.se"}, "email", ["at most 255 characters, got 256"]),
        ({"email": "no-at.example.com"}, "email", ["has no '@'"]),
        ({"email": "a@@example.com"}, "email", ["2 '@' signs"]),
        ({"email": "a@b@example.com"}, "email", ["2 '@' signs"]),
        ({"email": "a b@example.com"}, "email", ["contains a space"]),
        ({"email": "a@localhost"}, "email", ["no dot"]),
        ({"email": "@example.com"}, "email", ["nothing before the '@'"]),
        ({"email": "a@.example.com"}, "email", ["empty label"]),
        ({"email": "a@example.com."}, "email", ["empty label"]),
        ({"email": "a@example..com"}, "email", ["empty label"]),
        ({"email": "a@exa\x00mple.com"}, "email", ["control character"]),
        ({"email": 5}, "email", ["got a number"]),
        ({"email": _DROP}, "email", ["is required", "email"]),
        # phone_number: optional, at most 64, digits, spaces, + - ( )
        ({"phone_number": "1" * 65}, "phone_number", ["at most 64 characters, got 65"]),
        ({"phone_number": "070/1234567"}, "phone_number", ["'/'", "only digits, spaces"]),
        ({"phone_number": "070 CALL ME"}, "phone_number", ["a letter", "other characters"]),
        ({"phone_number": "070.123"}, "phone_number", ["'.'"]),
        ({"phone_number": "+-()"}, "phone_number", ["at least one digit"]),
        ({"phone_number": 46701234567}, "phone_number", ["got a number", "leading 0"]),
        # date_of_birth: optional, YYYY-MM-DD, not in the future
        ({"date_of_birth": "29/02/1984"}, "date_of_birth", ["YYYY-MM-DD"]),
        ({"date_of_birth": "1984-2-9"}, "date_of_birth", ["YYYY-MM-DD"]),
        ({"date_of_birth": "1985-02-29"}, "date_of_birth", ["not a real calendar date"]),
        ({"date_of_birth": "1985-13-01"}, "date_of_birth", ["not a real calendar date"]),
        ({"date_of_birth": 19840229}, "date_of_birth", ["got a number"]),
        # extra fields: JSON values only; misspelt known fields are caught
        ({"tags": {1, 2}}, "tags", ["extra customer field", "got a set"]),
        ({"createdAt": datetime(2026, 1, 1)}, "createdAt", ["extra customer field"]),
        ({"First Name": "x"}, "First Name", ["looks like first_name", "firstName"]),
        ({"phonenumber": "1"}, "phonenumber", ["looks like phone_number"]),
        ({"E-mail": "a@b.se"}, "E-mail", ["looks like email"]),
        # one field given in both spellings
        ({"firstName": "Other"}, "first_name", ["given twice", "'first_name'", "'firstName'"]),
    ],
)
def test_customer_refuses(overrides: dict[str, Any], field: str, fragments: list[str]) -> None:
    error = customer_error(**overrides)
    assert error.field == field
    assert error.message.startswith(f"invalid customer: {field}: ")
    for fragment in fragments:
        assert fragment in error.message


def test_date_of_birth_may_be_today_anywhere_on_earth_but_not_later() -> None:
    """Today (UTC) and tomorrow (today east of UTC) are accepted, the day after is in the future.

    The dates are read from the clock as the test runs, not when the module is collected: a
    suite that crosses midnight UTC between the two would otherwise see the day after tomorrow
    become tomorrow and be accepted.
    """
    today = datetime.now(timezone.utc).date()
    for born in (today, today + timedelta(days=1)):
        assert Customer.parse(customer(date_of_birth=born.isoformat())).date_of_birth == born
    error = customer_error(date_of_birth=(today + timedelta(days=2)).isoformat())
    assert error.field == "date_of_birth"
    assert "in the future" in error.message


def test_customer_extra_fields_reach_the_wire_unchanged() -> None:
    parsed = Customer.parse(
        customer(phone_number=PHONE, date_of_birth=DOB, customerNumber=17, custom_flag=True, prefs={"a": [1]})
    )
    assert parsed.to_wire() == {
        "personalIdentifier": PID,
        "firstName": FIRST,
        "lastName": LAST,
        "email": EMAIL,
        "phoneNumber": PHONE,
        "dateOfBirth": DOB,
        "customerNumber": 17,
        "custom_flag": True,
        "prefs": {"a": [1]},
    }


def test_customer_accepts_camel_case_keys() -> None:
    parsed = Customer.parse(
        {
            "personalIdentifier": PID,
            "firstName": FIRST,
            "lastName": LAST,
            "email": EMAIL,
            "phoneNumber": PHONE,
        }
    )
    assert (parsed.personal_identifier, parsed.first_name, parsed.phone_number) == (PID, FIRST, PHONE)
    assert parsed.model_extra == {}


def test_customer_repr_hides_personal_data() -> None:
    parsed = Customer.parse(customer(phone_number=PHONE, date_of_birth=DOB, loyalty="GOLDMEMBERX"))
    text = repr(parsed) + str(parsed)
    for value in (PID, FIRST, LAST, EMAIL, PHONE, DOB, "1984", "GOLDMEMBERX"):
        assert value not in text
    assert "personal_identifier=<hidden>" in text


# --------------------------------------------------------------------------------------------------
# BookingRequest
# --------------------------------------------------------------------------------------------------


def test_booking_from_a_csv_row_of_strings() -> None:
    row = {
        "branchId": BRANCH,
        "serviceId": SERVICE,
        "resourceId": "",
        "startTime": "2026-12-01 09:00",
        "endTime": "",
        "notes": "",
        "numberOfReservations": "2",
        "informationQuestions": "",
        "customer": {
            "personalIdentifier": PID,
            "firstName": FIRST,
            "lastName": LAST,
            "email": EMAIL,
            "phoneNumber": "",
            "dateOfBirth": "",
        },
    }
    request = BookingRequest.parse(row, timezone="Europe/Stockholm")
    assert request.number_of_reservations == 2
    assert request.resource_id is None
    assert request.end_time is None
    assert request.notes is None
    assert request.information_questions == []
    assert request.customer.phone_number is None
    assert format_wire_datetime(request.start_time) == "2026-12-01T09:00:00+01:00"


def test_reservation_body_is_part_b_shape() -> None:
    request = BookingRequest.parse(
        booking(resource_id=RESOURCE, notes="Wheelchair access", number_of_reservations=3)
    )
    body = request.reservation_body()
    assert body == {
        "branchId": BRANCH,
        "serviceId": SERVICE,
        "requestedResourceId": RESOURCE,
        "timeSlot": {"startTime": "2026-12-01T09:00:00+01:00", "endTime": "2026-12-01T09:30:00+01:00"},
        "notes": "Wheelchair access",
        "numberOfReservations": 3,
    }
    assert list(body) == [
        "branchId",
        "serviceId",
        "requestedResourceId",
        "timeSlot",
        "notes",
        "numberOfReservations",
    ]
    assert json.loads(json.dumps(body)) == body


def test_reservation_body_leaves_out_optional_fields() -> None:
    body = BookingRequest.parse(booking()).reservation_body()
    assert body == {
        "branchId": BRANCH,
        "serviceId": SERVICE,
        "timeSlot": {"startTime": "2026-12-01T09:00:00+01:00", "endTime": "2026-12-01T09:30:00+01:00"},
        "numberOfReservations": 1,
    }


def test_confirmation_body_is_part_b_shape() -> None:
    request = BookingRequest.parse(
        booking(
            customer=customer(phone_number=PHONE, date_of_birth=DOB),
            information_questions=[
                {"questionId": "q-1", "answer": "Yes"},
                {"question_id": "q-2", "answer": 3},
            ],
        )
    )
    assert request.confirmation_body() == {
        "customer": {
            "personalIdentifier": PID,
            "firstName": FIRST,
            "lastName": LAST,
            "email": EMAIL,
            "phoneNumber": PHONE,
            "dateOfBirth": DOB,
        },
        "informationQuestions": [
            {"questionId": "q-1", "answer": "Yes"},
            {"questionId": "q-2", "answer": "3"},
        ],
    }


def test_confirmation_body_without_questions_has_no_questions_key() -> None:
    body = BookingRequest.parse(booking()).confirmation_body()
    assert body == {
        "customer": {"personalIdentifier": PID, "firstName": FIRST, "lastName": LAST, "email": EMAIL}
    }


def test_information_questions_as_a_mapping() -> None:
    request = BookingRequest.parse(booking(information_questions={"q-1": "Yes", "q-2": "No"}))
    assert [(a.question_id, a.answer) for a in request.information_questions] == [
        ("q-1", "Yes"),
        ("q-2", "No"),
    ]


def test_to_wire_of_a_whole_booking() -> None:
    wire = BookingRequest.parse(booking(customer=customer(date_of_birth=DOB))).to_wire()
    assert wire == {
        "branchId": BRANCH,
        "serviceId": SERVICE,
        "startTime": "2026-12-01T09:00:00+01:00",
        "endTime": "2026-12-01T09:30:00+01:00",
        "customer": {
            "personalIdentifier": PID,
            "firstName": FIRST,
            "lastName": LAST,
            "email": EMAIL,
            "dateOfBirth": DOB,
        },
        "numberOfReservations": 1,
        "informationQuestions": [],
    }
    json.dumps(wire)


def test_booking_accepts_pendulum_and_uuid_values() -> None:
    request = BookingRequest.parse(
        booking(
            branch_id=uuid.UUID(BRANCH),
            start_time=pendulum.datetime(2026, 12, 1, 9, tz="Europe/Stockholm"),
            end_time=pendulum.datetime(2026, 12, 1, 8, 30, tz="UTC"),
            customer=Customer.parse(customer()),
        )
    )
    assert request.branch_id == BRANCH
    assert request.reservation_body()["timeSlot"] == {
        "startTime": "2026-12-01T09:00:00+01:00",
        "endTime": "2026-12-01T08:30:00+00:00",
    }


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("branch_id", BRANCH.upper(), BRANCH.upper()),
        ("service_id", f"  {SERVICE} ", SERVICE),
        ("resource_id", RESOURCE, RESOURCE),
        ("resource_id", "", None),
        ("notes", "x" * NOTES_MAX, "x" * NOTES_MAX),
        ("notes", "line one\nline two", "line one\nline two"),
        ("notes", "  ", None),
        ("number_of_reservations", "1", 1),
        ("number_of_reservations", " 3 ", 3),
        ("number_of_reservations", "2.0", 2),
        ("number_of_reservations", 2.0, 2),
        ("number_of_reservations", 100, 100),
        ("number_of_reservations", "100", 100),
        ("number_of_reservations", "", 1),
        ("number_of_reservations", None, 1),
        ("end_time", "", None),
        ("end_time", "2026-12-01T08:15:00Z", datetime(2026, 12, 1, 8, 15, tzinfo=timezone.utc)),  # 09:15+01
    ],
)
def test_booking_field_accepts(field: str, value: Any, expected: Any) -> None:
    assert getattr(BookingRequest.parse(booking(**{field: value})), field) == expected


@pytest.mark.parametrize(
    ("overrides", "field", "fragments"),
    [
        ({"branch_id": "abc"}, "branch_id", [f"must be a GUID such as {EXAMPLE_GUID}", "got 'abc'"]),
        ({"service_id": SERVICE.replace("-", "")}, "service_id", ["must be a GUID such as"]),
        ({"service_id": "{" + SERVICE + "}"}, "service_id", ["must be a GUID such as"]),
        ({"resource_id": SERVICE[:-1] + "g"}, "resource_id", ["must be a GUID such as"]),
        ({"branch_id": 12345}, "branch_id", ["must be a GUID such as", "got a number"]),
        ({"branch_id": _DROP}, "branch_id", ["is required", "branch id"]),
        ({"service_id": " "}, "service_id", ["is required", "service id"]),
        ({"start_time": _DROP}, "start_time", ["is required", "2026-12-01T09:00:00+01:00"]),
        ({"start_time": "2026-12-01T09:00"}, "start_time", ["no UTC offset", "timezone="]),
        ({"end_time": "2026-12-01T09:30"}, "end_time", ["no UTC offset"]),
        ({"end_time": "2026-12-01T08:59:00+01:00"}, "end_time", ["must be after start_time", "with_end"]),
        ({"end_time": "2026-12-01T09:00:00+01:00"}, "end_time", ["must be after start_time"]),
        ({"end_time": "2026-12-01T07:45:00+00:00"}, "end_time", ["must be after start_time"]),  # 08:45+01
        ({"end_time": "2026-12-01T07:30:00Z"}, "end_time", ["start 2026-12-01T09:00:00+01:00"]),
        ({"notes": "x" * (NOTES_MAX + 1)}, "notes", ["at most 4096 characters, got 4097"]),
        ({"notes": ["a"]}, "notes", ["must be text, got a list"]),
        ({"number_of_reservations": 0}, "number_of_reservations", ["from 1 to 100, got 0"]),
        ({"number_of_reservations": "0"}, "number_of_reservations", ["got 0"]),
        ({"number_of_reservations": 101}, "number_of_reservations", ["got 101"]),
        ({"number_of_reservations": -1}, "number_of_reservations", ["got -1"]),
        ({"number_of_reservations": "abc"}, "number_of_reservations", ["got 'abc'"]),
        ({"number_of_reservations": "1.5"}, "number_of_reservations", ["got '1.5'"]),
        ({"number_of_reservations": 1.5}, "number_of_reservations", ["got '1.5'"]),
        ({"number_of_reservations": True}, "number_of_reservations", ["got true/false"]),
        ({"number_of_reservations": [1]}, "number_of_reservations", ["got a list"]),
        ({"customer": _DROP}, "customer", ["is required", "personal_identifier, first_name"]),
        ({"customer": "Ingrid"}, "customer", ["must be an object", "got text"]),
        ({"customer": customer(email="nope")}, "customer.email", ["has no '@'"]),
        ({"information_questions": "yes"}, "information_questions", ["must be a list", "got text"]),
        (
            {"information_questions": [{"question_id": "q", "answer": "x" * (ANSWER_MAX + 1)}]},
            "information_questions[0].answer",
            ["at most 2048 characters, got 2049"],
        ),
        (
            {"information_questions": [{"question_id": "q", "answer": "ok"}, {"question_id": "q2"}]},
            "information_questions[1].answer",
            ["is required", "answer"],
        ),
        (
            {"information_questions": [{"question_id": "q", "answer": "ok", "hint": "x"}]},
            "information_questions[0].hint",
            ["is not a field of an information answer", "question_id, answer"],
        ),
        (
            {"servce_id": SERVICE},
            "servce_id",
            ["is not a field of a booking request", "known fields: branch_id"],
        ),
        ({"serviceId": SERVICE}, "service_id", ["given twice"]),
    ],
)
def test_booking_refuses(overrides: dict[str, Any], field: str, fragments: list[str]) -> None:
    error = booking_error(booking(**overrides))
    assert error.field == field
    assert f"{field}: " in error.message
    for fragment in fragments:
        assert fragment in error.message


@pytest.mark.parametrize(
    ("answer", "question_id", "ok"),
    [
        ("x" * ANSWER_MAX, "q", True),
        ("x" * (ANSWER_MAX + 1), "q", False),
        ("multi\nline", "q", True),
        ("ok", "q" * 255, True),
        ("ok", "q" * 256, False),
        ("ok", 7, True),
        ("ok", " ", False),
        (" ", "q", False),
    ],
)
def test_information_answer_limits(answer: Any, question_id: Any, ok: bool) -> None:
    data = {"question_id": question_id, "answer": answer}
    if ok:
        parsed = InformationAnswer.parse(data)
        assert parsed.question_id == str(question_id).strip()
    else:
        with pytest.raises(QmaticValidationError):
            InformationAnswer.parse(data)


def test_every_problem_of_a_row_is_listed_and_the_first_is_the_field() -> None:
    error = booking_error(
        booking(
            branch_id="nope",
            number_of_reservations="zero",
            customer=customer(personal_identifier="short", email="bad"),
        )
    )
    assert error.field == "branch_id"
    problems = error.message.removeprefix("invalid booking request: ").split(" | ")
    assert [p.split(": ", 1)[0] for p in problems] == [
        "branch_id",
        "customer.personal_identifier",
        "customer.email",
        "number_of_reservations",
    ]


def test_parse_raises_only_the_provider_error_without_chained_input() -> None:
    error = booking_error(booking(customer=customer(personal_identifier="bad-id")))
    assert not isinstance(error, ValidationError)
    # A chained pydantic error would print the input (personal data) in a traceback.
    assert error.__cause__ is None
    assert error.__context__ is None
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.field, copy.message) == (QmaticValidationError, error.field, error.message)


@pytest.mark.parametrize("data", ["a string", ["a", "list"], 3, None])
def test_parse_refuses_what_is_not_a_mapping(data: Any) -> None:
    with pytest.raises(QmaticValidationError, match="must be a mapping of field names"):
        BookingRequest.parse(data)


def test_parse_returns_an_existing_model_as_it_is() -> None:
    request = BookingRequest.parse(booking())
    assert BookingRequest.parse(request) is request


def test_unknown_timezone_fails_even_when_times_have_offsets() -> None:
    error = booking_error(booking(), timezone="Europe/Stokholm")
    assert error.field == "timezone"


def test_timezone_reads_every_naive_time_of_a_row() -> None:
    request = BookingRequest.parse(
        booking(start_time="2026-07-01T09:00", end_time="2026-07-01T09:45:00"), timezone="Europe/Stockholm"
    )
    assert request.reservation_body()["timeSlot"] == {
        "startTime": "2026-07-01T09:00:00+02:00",
        "endTime": "2026-07-01T09:45:00+02:00",
    }


def test_with_end_fills_a_missing_end() -> None:
    request = BookingRequest.parse(booking(end_time=_DROP))
    assert request.end_time is None
    filled = request.with_end(45)
    assert format_wire_datetime(filled.end_time or datetime.min) == "2026-12-01T09:45:00+01:00"
    assert request.end_time is None  # the original is unchanged (models are frozen)


def test_with_end_keeps_an_explicit_end() -> None:
    request = BookingRequest.parse(booking())
    assert request.with_end(90).end_time == request.end_time


def test_with_end_counts_elapsed_minutes_across_a_dst_change() -> None:
    request = BookingRequest.parse(
        booking(start_time="2026-03-29T01:45", end_time=_DROP), timezone="Europe/Stockholm"
    )
    slot = request.with_end(30).reservation_body()["timeSlot"]
    assert slot == {"startTime": "2026-03-29T01:45:00+01:00", "endTime": "2026-03-29T03:15:00+02:00"}


@pytest.mark.parametrize(
    ("minutes", "fragment"), [(0, "from 1 to 1440"), (1441, "got 1441"), ("30", "whole"), (True, "whole")]
)
def test_with_end_refuses_bad_durations(minutes: Any, fragment: str) -> None:
    with pytest.raises(QmaticValidationError) as info:
        BookingRequest.parse(booking(end_time=_DROP)).with_end(minutes)
    assert info.value.field == "duration_minutes"
    assert fragment in info.value.message


def test_reservation_body_without_end_says_how_to_fix() -> None:
    with pytest.raises(QmaticValidationError) as info:
        BookingRequest.parse(booking(end_time=_DROP)).reservation_body()
    assert info.value.field == "end_time"
    assert "with_end(duration_minutes)" in info.value.message


def test_request_models_are_frozen() -> None:
    request = BookingRequest.parse(booking())
    with pytest.raises(ValidationError):
        request.notes = "changed"  # type: ignore[misc]


def test_booking_repr_hides_customer_notes_and_answers() -> None:
    request = BookingRequest.parse(
        booking(
            notes="NOTESECRET",
            information_questions={"q": "ANSWERSECRET"},
            customer=customer(date_of_birth=DOB),
        )
    )
    text = repr(request)
    for value in (PID, FIRST, LAST, EMAIL, DOB, "NOTESECRET", "ANSWERSECRET"):
        assert value not in text
    assert BRANCH in text


# --------------------------------------------------------------------------------------------------
# Personal data never appears in messages
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("customer_overrides", "booking_overrides", "secret"),
    [
        ({"personal_identifier": "SECRETPID-0042"}, {}, "SECRETPID"),
        ({"personal_identifier": "SECRETÖ"}, {}, "SECRET"),
        ({"personal_identifier": 1234567890123}, {}, "1234567890123"),
        ({"first_name": "SECRETNAME" * 30}, {}, "SECRETNAME"),
        ({"first_name": "SECRET\nNAME"}, {}, "SECRET"),
        ({"last_name": "SECRETLAST" * 30}, {}, "SECRETLAST"),
        ({"email": "SECRETMAIL@@example.com"}, {}, "SECRETMAIL"),
        ({"email": "SECRET MAIL@example.com"}, {}, "SECRET"),
        ({"email": "SECRETMAIL@localhost"}, {}, "SECRETMAIL"),
        ({"email": "SECRETMAIL" * 30 + "@example.com"}, {}, "SECRETMAIL"),
        ({"phone_number": "SECRET 070"}, {}, "SECRET"),
        ({"phone_number": 46701234567}, {}, "46701234567"),
        ({"date_of_birth": "1984-02-30"}, {}, "1984"),
        ({"date_of_birth": "30.02.1984"}, {}, "1984"),
        ({"date_of_birth": "2999-01-01"}, {}, "2999"),
        ({"loyalty": {"SECRETSET"}}, {}, "SECRETSET"),
        ({}, {"customer": "SECRETCUSTOMER"}, "SECRETCUSTOMER"),
        ({}, {"notes": "SECRETNOTE" * 500}, "SECRETNOTE"),
        ({}, {"information_questions": {"q": "SECRETANSWER" * 200}}, "SECRETANSWER"),
    ],
)
def test_messages_never_quote_personal_data(
    customer_overrides: dict[str, Any], booking_overrides: dict[str, Any], secret: str
) -> None:
    data = booking(customer=customer(**customer_overrides))
    data.update(booking_overrides)
    error = booking_error(data)
    for text in (error.message, str(error), repr(error)):
        assert secret not in text
    # The same holds when someone bypasses parse() and meets pydantic's own error.
    with pytest.raises(ValidationError) as info:
        BookingRequest.model_validate(data)
    assert secret not in str(info.value)
    # And the converter, used on that pydantic error, still names the problem.
    converted = to_qmatic_validation_error(info.value, BookingRequest)
    assert converted.field == error.field
    assert secret not in converted.message


def test_converter_without_a_model_uses_snake_case_paths() -> None:
    with pytest.raises(ValidationError) as info:
        BookingRequest.model_validate(booking(customer=customer(email=_DROP)))
    converted = to_qmatic_validation_error(info.value)
    assert converted.field == "customer.email"
    assert converted.message.startswith("invalid input: customer.email: is required")


# --------------------------------------------------------------------------------------------------
# TimeSlot, RescheduleRequest, CancelRequest
# --------------------------------------------------------------------------------------------------


def test_time_slot_parse_and_wire() -> None:
    slot = TimeSlot.parse({"startTime": "2026-12-01T09:00:00+01:00", "end_time": "2026-12-01T10:00:00+01:00"})
    assert slot.to_wire() == {
        "startTime": "2026-12-01T09:00:00+01:00",
        "endTime": "2026-12-01T10:00:00+01:00",
    }


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        (
            {"start_time": "2026-12-01T09:00:00+01:00", "end_time": "2026-12-01T09:00:00+01:00"},
            "end_time",
            "after",
        ),
        ({"start_time": "2026-12-01T09:00:00+01:00"}, "end_time", "is required"),
        (
            {"start_time": "2026-12-01T09:00", "end_time": "2026-12-01T10:00:00+01:00"},
            "start_time",
            "no UTC offset",
        ),
    ],
)
def test_time_slot_refuses(data: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(QmaticValidationError) as info:
        TimeSlot.parse(data)
    assert info.value.field == field
    assert fragment in info.value.message


def reschedule(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"appointment_id": APPOINTMENT, "start_time": "2026-12-02T10:00:00+01:00"}
    data.update(overrides)
    return data


def test_reschedule_reservation_for_an_appointment() -> None:
    appointment = Appointment.parse(
        {
            "appointmentId": APPOINTMENT,
            "branch": {"id": BRANCH, "name": "Main"},
            "service": {"id": SERVICE, "name": "Passport"},
            "numberOfReservations": 2,
        }
    )
    request = RescheduleRequest.parse(reschedule(end_time="2026-12-02T10:15:00+01:00"))
    assert request.reservation_body_for(appointment) == {
        "branchId": BRANCH,
        "serviceId": SERVICE,
        "timeSlot": {"startTime": "2026-12-02T10:00:00+01:00", "endTime": "2026-12-02T10:15:00+01:00"},
        "numberOfReservations": 2,
    }
    bare = Appointment.parse({"appointmentId": APPOINTMENT, "service": {"id": SERVICE}})
    with pytest.raises(QmaticValidationError) as info:
        request.reservation_body_for(bare)
    assert info.value.field == "branch.id"


def test_reschedule_reservation_keeps_notes_and_leaves_out_resource() -> None:
    appointment = Appointment.parse(
        {"appointmentId": APPOINTMENT, "branch": {"id": BRANCH}, "service": {"id": SERVICE}}
    )
    request = RescheduleRequest.parse(reschedule(notes="moved")).with_end(30)
    assert request.reservation_body_for(appointment) == {
        "branchId": BRANCH,
        "serviceId": SERVICE,
        "timeSlot": {"startTime": "2026-12-02T10:00:00+01:00", "endTime": "2026-12-02T10:30:00+01:00"},
        "notes": "moved",
        "numberOfReservations": 1,
    }


@pytest.mark.parametrize(
    ("answer", "field"),
    [
        ({"branch": {"id": "x"}, "service": {"id": SERVICE}}, "branch_id"),
        ({"branch": {"id": BRANCH}, "service": {"id": "not-a-guid"}}, "service_id"),
        ({"branch": {"id": BRANCH}, "service": {"name": "Passport"}}, "service.id"),
        (
            {"branch": {"id": BRANCH}, "service": {"id": SERVICE}, "numberOfReservations": 500},
            "number_of_reservations",
        ),
    ],
)
def test_reschedule_reservation_checks_what_the_appointment_gave(answer: dict[str, Any], field: str) -> None:
    appointment = Appointment.parse({"appointmentId": APPOINTMENT, **answer})
    request = RescheduleRequest.parse(reschedule(end_time="2026-12-02T10:15:00+01:00"))
    with pytest.raises(QmaticValidationError) as info:
        request.reservation_body_for(appointment)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"appointment_id": "123"}, "appointment_id", "must be a GUID such as"),
        ({"appointment_id": None}, "appointment_id", "is required"),
        ({"start_time": "2026-12-02 10:00"}, "start_time", "no UTC offset"),
        ({"end_time": "2026-12-02T09:00:00+01:00"}, "end_time", "must be after start_time"),
        ({"notes": "x" * (NOTES_MAX + 1)}, "notes", "at most 4096"),
        ({"service_id": SERVICE}, "service_id", "is not a field of a reschedule request"),
    ],
)
def test_reschedule_refuses(overrides: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(QmaticValidationError) as info:
        RescheduleRequest.parse(reschedule(**overrides))
    assert info.value.field == field
    assert fragment in info.value.message


def test_reschedule_reads_naive_times_with_timezone() -> None:
    request = RescheduleRequest.parse(reschedule(start_time="2026-12-02 10:00"), timezone="Europe/Stockholm")
    assert format_wire_datetime(request.start_time) == "2026-12-02T10:00:00+01:00"


@pytest.mark.parametrize(
    ("data", "ok", "fragment"),
    [
        ({"appointment_id": APPOINTMENT}, True, ""),
        ({"appointmentId": f" {APPOINTMENT} "}, True, ""),
        ({"appointment_id": "nope"}, False, "got 'nope'"),
        ({}, False, "is required"),
        ({"appointment_id": APPOINTMENT, "reason": "x"}, False, "is not a field of a cancel request"),
    ],
)
def test_cancel_request(data: dict[str, Any], ok: bool, fragment: str) -> None:
    if ok:
        assert CancelRequest.parse(data).to_wire() == {"appointmentId": APPOINTMENT}
    else:
        with pytest.raises(QmaticValidationError) as info:
            CancelRequest.parse(data)
        assert fragment in info.value.message


# --------------------------------------------------------------------------------------------------
# Responses: lenient, and XCom-ready
# --------------------------------------------------------------------------------------------------


FULL_APPOINTMENT = {
    "appointmentId": APPOINTMENT,
    "status": "CONFIRMED",
    "timeSlot": {
        "startTime": "2026-12-01T09:00:00+01:00",
        "endTime": "2026-12-01T09:30:00+01:00",
        "roomHint": 3,
    },
    "branch": {
        "id": BRANCH,
        "name": "Main Street",
        "address": {"streetName": "Storgatan 1", "city": "Stockholm"},
    },
    "service": {"id": SERVICE, "name": "Passport"},
    "customer": {"personalIdentifier": "short", "firstName": FIRST, "email": EMAIL, "loyaltyLevel": "gold"},
    "numberOfReservations": 1,
    "notes": "bring ID",
    "expiresAt": None,
    "externalRef": "crm-42",
    "createdAt": "2026-11-20T10:00:00Z",
}


def test_appointment_parses_unknown_fields_and_feeds_xcom() -> None:
    appointment = Appointment.parse(FULL_APPOINTMENT)
    assert appointment.status_enum is AppointmentStatus.CONFIRMED
    assert appointment.branch is not None
    assert appointment.branch.address is not None
    assert not isinstance(appointment.branch.address, str)
    assert appointment.branch.address.city == "Stockholm"
    assert appointment.customer is not None
    assert appointment.customer.personal_identifier == "short"  # responses are not judged by request rules
    xcom = appointment.to_xcom()
    assert xcom == {
        "appointment_id": APPOINTMENT,
        "status": "CONFIRMED",
        "time_slot": {
            "start_time": "2026-12-01T09:00:00+01:00",
            "end_time": "2026-12-01T09:30:00+01:00",
            "room_hint": 3,
        },
        "branch": {
            "id": BRANCH,
            "name": "Main Street",
            "address": {"street_name": "Storgatan 1", "zip_code": None, "city": "Stockholm", "country": None},
            "location": None,
        },
        "service": {"id": SERVICE, "name": "Passport", "config": None},
        "customer": None,
        "number_of_reservations": 1,
        "notes": "bring ID",
        "support_notes": None,
        "expires_at": None,
        "external_ref": "crm-42",
        "created_at": "2026-11-20T10:00:00Z",
    }
    assert json.loads(json.dumps(xcom)) == xcom


def test_appointment_xcom_with_personal_data_on_request() -> None:
    xcom = Appointment.parse(FULL_APPOINTMENT).to_xcom(include_personal_data=True)
    assert xcom["customer"] == {
        "personal_identifier": "short",
        "first_name": FIRST,
        "last_name": None,
        "email": EMAIL,
        "phone_number": None,
        "date_of_birth": None,
        "loyalty_level": "gold",
    }
    json.dumps(xcom)


def test_appointment_with_only_an_id() -> None:
    appointment = Appointment.parse({"appointmentId": APPOINTMENT})
    assert (appointment.status, appointment.time_slot, appointment.branch, appointment.customer) == (
        None,
    ) * 4
    assert appointment.status_enum is None
    assert appointment.to_xcom()["appointment_id"] == APPOINTMENT


def test_reserved_appointment_has_an_aware_expiry() -> None:
    appointment = Appointment.parse(
        {
            "appointmentId": APPOINTMENT,
            "status": "RESERVED",
            "expiresAt": "2026-12-01T08:15:00Z",
            "customer": None,
        }
    )
    assert appointment.status_enum is AppointmentStatus.RESERVED
    assert appointment.expires_at == datetime(2026, 12, 1, 8, 15, tzinfo=timezone.utc)
    assert appointment.to_xcom()["expires_at"] == "2026-12-01T08:15:00+00:00"


def test_unknown_status_is_kept_as_text() -> None:
    appointment = Appointment.parse({"appointmentId": APPOINTMENT, "status": "NO_SHOW"})
    assert appointment.status == "NO_SHOW"
    assert appointment.status_enum is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("CONFIRMED", AppointmentStatus.CONFIRMED),
        (" cancelled ", AppointmentStatus.CANCELLED),
        ("x", None),
        (None, None),
    ],
)
def test_status_lenient(value: Any, expected: AppointmentStatus | None) -> None:
    assert AppointmentStatus.lenient(value) is expected


def test_naive_response_time_stays_naive() -> None:
    appointment = Appointment.parse(
        {"appointmentId": APPOINTMENT, "timeSlot": {"startTime": "2026-12-01T09:00:00"}}
    )
    assert appointment.time_slot is not None
    assert appointment.time_slot.start_time == datetime(2026, 12, 1, 9)
    assert appointment.to_xcom()["time_slot"] == {"start_time": "2026-12-01T09:00:00", "end_time": None}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"status": "CONFIRMED"}, "appointment_id"),
        ({"appointmentId": APPOINTMENT, "timeSlot": {"startTime": "soon"}}, "time_slot.start_time"),
        ({"appointmentId": APPOINTMENT, "numberOfReservations": "many"}, "number_of_reservations"),
        ({"appointmentId": APPOINTMENT, "branch": "Main"}, "branch"),
    ],
)
def test_broken_appointment_answer(data: dict[str, Any], field: str) -> None:
    with pytest.raises(QmaticError) as info:
        Appointment.parse(data)
    assert not isinstance(info.value, QmaticValidationError)  # a server problem, not the user's input
    assert info.value.field == field
    assert info.value.message.startswith("unexpected answer from Qmatic for an appointment: ")
    assert info.value.__context__ is None


def test_only_the_appointment_id_is_required_of_an_answer() -> None:
    with pytest.raises(QmaticError) as info:
        Appointment.parse({"timeSlot": {}})
    assert info.value.message == (
        "unexpected answer from Qmatic for an appointment: appointment_id: is missing from the answer"
    )
    assert Service.parse({"name": "Passport"}).id is None
    assert Branch.parse({"name": "Main"}).id is None
    assert Slot.parse({"endTime": "2026-12-01T09:30:00+01:00"}).start_time is None


def test_broken_answer_never_quotes_customer_data() -> None:
    with pytest.raises(QmaticError) as info:
        Appointment.parse({"customer": {"email": EMAIL, "firstName": FIRST}})
    assert EMAIL not in str(info.value)
    assert FIRST not in str(info.value)


@pytest.mark.parametrize("data", ["x", [FULL_APPOINTMENT], None])
def test_appointment_answer_must_be_an_object(data: Any) -> None:
    with pytest.raises(QmaticError, match="must be a JSON object"):
        Appointment.parse(data)


def test_parse_list() -> None:
    items = Appointment.parse_list([FULL_APPOINTMENT, {"appointmentId": APPOINTMENT, "status": "CANCELLED"}])
    assert [a.status_enum for a in items] == [AppointmentStatus.CONFIRMED, AppointmentStatus.CANCELLED]
    assert Branch.parse_list([]) == []
    with pytest.raises(QmaticError, match="expected a JSON array"):
        Branch.parse_list({"items": []})


# The search example of the public reschedule page (values replaced): no status, notes, expiresAt
# or personal identifier; a service config; the phone number as text.
PUBLIC_APPOINTMENT: dict[str, Any] = {
    "appointmentId": APPOINTMENT,
    "timeSlot": {"startTime": "2026-12-01T09:00:00+01:00", "endTime": "2026-12-01T09:30:00+01:00"},
    "customer": {
        "firstName": FIRST,
        "lastName": "Lastname",
        "phoneNumber": PHONE,
        "email": EMAIL,
        "dateOfBirth": DOB,
    },
    "service": {"id": SERVICE, "name": "Passport", "config": {"maxNumberOfReservations": 0}},
    "branch": {
        "id": BRANCH,
        "name": "Main",
        "address": {"streetName": "Storgatan 1", "zipCode": "11122", "city": "Stockholm", "country": "SE"},
        "location": {"longitude": 18.07, "latitude": 59.33},
    },
    "numberOfReservations": 1,
    "supportNotes": "ring the bell",
}


def test_appointment_in_the_public_shape() -> None:
    appointment = Appointment.parse(PUBLIC_APPOINTMENT)
    assert appointment.status is None
    assert appointment.status_enum is None
    assert appointment.expires_at is None
    assert appointment.notes is None
    assert appointment.support_notes == "ring the bell"
    assert appointment.service is not None
    assert appointment.service.config is not None
    assert appointment.service.config.max_number_of_reservations == 0
    assert appointment.branch is not None
    assert appointment.branch.location is not None
    assert appointment.branch.location.latitude == 59.33
    assert appointment.customer is not None
    assert appointment.customer.personal_identifier is None
    assert "ring the bell" not in repr(appointment)


def test_phone_number_in_an_answer_may_be_a_number() -> None:
    appointment = Appointment.parse({"appointmentId": APPOINTMENT, "customer": {"phoneNumber": 46812345}})
    assert appointment.customer is not None
    assert appointment.customer.phone_number == "46812345"


def test_finalized_is_a_known_status() -> None:
    appointment = Appointment.parse({"appointmentId": APPOINTMENT, "status": "FINALIZED"})
    assert appointment.status_enum is AppointmentStatus.FINALIZED


def test_unknown_status_is_kept_and_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="airflow_provider_qmatic.api.models")
    for _ in range(3):
        appointment = Appointment.parse({"appointmentId": APPOINTMENT, "status": "NO_SHOW_TEST"})
        assert appointment.status == "NO_SHOW_TEST"
        assert appointment.status_enum is None
    reports = [r for r in caplog.records if "NO_SHOW_TEST" in r.getMessage()]
    assert len(reports) == 1
    assert "does not know" in reports[0].getMessage()


def test_search_answer_may_be_one_object() -> None:
    (one,) = Appointment.parse_list(PUBLIC_APPOINTMENT, one_object_ok=True)
    assert one.appointment_id == APPOINTMENT
    assert Appointment.parse_list({}, one_object_ok=True) == []
    assert Appointment.parse_list([PUBLIC_APPOINTMENT], one_object_ok=True)[0].appointment_id == APPOINTMENT
    with pytest.raises(QmaticError, match="expected a JSON array"):
        Appointment.parse_list(PUBLIC_APPOINTMENT)
    with pytest.raises(QmaticError, match="appointment_id: is missing"):
        Appointment.parse_list({"items": []}, one_object_ok=True)


def test_customer_update_follows_the_customer_rules() -> None:
    update = CustomerUpdate.parse(customer(phone_number=PHONE, date_of_birth=DOB))
    assert update.to_wire() == {
        "personalIdentifier": PID,
        "firstName": FIRST,
        "lastName": LAST,
        "email": EMAIL,
        "phoneNumber": PHONE,
        "dateOfBirth": DOB,
    }
    for secret in (PID, FIRST, EMAIL, PHONE):
        assert secret not in repr(update)
    with pytest.raises(QmaticValidationError) as info:
        CustomerUpdate.parse(customer(email="no-at-sign"))
    assert info.value.field == "email"
    with pytest.raises(QmaticValidationError) as info:
        CustomerUpdate.parse({**customer(), "loyaltyLevel": "gold"})
    assert info.value.field == "loyaltyLevel"
    assert "not a field of a customer update" in info.value.message
    with pytest.raises(QmaticValidationError, match="phone_number: must be text, got a number"):
        CustomerUpdate.parse(customer(phone_number=46812345))


def test_appointment_repr_hides_the_customer() -> None:
    text = repr(Appointment.parse(FULL_APPOINTMENT))
    assert FIRST not in text
    assert EMAIL not in text
    assert APPOINTMENT in text


def test_branch() -> None:
    branch = Branch.parse(
        {
            "id": 7,
            "name": "Main",
            "timeZone": "Europe/Stockholm",
            "address": {
                "streetName": "Storgatan 1",
                "zipCode": "111 22",
                "city": "Stockholm",
                "country": "SE",
            },
            "location": {"longitude": 18.07, "latitude": 59.33},
            "phone": "08",
        }
    )
    assert branch.id == "7"
    assert branch.to_xcom() == {
        "id": "7",
        "name": "Main",
        "time_zone": "Europe/Stockholm",
        "address": {"street_name": "Storgatan 1", "zip_code": "111 22", "city": "Stockholm", "country": "SE"},
        "location": {"longitude": 18.07, "latitude": 59.33},
        "phone": "08",
    }
    # The first edition's text address and a branch with nothing but an id.
    assert Branch.parse({"id": BRANCH, "address": "Storgatan 1"}).address == "Storgatan 1"
    assert Branch.parse({"id": BRANCH}).to_xcom() == {
        "id": BRANCH,
        "name": None,
        "time_zone": None,
        "address": None,
        "location": None,
    }


def test_service_in_the_public_shape() -> None:
    service = Service.parse(
        {
            "id": SERVICE,
            "name": "Passport",
            "branch": {"id": BRANCH, "name": "Main"},
            "config": {"maxNumberOfReservations": 2},
        }
    )
    assert service.branch is not None
    assert service.branch.id == BRANCH
    assert service.max_reservations == 2
    assert service.duration_minutes is None
    assert service.to_xcom() == {
        "id": SERVICE,
        "name": "Passport",
        "branch": {"id": BRANCH, "name": "Main"},
        "config": {"max_number_of_reservations": 2},
        "duration_minutes": None,
    }


@pytest.mark.parametrize("config", [None, {}, {"maxNumberOfReservations": 0}])
def test_service_without_a_cap(config: dict[str, Any] | None) -> None:
    data: dict[str, Any] = {"id": SERVICE}
    if config is not None:
        data["config"] = config
    assert Service.parse(data).max_reservations is None


def test_service_with_the_first_edition_duration() -> None:
    service = Service.parse({"id": SERVICE, "name": "Passport", "durationMinutes": "30", "category": "ID"})
    assert service.duration_minutes == 30
    assert service.to_xcom()["category"] == "ID"


def test_service_group_keeps_whatever_comes() -> None:
    group = ServiceGroup.parse({"id": "g1", "name": "Passports", "services": [{"id": SERVICE}]})
    assert (group.id, group.name) == ("g1", "Passports")
    assert group.to_xcom()["services"] == [{"id": SERVICE}]
    assert ServiceGroup.parse({}).id is None


@pytest.mark.parametrize(
    ("available", "expected", "is_available"),
    [
        (3, 3, True),
        (0, 0, False),
        (True, True, True),
        (False, False, False),
        ("2", 2, True),
        ("true", True, True),
        (" FALSE ", False, False),
        (1.0, 1, True),
        (_DROP, None, True),
    ],
)
def test_slot_available_as_count_or_flag(available: Any, expected: Any, is_available: bool) -> None:
    data: dict[str, Any] = {"startTime": "2026-12-01T09:00:00+01:00", "endTime": "2026-12-01T09:30:00+01:00"}
    if available is not _DROP:
        data["available"] = available
    slot = Slot.parse(data)
    assert slot.available == expected
    assert type(slot.available) is type(expected)
    assert slot.is_available is is_available
    xcom = slot.to_xcom()
    assert xcom == {
        "start_time": "2026-12-01T09:00:00+01:00",
        "end_time": "2026-12-01T09:30:00+01:00",
        "available": expected,
    }
    json.dumps(xcom)


@pytest.mark.parametrize(
    "data", [{"startTime": "2026-12-01T09:00:00+01:00", "available": "maybe"}, {"startTime": "soon"}]
)
def test_broken_slot(data: dict[str, Any]) -> None:
    with pytest.raises(QmaticError, match="unexpected answer from Qmatic"):
        Slot.parse(data)


# --------------------------------------------------------------------------------------------------
# Import cost
# --------------------------------------------------------------------------------------------------


def test_importing_models_does_not_import_airflow() -> None:
    code = "import sys, airflow_provider_qmatic.api.models; print('airflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
