"""Requests and responses of the Qmatic API as pydantic models, with rules that fail early and clearly.

Three callers shape this module:

* the client (plain Python) builds request bodies with ``to_wire()`` / ``reservation_body()`` /
  ``confirmation_body()`` and parses answers with ``Appointment.parse()`` and friends;
* the operators validate their arguments with ``BookingRequest.parse(...)`` before any network call;
* the bulk runner validates every row of a file the same way, before it sends anything, and reports
  ``row, error.field, error.message`` for the rows that fail.

So the request models are strict (Part A of the API notes: documented field rules, plus a few limits
chosen here and listed below), and the response models are lenient: a field Qmatic adds tomorrow,
or an optional one it leaves out, must never fail a task that has already booked something.

Every validation failure surfaces as one :class:`QmaticValidationError` (never a raw pydantic
``ValidationError``) whose message lists each failing ``field.path: rule; fix``, separated by
``" | "``, and whose ``field`` is the first failing path (``customer.email``,
``information_questions[0].answer``). Use ``Model.parse(...)``: calling a constructor or
``model_validate`` directly raises pydantic's error (with input values hidden). Messages never quote
a customer's personal data (identifier, names, email, phone, date of birth, notes, answers): they
describe the problem instead, because these messages end up in task logs, which many people can read
(GDPR). Short non-personal values (ids, times, counts) are quoted, since seeing the bad value is the
quickest way to fix it.

Limits chosen here where Qmatic documents none (each is a module constant):

* ``notes``: at most 4096 characters (:data:`NOTES_MAX`);
* ``number_of_reservations``: 1 to 100 (:data:`RESERVATIONS_MAX`), a guard against a typo that
  would hold a whole day's slots;
* ``phone_number``: at most 64 characters of digits, spaces, ``+``, ``-`` and parentheses;
* ``question_id``: non-blank, at most 255 characters;
* a service duration for :meth:`BookingRequest.with_end`: 1 to 1440 minutes.

Other choices:

* customer fields Qmatic may add per tenant are allowed and sent unchanged (a key that looks like a
  misspelt known field, such as ``First Name``, is refused instead);
* other request models refuse unknown keys, so a typo in an optional field cannot vanish silently;
* in CSV rows an empty cell means "not given"; both spellings of one field in one row is an error;
* a naive time given with ``timezone=`` that daylight saving time skips or repeats is refused;
* ``Appointment.to_xcom()`` leaves the customer out unless ``include_personal_data=True``: XCom is
  shown in Airflow's UI;
* a response that lacks a required field raises :class:`QmaticError` (the server broke the
  contract; it is not the user's input), never QmaticValidationError.

Wire format is camelCase; Python names are snake_case; both spellings are accepted on input.
Importing this module does not import Airflow.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta, tzinfo
from datetime import timezone as dt_timezone
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, TypeVar, get_args
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.alias_generators import to_camel, to_snake
from pydantic_core import PydanticCustomError

from airflow_provider_qmatic.exceptions import QmaticError, QmaticValidationError

log = logging.getLogger(__name__)

PERSONAL_IDENTIFIER_MIN = 10
PERSONAL_IDENTIFIER_MAX = 48
NAME_MAX = 255
EMAIL_MAX = 255
PHONE_MAX = 64
ANSWER_MAX = 2048
QUESTION_ID_MAX = 255
NOTES_MAX = 4096
RESERVATIONS_MAX = 100
DURATION_MAX_MINUTES = 24 * 60

EXAMPLE_GUID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
EXAMPLE_TIME = "2026-12-01T09:00:00+01:00"
EXAMPLE_ZONE = "Europe/Stockholm"

_GUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_PERSONAL_IDENTIFIER_PATTERN = re.compile(r"^[A-Za-z0-9]+$")
_PHONE_CHARS = frozenset("0123456789 +-()")
_DATE_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SHOW_MAX = 40
# Between the problems of one message. Rules themselves use "; " before their fix, so a different
# mark keeps "which field, what is wrong, what to do" readable when a row has several problems.
_SEPARATOR = " | "


# --------------------------------------------------------------------------------------------------
# Small helpers for messages
# --------------------------------------------------------------------------------------------------


def _rule(message: str, field: str | None = None) -> PydanticCustomError:
    """A broken rule, raised inside validators: pydantic collects it with every other failure of
    the same input, and :func:`_problems` turns it into ``field: message``. ``field`` names the
    field when the rule is checked at model level (for example "end after start")."""
    return PydanticCustomError("rule", "{rule}", {"rule": message, "field": field})


def _kind(value: Any) -> str:
    """Describe a value's type in words a data engineer reads, without quoting the value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def _show(value: Any) -> str:
    """Quote a short, non-personal value; long ones are cut so a message stays one readable line."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > _SHOW_MAX:
        text = text[:_SHOW_MAX] + "..."
    return repr(text)


def _describe_char(ch: str) -> str:
    """Name a character class without echoing personal data (a letter could be part of a name)."""
    if ch == " ":
        return "a space"
    if ch in "\t\r\n" or not ch.isprintable():
        return "a line break or control character"
    if ch.isascii() and not ch.isalnum():
        return repr(ch)
    if ch.isalpha():
        return "a non-ASCII letter"
    if ch.isdigit():
        return "a non-ASCII digit"
    return "a non-ASCII symbol"


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --------------------------------------------------------------------------------------------------
# Times
# --------------------------------------------------------------------------------------------------


def resolve_timezone(timezone: str | tzinfo | None) -> tzinfo | None:
    """Turn an IANA zone name into a tzinfo, or raise QmaticValidationError naming ``timezone``.

    A blank name counts as "no zone" (an unset Airflow Variable renders as an empty string); a
    tzinfo object (for example ``pendulum.timezone(...)``) is used as it is.
    """
    return _checked(_zone, timezone, "timezone")


def _zone(value: Any) -> tzinfo | None:
    if value is None or isinstance(value, tzinfo):
        return value
    if not isinstance(value, str):
        raise _rule(f"must be an IANA time zone name such as {EXAMPLE_ZONE!r} or 'UTC', got {_kind(value)}")
    name = value.strip()
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _rule(
            f"{_show(name)} is not a known IANA time zone name; use a name such as "
            f"{EXAMPLE_ZONE!r} or 'UTC' (region/city, spelled as in the tz database)"
        ) from None


def _zone_label(zone: tzinfo) -> str:
    return str(getattr(zone, "key", None) or getattr(zone, "name", None) or zone)


def _to_stdlib(value: datetime) -> datetime:
    """A plain ``datetime`` (pendulum's DateTime overrides arithmetic and formatting), to the second."""
    return datetime(
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        tzinfo=value.tzinfo,
        fold=value.fold,
    )


# Python 3.11+ reads nearly every ISO-8601 form; a name of its own lets a test stand in for 3.10.
_from_iso = datetime.fromisoformat


def _read_datetime_text(text: str) -> datetime | None:
    """Parse ISO-8601 text (also ``Z`` and a space separator); None if it is not a date and time."""
    if not re.search(r"\d[Tt ]\d", text):
        return None  # a date alone, a number, or free text: none of them names a moment
    try:
        return _from_iso(text)
    except ValueError:
        pass
    # Python 3.10's fromisoformat knows neither "Z" nor the basic format; pendulum's ISO parser
    # (strict ISO-8601, no guessing) covers both and returns naive values when no offset is given.
    import pendulum.parsing

    try:
        parsed = pendulum.parsing.parse(text)
    except Exception:
        return None
    if not isinstance(parsed, datetime):
        return None
    offset = parsed.utcoffset()
    fixed = None if offset is None else dt_timezone(offset)
    return _to_stdlib(parsed).replace(tzinfo=fixed)


def _aware_datetime(value: Any, zone: tzinfo | None) -> datetime:
    """Read a date and time that names one moment: an aware ``datetime`` (also pendulum's) or
    ISO-8601 text (``Z`` and a space separator too), to the second, as the wire format is.

    Qmatic wants times with an offset. A value without one is refused, unless ``zone`` is given:
    then the wall-clock time is read in that zone. Values that carry an offset keep it; ``zone``
    does not convert them. Raises a rule error (no field name: the model names it).
    """
    if isinstance(value, str):
        text = value.strip()
        parsed = _read_datetime_text(text)
        if parsed is None:
            if _DATE_PATTERN.fullmatch(text):
                raise _rule(
                    f"{_show(text)} is a date without a time of day; give the time too, "
                    f"for example {EXAMPLE_TIME}"
                )
            raise _rule(
                f"cannot read {_show(text)} as a date and time; write it as ISO-8601 with an offset, "
                f"for example {EXAMPLE_TIME}"
            )
    elif isinstance(value, datetime):
        parsed = value
    elif isinstance(value, date):
        raise _rule(
            f"{_show(value.isoformat())} is a date without a time of day; give a date and time, "
            f"for example {EXAMPLE_TIME}"
        )
    else:
        raise _rule(
            f"must be a date and time (ISO-8601 text such as {EXAMPLE_TIME}, or a timezone-aware "
            f"datetime), got {_kind(value)}"
        )
    result = _to_stdlib(parsed)
    if result.tzinfo is not None and result.utcoffset() is not None:
        return result
    naive = result.replace(tzinfo=None)
    shown = naive.isoformat(timespec="seconds")
    if zone is None:
        raise _rule(
            f"{shown} has no UTC offset, so the moment it names is ambiguous; add the offset "
            f"(for example {EXAMPLE_TIME}) or pass timezone= to the operator "
            f'(for example timezone="{EXAMPLE_ZONE}") to read it in that time zone'
        )
    return _localise(naive, zone)


def _localise(naive: datetime, zone: tzinfo) -> datetime:
    """Attach an IANA zone to a wall-clock time, refusing times that DST skips or repeats.

    A skipped time (spring forward) names no moment, and a repeated one (fall back) names two; either
    would book an appointment an hour away from what the file meant, so both are refused.
    """
    first = naive.replace(tzinfo=zone, fold=0)
    second = naive.replace(tzinfo=zone, fold=1)
    shown = naive.isoformat(timespec="seconds")
    label = _zone_label(zone)
    utc = dt_timezone.utc
    if first.astimezone(utc).astimezone(zone).replace(tzinfo=None) != naive:
        raise _rule(
            f"{shown} does not exist in {label}: the clocks skip it when daylight saving time starts; "
            "choose another time or give an explicit offset"
        )
    offset_a, offset_b = first.utcoffset(), second.utcoffset()
    if offset_a != offset_b:
        options = " or ".join(
            naive.replace(tzinfo=zone, fold=f).isoformat(timespec="seconds") for f in (0, 1)
        )
        raise _rule(
            f"{shown} happens twice in {label} (the clocks go back when daylight saving time ends); "
            f"give the offset to say which: {options}"
        )
    return first


def format_wire_datetime(value: datetime) -> str:
    """ISO-8601 to the second with the offset kept, as Qmatic documents: ``2026-12-01T09:00:00+01:00``.

    pydantic's own JSON form writes UTC as ``Z`` and keeps microseconds; this is the single format
    the provider sends, so requests are byte-for-byte predictable.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise QmaticValidationError(
            f"cannot send {value.isoformat(timespec='seconds')} to Qmatic: it has no UTC offset",
            field="datetime",
        )
    return _to_stdlib(value).isoformat(timespec="seconds")


def _add_minutes(start: datetime, minutes: int) -> datetime:
    """Elapsed-time addition: go through UTC so a DST change inside the slot cannot shift the end."""
    tz = start.tzinfo
    return (start.astimezone(dt_timezone.utc) + timedelta(minutes=minutes)).astimezone(tz)


def _duration(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _rule(f"must be a whole number of minutes, got {_kind(value)}")
    if not 1 <= value <= DURATION_MAX_MINUTES:
        raise _rule(
            f"must be from 1 to {DURATION_MAX_MINUTES} minutes, got {value}; "
            "use the service's duration (durationMinutes in the services list)"
        )
    return value


# A bulk file repeats the same few slot times on many rows: read each (text, zone) once. Only
# results are cached (a refused value raises each time); datetimes are immutable, so sharing is safe.
_aware_text = functools.lru_cache(maxsize=4096)(_aware_datetime)


def _time_field(value: Any, info: ValidationInfo) -> Any:
    """Field validator body for request times; the zone comes from ``parse(..., timezone=...)``."""
    context = info.context if isinstance(info.context, dict) else {}  # parse() passes a dict
    read = _aware_text if isinstance(value, str) else _aware_datetime
    return read(value, context.get("timezone"))


def _end_after_start(start: datetime | None, end: datetime | None, fix: str) -> None:
    if start is not None and end is not None and end <= start:
        raise _rule(
            f"must be after start_time (start {format_wire_datetime(start)}, end "
            f"{format_wire_datetime(end)}); {fix}",
            field="end_time",
        )


WireDateTime = Annotated[
    datetime,
    BeforeValidator(_time_field),
    PlainSerializer(format_wire_datetime, return_type=str, when_used="json"),
]
"""A request time: aware (or read in ``parse(..., timezone=...)``'s zone), serialised (JSON mode) as
:func:`format_wire_datetime` writes it."""


# --------------------------------------------------------------------------------------------------
# Field rules (each returns the clean value or raises a rule error with the rule and the fix)
# --------------------------------------------------------------------------------------------------


def _guid(value: Any) -> str:
    if isinstance(value, UUID):
        return str(value)
    if not isinstance(value, str):
        raise _rule(f"must be a GUID such as {EXAMPLE_GUID}, got {_kind(value)}")
    text = value.strip()
    if not _GUID_PATTERN.fullmatch(text):
        raise _rule(
            f"must be a GUID such as {EXAMPLE_GUID}, got {_show(text)}; copy the whole id as Qmatic shows it"
        )
    return text


def _stripped(value: Any, limit: int, fix: str = "; shorten it", *, numbers: tuple[type, ...] = ()) -> str:
    """Text (or a number of the types ``numbers``, as text), stripped, at most ``limit`` characters.
    Described, never quoted: it may be personal data."""
    if isinstance(value, numbers) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise _rule(f"must be text, got {_kind(value)}")
    text = value.strip()
    if len(text) > limit:
        raise _rule(f"must be at most {limit} characters, got {len(text)}{fix}")
    return text


def _text(value: Any, *, limit: int, what: str) -> str:
    """Required single-line text: personal data, so never quoted in a message."""
    text = _stripped(value, limit)
    if not text:
        raise _rule(f"must not be blank; give {what}")
    if not text.isprintable():
        raise _rule("must not contain line breaks, tabs or other control characters; remove them")
    return text


_name = partial(_text, limit=NAME_MAX)


def _long_text(value: Any, *, limit: int, what: str) -> str:
    """Free text that may span lines (notes, answers); may hold personal data, so never quoted."""
    return _stripped(value, limit, f"; shorten {what}", numbers=(int, float))


def _note(value: Any) -> str:
    return _long_text(value, limit=NOTES_MAX, what="the note")


# Request field types whose rule is the same wherever they appear.
Guid = Annotated[str, BeforeValidator(_guid)]
OptionalGuid = Annotated[str | None, BeforeValidator(_guid)]
Note = Annotated[str | None, BeforeValidator(_note)]


def _personal_identifier(value: Any) -> str:
    rule = f"must be {PERSONAL_IDENTIFIER_MIN} to {PERSONAL_IDENTIFIER_MAX} letters or digits (A-Z, a-z, 0-9)"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise _rule(
            f"{rule}, got a number; write it as text (in JSON, inside quotes) so leading zeros survive"
        )
    if not isinstance(value, str):
        raise _rule(f"{rule}, got {_kind(value)}")
    text = value.strip()
    length_ok = PERSONAL_IDENTIFIER_MIN <= len(text) <= PERSONAL_IDENTIFIER_MAX
    if length_ok and text.isascii() and text.isalnum():  # the common case, cheaply (bulk rows)
        return text
    bad = [(i + 1, ch) for i, ch in enumerate(text) if not (ch.isascii() and ch.isalnum())]
    if length_ok and not bad:
        return text
    parts: list[str] = []
    if not length_ok:
        parts.append(f"got {_count(len(text), 'character')}")
    if bad:
        listed = ", ".join(f"{_describe_char(ch)} at position {pos}" for pos, ch in bad[:3])
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        parts.append(f"it contains {listed}{more}")
    fix = (
        "remove separators such as '-' and spaces, and write accented letters without accents"
        if bad
        else "check that the whole identifier was copied"
    )
    raise _rule(f"{rule}, but " + " and ".join(parts) + f"; {fix}")


_SPACE = re.compile(r"\s")  # what str.isspace() calls whitespace


def _email(value: Any) -> str:
    rule = "must be an email address such as name@example.com"
    if not isinstance(value, str):
        raise _rule(f"{rule}, got {_kind(value)}")
    text = value.strip()
    if len(text) > EMAIL_MAX:
        raise _rule(f"must be at most {EMAIL_MAX} characters, got {len(text)}; check the address")
    problem = None
    ats = text.count("@")
    if _SPACE.search(text):
        problem = "it contains a space"
    elif not text.isprintable():
        problem = "it contains a control character"
    elif ats == 0:
        problem = "it has no '@'"
    elif ats > 1:
        problem = f"it has {ats} '@' signs (exactly one is allowed)"
    else:
        local, domain = text.split("@")
        if not local:
            problem = "it has nothing before the '@'"
        elif "." not in domain:
            problem = "the part after the '@' has no dot (as in example.com)"
        elif domain.startswith(".") or domain.endswith(".") or ".." in domain:
            problem = "the part after the '@' has an empty label (a dot at its start or end, or '..')"
    if problem:
        raise _rule(f"{rule}, but {problem}; correct the address")
    return text


def _phone(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        raise _rule("must be text, got a number; write it as text so a leading 0 or + survives")
    text = _stripped(value, PHONE_MAX)
    if not _PHONE_CHARS.issuperset(text):
        bad = [ch for ch in text if ch not in _PHONE_CHARS]
        first = _describe_char(bad[0]) if not bad[0].isalpha() else "a letter"
        raise _rule(
            "may contain only digits, spaces, '+', '-' and parentheses, but it contains "
            f"{first}{' and other characters' if len(set(bad)) > 1 else ''}; remove them "
            "(for example write +46 8 123 456 78)"
        )
    if not text.strip(" +-()"):  # every character is allowed, so whatever is left is a digit
        raise _rule("must contain at least one digit")
    return text


def _date_of_birth(value: Any) -> date:
    rule = "must be a date written YYYY-MM-DD, for example 1980-04-30"
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, date):
        born = value
    elif isinstance(value, str):
        text = value.strip()
        if not _DATE_PATTERN.fullmatch(text):
            raise _rule(f"{rule}; rewrite it in that form")
        try:
            born = date.fromisoformat(text)
        except ValueError:
            raise _rule(f"{rule}, but it is not a real calendar date; check the month and day") from None
    else:
        raise _rule(f"{rule}, got {_kind(value)}")
    # "Today" differs by up to a day around the world: allow tomorrow (UTC) so nobody born today
    # east of UTC is refused.
    if born > datetime.now(dt_timezone.utc).date() + timedelta(days=1):
        raise _rule("is in the future; check the year")
    return date(born.year, born.month, born.day)


# pydantic's lax int reads what a file or a template gives: 3, "3", " 3 ", "2.0" and 2.0, never 1.5.
_WHOLE_NUMBER = TypeAdapter(int)


def _reservations(value: Any) -> int:
    rule = f"must be a whole number from 1 to {RESERVATIONS_MAX}"
    if isinstance(value, bool):  # pydantic would read true as 1
        raise _rule(f"{rule}, got true/false")
    try:
        number: int = _WHOLE_NUMBER.validate_python(value)
    except ValidationError:
        shown = _show(value) if isinstance(value, (str, float)) else _kind(value)
        raise _rule(f"{rule}, got {shown}") from None
    if not 1 <= number <= RESERVATIONS_MAX:
        raise _rule(f"{rule}, got {number}; use 1 for one appointment")
    return number


def _service_list(value: Any) -> tuple[str, ...]:
    """Several services of one appointment: a list, JSON list text (a templated field, a JSON Lines
    cell) or text with ids separated by ``;`` (a CSV cell); at least one, each a GUID, none twice."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                value = json.loads(text)
            except ValueError:
                raise _rule(
                    'is not a JSON list of service ids; write ["<id>", "<id>"] or <id>;<id>'
                ) from None
        else:
            value = [part for part in text.split(";") if part.strip()]
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise _rule(f"must be a list of service ids (or text with ids separated by ';'), got {_kind(value)}")
    ids = tuple(_guid(item) for item in value)
    if not ids:
        raise _rule("names no service; give one or more service ids")
    if len(set(ids)) != len(ids):
        raise _rule("names a service twice; list each service once")
    return ids


ServiceList = Annotated[tuple[str, ...], BeforeValidator(_service_list)]


def _given(data: Mapping[str, Any], *keys: str) -> Any:
    """The first of ``keys`` given a value (blank text counts as not given, as in a CSV cell)."""
    for key in keys:
        value = data.get(key)
        if value is not None and not (isinstance(value, str) and not value.strip()):
            return value
    return None


# --------------------------------------------------------------------------------------------------
# Base classes
# --------------------------------------------------------------------------------------------------


_M = TypeVar("_M", bound="_Model")
_R = TypeVar("_R", bound="_RequestModel")
_T = TypeVar("_T", bound="_TimedRequest")
_P = TypeVar("_P", bound="_ResponseModel")
_V = TypeVar("_V")

_MISSING_HINTS: dict[str, str] = {
    "branch_id": "give the Qmatic branch id (a GUID)",
    "service_id": "give the Qmatic service id (a GUID)",
    "appointment_id": "give the appointment id (a GUID) that Qmatic returned when it was booked",
    "start_time": f"give the start, for example {EXAMPLE_TIME}",
    "end_time": f"give the end, for example {EXAMPLE_TIME}",
    "customer": "give the customer's personal_identifier, first_name, last_name and email",
    "personal_identifier": "give the customer's personal identifier (10 to 48 letters or digits)",
    "first_name": "give the customer's first name",
    "last_name": "give the customer's last name",
    "email": "give the customer's email address",
    "question_id": "give the id of the information question",
    "answer": "give the answer to the information question",
}


class _Model(BaseModel):
    """Shared settings: camelCase on the wire, snake_case in Python, both accepted on input."""

    # hide_input_in_errors: should anyone call the constructor or model_validate directly (parse()
    # is the intended door), pydantic's own message must not print personal data either.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, loc_by_alias=False, hide_input_in_errors=True
    )

    _label: ClassVar[str] = "value"


@functools.cache
def _field_keys(model: type[BaseModel]) -> tuple[dict[str, str], frozenset[str]]:
    """Field name and alias -> field name, and the aliases that differ from their field's name;
    once per model (bulk jobs parse two models per row)."""
    by_key: dict[str, str] = {}
    for field_name, info in model.model_fields.items():
        by_key[field_name] = field_name
        if info.alias:
            by_key[info.alias] = field_name
    return by_key, frozenset(key for key, name in by_key.items() if key != name)


class _RequestModel(_Model):
    """Strict: unknown keys are refused (a typo in an optional field would otherwise vanish silently).

    Build instances with :meth:`parse`, the one door that raises only QmaticValidationError and
    knows the ``timezone`` for naive times. Input rows often come from CSV, where an empty cell
    means "not given": blank text and None are treated as absent, so optional fields take their
    defaults and required ones report "required".
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _normalise_input(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        by_key, aliases = _field_keys(cls)
        if not aliases.isdisjoint(data):  # only a key other than the name can repeat a field
            seen: dict[str, str] = {}
            for key in data:
                name = by_key.get(key) if isinstance(key, str) else None
                if name in seen:
                    raise _rule(f"is given twice, as {seen[name]!r} and {key!r}; keep one", field=name)
                if name is not None:
                    seen[name] = key
        return {
            key: value
            for key, value in data.items()
            if key not in by_key or not (value is None or (isinstance(value, str) and not value.strip()))
        }

    @classmethod
    def parse(cls: type[_R], data: Mapping[str, Any] | _R, *, timezone: str | tzinfo | None = None) -> _R:
        """Validate a mapping (operator arguments, a CSV or JSON Lines row) into this model.

        :param data: field names in snake_case or camelCase; string values are converted
            ("1" -> 1, "2026-12-01T09:00:00+01:00" -> datetime).
        :param timezone: IANA zone name used for times written without an offset.
        :raises QmaticValidationError: listing every failing field; ``.field`` is the first.
        """
        zone = resolve_timezone(timezone)
        if isinstance(data, cls):
            return data
        if not isinstance(data, Mapping):
            raise QmaticValidationError(
                f"{_a(cls._label)} must be a mapping of field names to values, got {_kind(data)}"
            )
        error: QmaticValidationError
        try:
            return cls.model_validate(dict(data), context={"timezone": zone})
        except ValidationError as exc:
            error = to_qmatic_validation_error(exc, cls)
        raise error

    def to_wire(self) -> dict[str, Any]:
        """All set fields in camelCase, JSON-ready; datetimes as ``2026-12-01T09:00:00+01:00``."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class _Hidden:
    """Stands in for personal data in ``repr``: models get logged, and logs are widely readable."""

    def __repr__(self) -> str:
        return "<hidden>"


_HIDDEN = _Hidden()


class _PersonalData(BaseModel):
    """A model of personal data: ``repr`` names the fields that are set and hides every value."""

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name in type(self).model_fields:
            if getattr(self, name) is not None:
                yield name, _HIDDEN
        for key in self.model_extra or {}:
            yield str(key), _HIDDEN


# --------------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------------


class Customer(_PersonalData, _RequestModel):
    """The customer sent when a reservation is confirmed (Part A's documented rules).

    Unknown keys are allowed and sent to Qmatic unchanged (tenants can define extra customer
    fields; spell them as Qmatic does, in camelCase). Their values must be JSON values.
    ``repr`` hides every value: this is personal data.
    """

    model_config = ConfigDict(extra="allow")
    _label: ClassVar[str] = "customer"

    personal_identifier: Annotated[str, BeforeValidator(_personal_identifier)]
    first_name: Annotated[str, BeforeValidator(partial(_name, what="the customer's first name"))]
    last_name: Annotated[str, BeforeValidator(partial(_name, what="the customer's last name"))]
    email: Annotated[str, BeforeValidator(_email)]
    phone_number: Annotated[str | None, BeforeValidator(_phone)] = None
    date_of_birth: Annotated[date | None, BeforeValidator(_date_of_birth)] = None

    @model_validator(mode="after")
    def _check_extras(self) -> Customer:
        if not self.model_extra:
            return self
        known = {_squash(name): name for name in type(self).model_fields}
        for key, value in (self.model_extra or {}).items():
            # Extra keys pass through, but "First Name" or "phonenumber" is a misspelt known field,
            # which would otherwise reach Qmatic as an unknown key while the real field stays empty.
            near = known.get(_squash(str(key)))
            if near is not None:
                raise _rule(
                    f"looks like {near} but is spelled differently; write it as {near} or {to_camel(near)}",
                    field=str(key),
                )
            if not _is_json_value(value):
                raise _rule(
                    f"an extra customer field must hold text, a number, true/false, null, a list or an "
                    f"object, got {_kind(value)}",
                    field=str(key),
                )
        return self


class CustomerUpdate(Customer):
    """New customer details for an appointment (update customer, Part B): the six public fields,
    under :class:`Customer`'s rules. Unknown keys are refused: the page lists no other field, and a
    misspelt one would otherwise be dropped silently while the old value stays."""

    model_config = ConfigDict(extra="forbid")
    _label: ClassVar[str] = "customer update"


def _squash(name: str) -> str:
    return re.sub(r"[\s_\-.]", "", name).lower()


def _is_json_value(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _is_json_value(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return all(_is_json_value(v) for v in value)
    return False


def _question_id(value: Any) -> str:
    return _stripped(value, QUESTION_ID_MAX, "", numbers=(int,))


class InformationAnswer(_RequestModel):
    """An answer to one of the service's information questions (at most 2048 characters)."""

    _label: ClassVar[str] = "information answer"

    question_id: Annotated[str, BeforeValidator(_question_id)]
    answer: Annotated[str, BeforeValidator(partial(_long_text, limit=ANSWER_MAX, what="the answer"))] = Field(
        repr=False
    )


class _TimedRequest(_RequestModel):
    """Shared time rules of bookings and reschedules: aware times, end after start, end from duration."""

    if TYPE_CHECKING:  # declared by the subclasses, in the order their errors should be listed
        start_time: datetime
        end_time: datetime | None

    _end_fix: ClassVar[str] = "correct the times, or leave end_time out and fill it with with_end(duration)"

    @model_validator(mode="after")
    def _check_order(self: _T) -> _T:
        _end_after_start(self.start_time, self.end_time, self._end_fix)
        return self

    def with_end(self: _T, duration_minutes: int) -> _T:
        """A copy whose ``end_time`` is ``start_time + duration_minutes`` if it had none.

        An ``end_time`` given explicitly wins and the copy is unchanged: the caller said what it
        wanted. Use the service's ``duration_minutes`` (from the services list).
        """
        minutes = _checked(_duration, duration_minutes, "duration_minutes")
        if self.end_time is not None:
            return self
        return self.model_copy(update={"end_time": _add_minutes(self.start_time, minutes)})

    def time_slot(self) -> TimeSlot:
        """The slot to reserve; needs ``end_time`` (give it, or call :meth:`with_end` first)."""
        if self.end_time is None:
            raise QmaticValidationError(
                "end_time: is missing; give end_time, or call with_end(duration_minutes) with the "
                "service's duration before building the reservation",
                field="end_time",
            )
        return TimeSlot.model_construct(start_time=self.start_time, end_time=self.end_time)


class TimeSlot(_RequestModel):
    """A time slot to reserve: two aware times, end after start."""

    _label: ClassVar[str] = "time slot"

    start_time: WireDateTime
    end_time: WireDateTime

    @model_validator(mode="after")
    def _check_order(self) -> TimeSlot:
        _end_after_start(self.start_time, self.end_time, "correct the times")
        return self


class BookingRequest(_TimedRequest):
    """One appointment to book: reserve the slot, then confirm it with the customer (Part B).

    ``end_time`` may be left out when the service's duration is known: :meth:`with_end` fills it.
    """

    _label: ClassVar[str] = "booking request"

    branch_id: Guid
    service_id: Guid
    # Several services in one appointment (Qmatic's service combinations); service_id is then the
    # first of them. Given one, the booking is a single-service one.
    service_ids: ServiceList | None = None
    resource_id: OptionalGuid = None
    start_time: WireDateTime
    end_time: WireDateTime | None = None
    customer: Customer
    notes: Note = Field(default=None, repr=False)
    # People per service; a combination's reserve sends the sum over its services (Qmatic's rule).
    number_of_reservations: Annotated[int, BeforeValidator(_reservations)] = 1
    information_questions: list[InformationAnswer] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _one_or_several_services(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        several = _given(data, "service_ids", "serviceIds")
        if several is None:
            return data
        if _given(data, "service_id", "serviceId") is not None:
            raise _rule(
                "give service_id (one service) or service_ids (several in one appointment), not both",
                field="service_ids",
            )
        try:
            ids = _service_list(several)
        except PydanticCustomError as exc:
            raise _rule(exc.message(), field="service_ids") from None
        rest = {
            k: v for k, v in data.items() if k not in ("service_ids", "serviceIds", "service_id", "serviceId")
        }
        return {**rest, "service_id": ids[0], "service_ids": ids}

    @property
    def services(self) -> tuple[str, ...]:
        """Every service of the appointment: ``service_ids``, or ``(service_id,)``."""
        return self.service_ids or (self.service_id,)

    @property
    def combined(self) -> bool:
        """True for several services: the ``/serviceCombination/`` calls book it."""
        return len(self.services) > 1

    @field_validator("information_questions", mode="before")
    @classmethod
    def _check_questions(cls, value: Any) -> Any:
        # Also accept {question_id: answer}, the natural way to write answers in an operator call.
        if isinstance(value, Mapping):
            return [{"question_id": key, "answer": answer} for key, answer in value.items()]
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise _rule(
                "must be a list of {question_id, answer} objects or a mapping of question id to "
                f"answer, got {_kind(value)}"
            )
        return value

    def reservation_body(self) -> dict[str, Any]:
        """The reserve body (see :func:`_reservation_body`)."""
        return _reservation_body(
            self.branch_id,
            self.services,
            self.resource_id,
            self.time_slot(),
            self.notes,
            self.number_of_reservations * len(self.services),
        )

    def confirmation_body(self) -> dict[str, Any]:
        """The confirm body: ``{customer{...}, informationQuestions?: [{questionId, answer}]}``."""
        fields = {"customer", "information_questions"}
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True, include=fields)


class RescheduleRequest(_TimedRequest):
    """Move an appointment to a new time: reserve the new slot, then reschedule onto it (Part B).

    The service never changes (Qmatic treats that as a new appointment), so the new reservation
    reuses the appointment's branch and service: see :meth:`reservation_body_for`.
    """

    _label: ClassVar[str] = "reschedule request"

    appointment_id: Guid
    start_time: WireDateTime
    end_time: WireDateTime | None = None
    notes: Note = Field(default=None, repr=False)
    # The services of an appointment that has several (Qmatic's service combinations): they pick
    # the /serviceCombination/ calls. Never a change of service: they must be the appointment's.
    service_ids: ServiceList | None = None

    @property
    def services(self) -> tuple[str, ...]:
        """``service_ids``, or none given: the appointment's service, as it reads."""
        return self.service_ids or ()

    @property
    def combined(self) -> bool:
        """True for an appointment of several services: the ``/serviceCombination/`` calls move it."""
        return len(self.services) > 1

    def reservation_body_for(self, appointment: Appointment) -> dict[str, Any]:
        """The reserve body for the new slot, taking branch, service and count from the appointment
        (its ids checked as GUIDs, its count as a booking's); a combination's services are the
        request's, which must be those the appointment shows (when it shows them)."""
        branch_id = appointment.branch.id if appointment.branch else None
        if self.combined:
            shown = appointment.service_ids_shown
            if shown and not shown <= set(self.services):
                raise QmaticValidationError(
                    "service_ids: the appointment is for other services than service_ids; a "
                    "reschedule never changes the services (book a new appointment instead)",
                    field="service_ids",
                )
            service: str | tuple[str, ...] | None = self.services
        else:
            service = appointment.service.id if appointment.service else None
        for name, value in (("branch.id", branch_id), ("service.id", service)):
            if not value:
                raise QmaticValidationError(
                    f"{name}: the appointment Qmatic returned has none, so the new slot cannot be "
                    "reserved for it; fetch the appointment again",
                    field=name,
                )
        return _reservation_body(
            _checked(_guid, branch_id, "branch_id"),
            self.services if self.combined else _checked(_guid, service, "service_id"),
            None,
            self.time_slot(),
            self.notes,
            _checked(_reservations, appointment.number_of_reservations or 1, "number_of_reservations"),
        )


def _reservation_body(
    branch_id: str,
    service: str | tuple[str, ...],
    resource_id: str | None,
    slot: TimeSlot,
    notes: str | None,
    count: int,
) -> dict[str, Any]:
    """The reserve body (Part B) of a booking or a reschedule's new slot.

    ``{branchId, serviceId, requestedResourceId?, timeSlot{startTime, endTime}, notes?,
    numberOfReservations}``; ``numberOfReservations`` is always sent (required, default 1). Several
    services (a combination's reserve) go as ``serviceIds[]`` instead of ``serviceId``.
    """
    body: dict[str, Any] = {"branchId": branch_id}
    if isinstance(service, tuple) and len(service) > 1:
        body["serviceIds"] = list(service)
    else:
        body["serviceId"] = service if isinstance(service, str) else service[0]
    if resource_id is not None:
        body["requestedResourceId"] = resource_id
    body["timeSlot"] = slot.to_wire()
    if notes:
        body["notes"] = notes
    body["numberOfReservations"] = count
    return body


class CancelRequest(_RequestModel):
    """An appointment to cancel; only its id, which goes in the URL path."""

    _label: ClassVar[str] = "cancel request"

    appointment_id: Guid


def _checked(rule_fn: Callable[[Any], _V], value: Any, field: str) -> _V:
    """Apply a field rule outside a model, raising the provider's error named after ``field``."""
    try:
        return rule_fn(value)
    except PydanticCustomError as rule:
        error = QmaticValidationError(f"{field}: {rule.message()}", field=field)
    raise error


def validate_service_ids(value: Any, *, field: str = "service_ids") -> tuple[str, ...]:
    """Several services checked outside a model (the find operator's ``service_ids``): a list, JSON
    list text or ids separated by ``;``, each a GUID, none twice."""
    return _checked(_service_list, value, field)


def validate_guid(value: Any, *, field: str) -> str:
    """A GUID argument checked outside a model (e.g. an operator's ``branch_id``), named ``field``."""
    return _checked(_guid, value, field)


# --------------------------------------------------------------------------------------------------
# Responses (lenient)
# --------------------------------------------------------------------------------------------------


class AppointmentStatus(str, Enum):
    """The statuses Part B names: CONFIRMED and FINALIZED are public, the others guesses. Responses
    keep ``status`` as text: Qmatic may send others (reported, never a crash)."""

    RESERVED = "RESERVED"
    CONFIRMED = "CONFIRMED"
    FINALIZED = "FINALIZED"
    CANCELLED = "CANCELLED"
    RELEASED = "RELEASED"
    EXPIRED = "EXPIRED"

    def __str__(self) -> str:  # the wire value in messages and f-strings, on every Python
        return self.value

    @classmethod
    def lenient(cls, value: Any) -> AppointmentStatus | None:
        """The matching member (case-insensitive), or None for a status this version does not know."""
        if not isinstance(value, str):
            return None
        try:
            return cls(value.strip().upper())
        except ValueError:
            return None


def _lenient_datetime(value: Any) -> Any:
    """Responses: ISO text with or without an offset; a value without one stays naive (no guessing)."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, str):
        parsed = _read_datetime_text(value.strip())
        if parsed is not None:
            return _to_stdlib(parsed)
        raise _rule(f"is not an ISO-8601 date and time, such as {EXAMPLE_TIME}")
    raise _rule(f"must be ISO-8601 date-and-time text, got {_kind(value)}")


# What an id from the server may be, since ids go back into URL paths (confirm, get, release):
# one path segment of unreserved characters, never "." or "..", so it names a resource and can
# never change the path. Qmatic's ids are GUIDs, which fit.
_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._~-]{0,127}")


def _id_text(value: Any) -> Any:
    """Ids as text, even when a gateway sends a number; checked safe for a URL path."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and not _SAFE_ID.fullmatch(value):
        # The value is not quoted: it came from a server that is misbehaving.
        raise _rule(
            "is not a usable id (1-128 letters, digits, '-', '_', '.' or '~', as in a GUID); it is not "
            "sent back to Qmatic"
        )
    return value


LenientDateTime = Annotated[
    datetime,
    BeforeValidator(_lenient_datetime),
    PlainSerializer(lambda value: value.isoformat(timespec="seconds"), return_type=str, when_used="json"),
]
IdText = Annotated[str, BeforeValidator(_id_text)]


class _ResponseModel(_Model):
    """Lenient: unknown fields are kept (and reach XCom), optional ones may be missing."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @classmethod
    def parse(cls: type[_P], data: Any) -> _P:
        """Parse one object of a Qmatic answer.

        :raises QmaticError: when the answer lacks a required field or has one of the wrong type
            (a broken or unexpected server, not bad user input).
        """
        if not isinstance(data, Mapping):
            raise QmaticError(
                f"unexpected answer from Qmatic: {_a(cls._label)} must be a JSON object, got {_kind(data)}"
            )
        error: QmaticError
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = _problems(exc, cls, response=True)
            error = QmaticError(
                f"unexpected answer from Qmatic for {_a(cls._label)}: "
                + _SEPARATOR.join(f"{p}: {r}" for p, r in problems),
                field=problems[0][0] if problems else None,
            )
        raise error

    @classmethod
    def parse_list(cls: type[_P], data: Any, *, one_object_ok: bool = False) -> list[_P]:
        """Parse a JSON array of these objects (list endpoints and search).

        :param one_object_ok: also take one object as a one-item list, and an empty object as an
            empty list (the public search example answers one object, not an array).
        """
        if one_object_ok and isinstance(data, Mapping):
            return [cls.parse(data)] if data else []
        if not isinstance(data, list):
            raise QmaticError(
                f"unexpected answer from Qmatic: expected a JSON array of {cls._label} objects, "
                f"got {_kind(data)}"
            )
        return [cls.parse(item) for item in data]

    @model_serializer(mode="wrap")
    def _snake_case_extras(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Fields Qmatic adds (kept as sent, camelCase) get snake_case keys like the known ones."""
        data: dict[str, Any] = handler(self)
        for key in self.model_extra or {}:
            value = data.pop(key)
            data.setdefault(to_snake(str(key)), value)
        return data

    def to_xcom(self) -> dict[str, Any]:
        """JSON-ready dict for XCom: snake_case keys (also for unknown fields), times with offset."""
        return self.model_dump(mode="json")


class NamedRef(_ResponseModel):
    """A branch or service as embedded in an answer: ``id``, ``name`` and whatever else comes."""

    _label: ClassVar[str] = "reference"

    id: IdText | None = None
    name: str | None = None


class ServiceConfig(_ResponseModel):
    """A service's ``config``: ``maxNumberOfReservations`` caps a reservation's
    ``numberOfReservations`` when above 0 (0, in every public example, sets no cap here)."""

    _label: ClassVar[str] = "service config"

    max_number_of_reservations: int | None = None


class Address(_ResponseModel):
    """A branch's postal address as the public examples show it."""

    _label: ClassVar[str] = "address"

    street_name: str | None = None
    zip_code: str | None = None
    city: str | None = None
    country: str | None = None


class Location(_ResponseModel):
    """A branch's coordinates."""

    _label: ClassVar[str] = "location"

    longitude: float | None = None
    latitude: float | None = None


class BranchRef(NamedRef):
    """The branch embedded in an appointment: ``{id, name, address?, location?}``."""

    _label: ClassVar[str] = "branch"

    # Text is the first edition's form; the public examples show an object.
    address: Address | str | None = None
    location: Location | None = None


class ServiceRef(NamedRef):
    """The service embedded in an appointment: ``{id, name, config?{maxNumberOfReservations}}``."""

    _label: ClassVar[str] = "service"

    config: ServiceConfig | None = None


class AppointmentTimeSlot(_ResponseModel):
    """An appointment's time slot as Qmatic returns it: parsed, not judged (see :class:`TimeSlot`)."""

    _label: ClassVar[str] = "time slot"

    start_time: LenientDateTime | None = None
    end_time: LenientDateTime | None = None


def _number_as_text(value: Any) -> Any:
    """The page's table types ``phoneNumber`` as an integer while its examples are text: keep text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


class CustomerInfo(_PersonalData, _ResponseModel):
    """A customer as Qmatic returns it: no request rules applied; ``repr`` hides every value.

    Public answers show the names, email, phone number and date of birth, never the personal
    identifier."""

    _label: ClassVar[str] = "customer"

    personal_identifier: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone_number: Annotated[str | None, BeforeValidator(_number_as_text)] = None
    date_of_birth: str | None = None


# Status values already reported in this process: a bulk job reads thousands of answers, and one
# warning per unknown value says all there is to say.
_REPORTED_STATUSES: set[str] = set()


class Appointment(_ResponseModel):
    """An appointment (reserve, confirm, get, search, reschedule answers).

    Only ``appointmentId`` is required. No public example shows ``status``, ``notes`` or
    ``expiresAt``, so the flows never depend on them (see ``flows.py``); an unknown ``status`` is
    kept as text and reported once in the log.
    """

    _label: ClassVar[str] = "appointment"

    appointment_id: IdText
    status: str | None = None
    time_slot: AppointmentTimeSlot | None = None
    branch: BranchRef | None = None
    service: ServiceRef | None = None
    # An appointment of several services (Part B: beside or instead of ``service``).
    services: list[ServiceRef] | None = None
    customer: CustomerInfo | None = None
    number_of_reservations: int | None = None
    notes: str | None = Field(default=None, repr=False)
    support_notes: str | None = Field(default=None, repr=False)
    expires_at: LenientDateTime | None = None

    @model_validator(mode="after")
    def _report_unknown_status(self) -> Appointment:
        if self.status is not None and self.status_enum is None:
            shown = _show(self.status)
            if shown not in _REPORTED_STATUSES:
                _REPORTED_STATUSES.add(shown)
                log.warning(
                    "Qmatic answered appointment status %s, which this provider version does not know; "
                    "it is kept as text and no decision is made on it",
                    shown,
                )
        return self

    @property
    def service_ids_shown(self) -> frozenset[str]:
        """The ids of the services the answer shows: ``services[]``, else ``service`` (may be empty)."""
        if self.services:
            return frozenset(s.id for s in self.services if s.id)
        return frozenset({self.service.id}) if self.service is not None and self.service.id else frozenset()

    @property
    def status_enum(self) -> AppointmentStatus | None:
        """``status`` as :class:`AppointmentStatus`, or None if absent or unknown to this version."""
        return AppointmentStatus.lenient(self.status)

    def to_xcom(self, *, include_personal_data: bool = False) -> dict[str, Any]:
        """JSON-ready dict for XCom; the customer is left out (``None``) unless asked for.

        XCom values are stored in Airflow's database and shown in its UI to everyone who can see the
        DAG; the customer's personal data stays out of them unless a task really needs it there.
        """
        out = self.model_dump(mode="json")
        if out.get("services") is None:
            del out["services"]  # a single service's appointment keeps the form it always had
        if not include_personal_data:
            out["customer"] = None
        return out


class Branch(BranchRef):
    """A branch from the branches list: ``{id, name, timeZone?, address?, location?}``."""

    time_zone: str | None = None


class Service(ServiceRef):
    """One item of the tenant-wide services list: ``{id, name, branch{id, name}, config?,
    durationMinutes?}``, one item per service and branch. No public example shows a duration."""

    branch: NamedRef | None = None
    duration_minutes: int | None = None

    @property
    def max_reservations(self) -> int | None:
        """The cap on ``numberOfReservations``, or None when the service sets none (absent or 0)."""
        cap = self.config.max_number_of_reservations if self.config is not None else None
        return cap if cap is not None and cap > 0 else None


class ServiceGroup(NamedRef):
    """A service group. No public page shows the listing's answer, so every field is optional and
    whatever comes is kept."""

    _label: ClassVar[str] = "service group"


def _available(value: Any) -> Any:
    """The contract says ``available``; deployments send a count or a flag; accept both."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "false"):
            return text == "true"
        if text.isdigit():
            return int(text)
    raise _rule(f"must be a count or true/false, got {_kind(value)}")


class Slot(AppointmentTimeSlot):
    """A free time slot: ``{startTime, endTime, available}``."""

    available: Annotated[bool | int | None, BeforeValidator(_available)] = None

    @property
    def is_available(self) -> bool:
        """True unless Qmatic says the slot is full (``false`` or ``0``); a missing value means free."""
        return self.available is None or bool(self.available)


def _service_id_list(value: Any) -> Any:
    """A list of service ids. The public example lists GUID strings; an item given as a service
    object ``{id, ...}`` is taken by its id, so either plausible form parses."""
    if value is None:
        return []
    if isinstance(value, list):
        return [item.get("id") if isinstance(item, Mapping) else item for item in value]
    return value


ServiceIds = Annotated[list[IdText], BeforeValidator(_service_id_list)]


class ServiceCombination(_ResponseModel):
    """One combination set of a branch: services that need the same ``resourceTypeId`` and may
    share one appointment (``combinableServices``), those that may not (``unCombinableServices``)
    and ``combinedServices``, whose meaning no public page explains (kept, never decided on)."""

    _label: ClassVar[str] = "service combination"

    resource_type_id: IdText | None = None
    combinable_services: ServiceIds = Field(default_factory=list)
    un_combinable_services: ServiceIds = Field(default_factory=list)
    combined_services: ServiceIds = Field(default_factory=list)


class BranchCombinations(_ResponseModel):
    """One item of ``GET /serviceCombination/branch``: ``{branchId, serviceCombinations[]}``."""

    _label: ClassVar[str] = "branch combinations"

    branch_id: IdText | None = None
    service_combinations: list[ServiceCombination] = Field(default_factory=list)

    def combinable(self, service_ids: Sequence[str]) -> bool:
        """True when one combination set lists every one of ``service_ids`` as combinable (Qmatic:
        only services needing the same resource type combine)."""
        wanted = set(service_ids)
        return any(wanted <= set(c.combinable_services) for c in self.service_combinations)


# --------------------------------------------------------------------------------------------------
# pydantic ValidationError -> QmaticValidationError
# --------------------------------------------------------------------------------------------------


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _resolve(
    root: type[BaseModel] | None, loc: Sequence[int | str]
) -> tuple[str, type[BaseModel] | None, str | None]:
    """Dotted path of an error location (field names: ``loc_by_alias`` is off), the model that
    holds its last part, and that part."""
    path = ""
    current: type[BaseModel] | None = root
    parent: type[BaseModel] | None = root
    last: str | None = None
    for item in loc:
        if isinstance(item, int):
            path += f"[{item}]"
            continue
        parent, last = current, str(item)
        info = current.model_fields.get(last) if current is not None else None
        current = _nested_model(info.annotation) if info is not None else None
        path = f"{path}.{last}" if path else last
    return path, parent, last


def _problems(
    exc: ValidationError, root: type[BaseModel] | None, *, response: bool = False
) -> list[tuple[str, str]]:
    """Each failure as ``(field.path, rule)``; values are described, never quoted from the input."""
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False):
        loc: tuple[int | str, ...] = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        kind = err["type"]
        if kind == "rule" and ctx.get("field"):
            loc = (*loc, ctx["field"])
        path, parent, last = _resolve(root, loc)
        if kind == "rule":
            rule = str(ctx["rule"])
        elif kind == "missing" and response:
            rule = "is missing from the answer"
        elif kind == "missing":
            hint = _MISSING_HINTS.get(last or "", "add a value")
            rule = f"is required but missing or empty; {hint}"
        elif kind == "extra_forbidden":
            label = getattr(parent, "_label", "value")
            known = ", ".join(parent.model_fields) if parent is not None else ""
            rule = f"is not a field of {_a(label)}; check the spelling" + (
                f" (known fields: {known})" if known else ""
            )
        elif kind in ("model_type", "model_attributes_type", "dict_type", "mapping_type"):
            rule = f"must be an object of named fields, got {_kind(err.get('input'))}"
        elif kind == "list_type":
            rule = f"must be a list, got {_kind(err.get('input'))}"
        else:
            # pydantic's own wording names the rule without quoting the input value.
            message = str(err.get("msg", "is invalid"))
            rule = message[:1].lower() + message[1:]
        problems.append((path or "(input)", rule))
    return problems


def to_qmatic_validation_error(
    exc: ValidationError, model: type[BaseModel] | None = None
) -> QmaticValidationError:
    """Turn pydantic's error into the provider's: ``field.path: rule`` per failure, ``field`` = first.

    Raise the result outside the ``except`` block (or ``from None``): pydantic's error quotes the
    input, personal data included, and a chained exception would print it in the task log.

    :param exc: the pydantic error.
    :param model: the model validated, to name fields in snake_case and list known fields.
    """
    problems = _problems(exc, model)
    label = getattr(model, "_label", None) or "input"
    message = f"invalid {label}: " + _SEPARATOR.join(f"{path}: {rule}" for path, rule in problems)
    return QmaticValidationError(message, field=problems[0][0] if problems else None)
