"""SlotQuery: the sensor's and the find operator's arguments, checked before any request, and which
listed slots match (times of day at the branch, weekdays, before a moment)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import pytest

from airflow_provider_qmatic.api.models import Slot
from airflow_provider_qmatic.api.slots import SlotQuery
from airflow_provider_qmatic.exceptions import QmaticValidationError
from tests.operators.conftest import PASSPORT, STOCKHOLM

CET = timezone(timedelta(hours=1))
IDS = {"branch_id": STOCKHOLM, "service_id": PASSPORT}


def slot(day: int, hour: int, minute: int = 0, available: Any = None) -> Slot:
    start = datetime(2026, 11, 30, hour, minute, tzinfo=CET) + timedelta(days=day)  # day 0: a Monday
    return Slot.parse(
        {
            "startTime": start.isoformat(),
            "endTime": (start + timedelta(minutes=15)).isoformat(),
            "available": available,
        }
    )


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"branch_id": "not-a-guid"}, "branch_id"),
        ({"date_from": "2026-12-05", "date_to": "2026-12-01"}, "date_to"),
        ({"time_from": "9 o'clock"}, "time_from"),
        ({"time_from": "12:00", "time_to": "09:00"}, "time_to"),
        ({"weekdays": ["mon", "funday"]}, "weekdays"),
        ({"weekdays": []}, "weekdays"),
        ({"min_slots": 0}, "min_slots"),
        ({"start_before": "2026-12-01T09:00:00"}, "start_before"),  # no offset: whose 09:00?
    ],
)
def test_bad_arguments_are_refused_naming_the_field(arguments: dict[str, Any], field: str) -> None:
    with pytest.raises(QmaticValidationError) as raised:
        SlotQuery.parse(**{**IDS, **arguments})
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")


def test_defaults_and_accepted_forms() -> None:
    query = SlotQuery.parse(
        **IDS, date_from="2026-12-01", weekdays="Monday, fri", time_from="09:30", min_slots="2"
    )
    assert (query.date_from, query.date_to) == (date(2026, 12, 1), date(2026, 12, 8))
    assert query.weekdays == (0, 4)
    assert query.time_from == time(9, 30)
    assert query.min_slots == 2
    assert SlotQuery.from_kwargs(query.to_kwargs()) == query


def test_matching_reads_the_branch_clock_weekdays_and_the_moment() -> None:
    listed = [
        slot(0, 8, 45),
        slot(0, 9),
        slot(0, 11, 45),
        slot(0, 12),
        slot(1, 9, available=0),  # full
        slot(1, 10),
        slot(4, 10),
    ]
    window = SlotQuery.parse(**IDS, time_from="09:00", time_to="12:00")
    assert [s.start_time.strftime("%a %H:%M") for s in window.matching(listed)] == [
        "Mon 09:00",
        "Mon 11:45",
        "Tue 10:00",
        "Fri 10:00",
    ]
    fridays = SlotQuery.parse(**IDS, weekdays=["fri"])
    assert [s.start_time.weekday() for s in fridays.matching(listed)] == [4]
    # The same instant written in UTC: slots from 10:00 CET on are not before it.
    earlier = SlotQuery.parse(**IDS, start_before="2026-12-01T09:00:00Z")
    assert [s.start_time.strftime("%a %H:%M") for s in earlier.matching(listed)] == [
        "Mon 08:45",
        "Mon 09:00",
        "Mon 11:45",
        "Mon 12:00",
    ]
    assert SlotQuery.parse(**IDS, min_slots=4).satisfied_by(earlier.matching(listed))
    assert not SlotQuery.parse(**IDS, min_slots=5).satisfied_by(earlier.matching(listed))
