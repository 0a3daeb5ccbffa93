"""Which listed time slots a caller wants, as plain data: :class:`SlotQuery`.

The find operator, the slot sensor and its triggers ask the same question (free slots of a service
at a branch between two days, perhaps only at some times of day, on some weekdays, and at least so
many of them), so it is checked once here, before any request, each refusal naming the argument
and the fix; and the matching slots get one XCom form (:meth:`SlotQuery.xcom`). A query travels
to the triggerer as :meth:`SlotQuery.to_kwargs`: JSON-safe values and nothing secret.

Times of day are the branch's wall clock: Qmatic lists a slot's start with the branch's offset, and
that local time is what is compared, so ``time_from="09:00"`` means 09:00 at the branch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from datetime import timezone as dt_timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_qmatic.exceptions import QmaticValidationError

if TYPE_CHECKING:
    from airflow_provider_qmatic.api.models import Slot

#: Days searched after ``date_from`` when ``date_to`` is not given.
DEFAULT_DAYS = 7
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True)
class SlotQuery:
    """A checked slot question. Build it with :meth:`parse` (arguments as a user gives them) or
    :meth:`from_kwargs` (as :meth:`to_kwargs` wrote them)."""

    branch_id: str
    service_id: str
    date_from: date
    date_to: date
    time_from: time | None = None
    time_to: time | None = None
    weekdays: tuple[int, ...] | None = None  # Monday is 0
    min_slots: int = 1
    start_before: datetime | None = None  # an instant: only slots that start earlier

    @classmethod
    def parse(
        cls,
        *,
        branch_id: Any,
        service_id: Any,
        date_from: Any = None,
        date_to: Any = None,
        time_from: Any = None,
        time_to: Any = None,
        weekdays: Any = None,
        min_slots: Any = 1,
        start_before: Any = None,
    ) -> SlotQuery:
        """Check every argument (rendered templates included); raises QmaticValidationError naming
        the first one at fault. ``date_from`` left out is today (UTC), ``date_to`` left out is
        :data:`DEFAULT_DAYS` days later."""
        from airflow_provider_qmatic.api.models import validate_guid

        first = as_date(date_from, "date_from") or datetime.now(dt_timezone.utc).date()
        last = as_date(date_to, "date_to") or first + timedelta(days=DEFAULT_DAYS)
        if last < first:
            raise QmaticValidationError(
                f"date_to: {last.isoformat()} is before date_from {first.isoformat()}; swap them",
                field="date_to",
            )
        start, end = _as_time(time_from, "time_from"), _as_time(time_to, "time_to")
        if start is not None and end is not None and end <= start:
            raise QmaticValidationError(
                f"time_to: {end:%H:%M} is not after time_from {start:%H:%M}; a slot matches when it "
                "starts at or after time_from and before time_to",
                field="time_to",
            )
        return cls(
            branch_id=validate_guid(branch_id, field="branch_id"),
            service_id=validate_guid(service_id, field="service_id"),
            date_from=first,
            date_to=last,
            time_from=start,
            time_to=end,
            weekdays=_as_weekdays(weekdays),
            min_slots=_as_count(min_slots, "min_slots", least=1) or 1,
            start_before=_as_instant(start_before, "start_before"),
        )

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> SlotQuery:
        """The query :meth:`to_kwargs` wrote (checked again: serialized kwargs may be edited)."""
        return cls.parse(**kwargs)

    def to_kwargs(self) -> dict[str, Any]:
        """JSON-safe arguments that rebuild this query (:meth:`from_kwargs`)."""
        return {
            "branch_id": self.branch_id,
            "service_id": self.service_id,
            "date_from": self.date_from.isoformat(),
            "date_to": self.date_to.isoformat(),
            "time_from": None if self.time_from is None else self.time_from.strftime("%H:%M"),
            "time_to": None if self.time_to is None else self.time_to.strftime("%H:%M"),
            "weekdays": None if self.weekdays is None else list(self.weekdays),
            "min_slots": self.min_slots,
            "start_before": None if self.start_before is None else self.start_before.isoformat(),
        }

    def matching(self, slots: Iterable[Slot]) -> list[Slot]:
        """The free slots that pass the filters, in the order listed."""
        found = []
        for slot in slots:
            start = slot.start_time
            if not slot.is_available:
                continue
            if (
                self.time_from is not None
                or self.time_to is not None
                or self.weekdays is not None
                or self.start_before is not None
            ):
                if start is None:
                    continue  # a slot without a start cannot be placed in a window
                if self.start_before is not None and start >= self.start_before:
                    continue
                clock = start.time().replace(tzinfo=None)
                if self.time_from is not None and clock < self.time_from:
                    continue
                if self.time_to is not None and clock >= self.time_to:
                    continue
                if self.weekdays is not None and start.weekday() not in self.weekdays:
                    continue
            found.append(slot)
        return found

    def satisfied_by(self, slots: Sequence[Slot]) -> bool:
        """Whether ``slots`` (already :meth:`matching`) are enough."""
        return len(slots) >= self.min_slots

    def xcom(self, slots: Iterable[Slot]) -> list[dict[str, Any]]:
        """Slots as the find operator returns them: ``{"branch_id", "service_id", "start_time",
        "end_time", "available"}``, times as ISO-8601 text with the branch's offset."""
        out = []
        for slot in slots:
            data = slot.to_xcom()
            out.append(
                {
                    "branch_id": self.branch_id,
                    "service_id": self.service_id,
                    "start_time": data.get("start_time"),
                    "end_time": data.get("end_time"),
                    "available": data.get("available"),
                }
            )
        return out

    def describe(self) -> str:
        """``branch ..., service ..., 2026-12-01 to 2026-12-08, 09:00-12:00, mon/wed`` for a log line."""
        parts = [
            f"branch {self.branch_id}",
            f"service {self.service_id}",
            f"{self.date_from.isoformat()} to {self.date_to.isoformat()}",
        ]
        if self.time_from is not None or self.time_to is not None:
            start = "00:00" if self.time_from is None else f"{self.time_from:%H:%M}"
            end = "24:00" if self.time_to is None else f"{self.time_to:%H:%M}"
            parts.append(f"starting {start}-{end} branch time")
        if self.weekdays is not None:
            parts.append("/".join(WEEKDAYS[day] for day in self.weekdays))
        if self.start_before is not None:
            parts.append(f"starting before {self.start_before.isoformat()}")
        return ", ".join(parts)


def as_date(value: Any, field: str) -> date | None:
    """A calendar day from a date, a datetime (its own day) or ISO text; None when not given."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                return date.fromisoformat(text)
            return datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00")).date()
        except ValueError:
            pass
    raise QmaticValidationError(
        f"{field}: must be a date such as 2026-12-01 (text, a date, a datetime, or a template such as "
        "'{{ ds }}')",
        field=field,
    )


def _as_count(value: Any, field: str, *, least: int) -> int | None:
    """A whole number of at least ``least`` (also as rendered text), or None/blank when not given."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    if number is None or number < least:
        raise QmaticValidationError(f"{field}: must be a whole number ({least} or more)", field=field)
    return number


def as_limit(value: Any) -> int | None:
    """The find operator's ``limit``: a whole number (0 or more), or None/blank for all."""
    try:
        return _as_count(value, "limit", least=0)
    except QmaticValidationError:
        raise QmaticValidationError(
            "limit: must be a whole number (0 or more), or None for all", field="limit"
        ) from None


def _as_instant(value: Any, field: str) -> datetime | None:
    """An aware moment from a ``datetime`` or ISO-8601 text with an offset; None when not given."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    found: datetime | None = None
    if isinstance(value, datetime):
        found = value
    elif isinstance(value, str):
        try:
            found = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            found = None
    if found is None or found.tzinfo is None or found.utcoffset() is None:
        raise QmaticValidationError(
            f"{field}: must be a moment with its offset, such as 2026-12-01T09:00:00+01:00 (text or an "
            "aware datetime)",
            field=field,
        )
    return found


def _as_time(value: Any, field: str) -> time | None:
    """A time of day from ``"09:30"`` (or ``"09:30:00"``) or a ``time``; None when not given."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, time):
        return value.replace(tzinfo=None)
    if isinstance(value, str):
        try:
            return time.fromisoformat(value.strip()).replace(tzinfo=None)
        except ValueError:
            pass
    raise QmaticValidationError(
        f"{field}: must be a time of day at the branch such as '09:30' (24-hour clock)", field=field
    )


def _as_weekdays(value: Any) -> tuple[int, ...] | None:
    """Weekdays as ``["mon", "fri"]``, ``"mon,fri"`` or numbers (Monday 0); None for every day."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    items = value.split(",") if isinstance(value, str) else value
    days: set[int] = set()
    try:
        for item in items:
            if isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 6:
                days.add(item)
            elif isinstance(item, str) and item.strip().lower() in (*WEEKDAYS, *_DAY_NAMES):
                days.add((*WEEKDAYS, *_DAY_NAMES).index(item.strip().lower()) % 7)
            else:
                raise TypeError
    except TypeError:
        days = set()
    if not days:
        raise QmaticValidationError(
            "weekdays: must name days such as ['mon', 'tue'] or 'mon,tue' (or numbers, Monday 0), "
            "or be None for every day",
            field="weekdays",
        )
    return tuple(sorted(days))
