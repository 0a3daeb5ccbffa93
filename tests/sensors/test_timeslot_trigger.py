"""QmaticTimeslotTrigger against the sandbox: what it serializes, when it fires, how it fails, and how
fast many of them poll one tenant together (counted at the sandbox)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import date, datetime, timezone
from typing import Any

import pytest

from airflow_provider_qmatic.api.models import BookingRequest
from airflow_provider_qmatic.hooks.qmatic import QmaticHook
from airflow_provider_qmatic.triggers.timeslots import QmaticTimeslotTrigger
from tests.operators.conftest import PASSPORT, STOCKHOLM, UNKNOWN_GUID, WRONG_TENANT_CONN, Sandbox, customer
from tests.operators.test_example_dags import ASSET_WATCHERS
from tests.sensors.conftest import FullSlot, paced_connection

pytestmark = pytest.mark.airflow

FAST = {"poll_interval": 0.05, "max_poll_interval": 0.2}


def first_event(trigger: QmaticTimeslotTrigger, within: float = 20.0) -> dict[str, Any]:
    """The trigger's first event's payload, as the triggerer would receive it."""

    async def first() -> Any:
        async for event in trigger.run():
            return event
        return None

    event = asyncio.run(asyncio.wait_for(first(), within))
    assert event is not None
    payload: dict[str, Any] = event.payload
    return payload


def test_serialized_kwargs_are_plain_hold_no_secret_and_rebuild_the_same_trigger(sandbox: Sandbox) -> None:
    trigger = QmaticTimeslotTrigger(
        branch_id=STOCKHOLM,
        service_id=PASSPORT,
        date_from="2026-12-01",
        date_to="2026-12-04",
        time_from="09:00",
        time_to="12:30",
        weekdays=["tue", "thu"],
        min_slots=2,
        start_before="2026-12-04T12:00:00+01:00",
        qmatic_conn_id="qmatic_default",
        poll_interval=30,
        max_poll_interval=600,
        waiting_share=0.25,
    )
    classpath, kwargs = trigger.serialize()

    assert classpath == "airflow_provider_qmatic.triggers.timeslots.QmaticTimeslotTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs  # plain JSON values only
    assert kwargs == {
        "branch_id": STOCKHOLM,
        "service_id": PASSPORT,
        "date_from": "2026-12-01",
        "date_to": "2026-12-04",
        "time_from": "09:00",
        "time_to": "12:30",
        "weekdays": [1, 3],
        "min_slots": 2,
        "start_before": "2026-12-04T12:00:00+01:00",
        "qmatic_conn_id": "qmatic_default",
        "poll_interval": 30.0,
        "max_poll_interval": 600.0,
        "waiting_share": 0.25,
    }
    assert QmaticTimeslotTrigger(**kwargs).serialize() == (classpath, kwargs)
    text = json.dumps(kwargs) + repr(trigger)
    for secret in sandbox.secrets():
        assert secret not in text


def test_fires_with_the_slot_a_cancellation_frees(sandbox: Sandbox, full_slot: FullSlot) -> None:
    trigger = QmaticTimeslotTrigger(**full_slot.window, **FAST)
    canceller = full_slot.free_one_when_polled(sandbox, polls=2)
    payload = first_event(trigger)
    canceller.join()

    assert payload == {
        "status": "success",
        "slots": [
            {
                "branch_id": STOCKHOLM,
                "service_id": PASSPORT,
                "start_time": full_slot.slot["startTime"],
                "end_time": full_slot.slot["endTime"],
                "available": None,  # the public shape lists free slots without a count
            }
        ],
    }
    assert sandbox.requests("timeslots") >= 3  # it waited: two polls found the slot full


def test_min_slots_and_weekday_filters_decide(sandbox: Sandbox, full_slot: FullSlot) -> None:
    """The window's day has more free slots after the full one; two are asked for and found, but
    none on a weekday the query leaves out."""
    window = {**full_slot.window, "time_to": None, "min_slots": 2}
    payload = first_event(QmaticTimeslotTrigger(**window, **FAST))
    starts = [s["start_time"] for s in payload["slots"]]
    assert len(starts) >= 2
    assert full_slot.slot["startTime"] not in starts

    day = QmaticTimeslotTrigger(**window).query.date_from.weekday()
    other_days = [d for d in range(7) if d != day]
    elsewhere = QmaticTimeslotTrigger(**{**window, "weekdays": other_days}, **FAST)
    with pytest.raises(TimeoutError):
        first_event(elsewhere, within=0.6)


@pytest.mark.parametrize(
    ("ids", "field"),
    [
        ({"branch_id": UNKNOWN_GUID, "service_id": PASSPORT}, "branch_id"),
        ({"branch_id": STOCKHOLM, "service_id": UNKNOWN_GUID}, "service_id"),
    ],
)
def test_an_unknown_id_ends_the_wait_at_once_naming_it(
    sandbox: Sandbox, ids: dict[str, str], field: str
) -> None:
    payload = first_event(QmaticTimeslotTrigger(**ids, **FAST))

    assert payload["status"] == "error"
    assert (payload["error"], payload["field"], payload["retryable"]) == ("QmaticNotFoundError", field, False)
    assert payload["message"].startswith(f"{field}: ")
    assert sandbox.requests("timeslots") == 1  # no second poll


def test_a_forbidden_tenant_ends_the_wait_at_once(sandbox: Sandbox) -> None:
    payload = first_event(
        QmaticTimeslotTrigger(
            branch_id=STOCKHOLM, service_id=PASSPORT, qmatic_conn_id=WRONG_TENANT_CONN, **FAST
        )
    )
    assert (payload["status"], payload["retryable"]) == ("error", False)
    assert payload["error"] == "QmaticForbiddenError"
    for secret in sandbox.secrets():
        assert secret not in json.dumps(payload)


def test_waiting_triggers_of_a_tenant_stay_within_their_share(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six triggers that would each poll 20 times a second, on a tenant of 1200 requests a minute:
    together they get half (one bucket of 600 a minute, burst 1), counted at the sandbox, and a
    booking made meanwhile goes through."""
    paced_connection(sandbox, monkeypatch, "qmatic_paced", 1200)
    never = {"branch_id": STOCKHOLM, "service_id": PASSPORT, "min_slots": 10**6}
    triggers = [
        QmaticTimeslotTrigger(
            **never, qmatic_conn_id="qmatic_paced", poll_interval=0.05, max_poll_interval=0.05
        )
        for _ in range(6)
    ]

    who = customer()

    def book() -> str:
        slot = sandbox.free_slots(limit=1)[0]
        request = BookingRequest.parse(
            {"branch_id": STOCKHOLM, "service_id": PASSPORT, "start_time": slot["startTime"], "customer": who}
        )
        return QmaticHook("qmatic_paced").book(request).appointment_id

    async def wait_all(seconds: float) -> str:
        async def drain(trigger: QmaticTimeslotTrigger) -> None:
            async for _ in trigger.run():
                pass

        waiting = [asyncio.ensure_future(drain(t)) for t in triggers]
        await asyncio.sleep(0.5)
        booked = await asyncio.wait_for(asyncio.to_thread(book), seconds - 0.5)
        await asyncio.wait(waiting, timeout=seconds - 0.5)
        return booked

    started = time.monotonic()
    booked = asyncio.run(wait_all(2.0))
    elapsed = time.monotonic() - started

    assert [a["appointmentId"] for a in sandbox.of_customer(who["personal_identifier"], "CONFIRMED")] == [
        booked
    ]

    polls = sandbox.requests("timeslots")
    share_per_second = (600 - 1) / 60  # the waiting bucket's refill (burst 1)
    assert polls <= 1 + elapsed * share_per_second + 1  # one more may be in flight at the cut
    assert polls >= 8  # they did poll, as fast as their share allows
    naive = 6 * elapsed / 0.05
    assert polls < naive / 3


needs_asset_watchers = pytest.mark.skipif(not ASSET_WATCHERS, reason="asset watchers exist from Airflow 3.0")


@needs_asset_watchers
def test_the_watchers_trigger_serializes_days_ahead_not_dates() -> None:
    from airflow_provider_qmatic.triggers.timeslot_events import QmaticTimeslotEventTrigger

    trigger = QmaticTimeslotEventTrigger(
        branch_id=STOCKHOLM, service_id=PASSPORT, days_ahead=14, time_from="08:00"
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_qmatic.triggers.timeslot_events.QmaticTimeslotEventTrigger"
    assert "date_from" not in kwargs
    assert "date_to" not in kwargs
    assert (kwargs["days_ahead"], kwargs["time_from"]) == (14, "08:00")
    assert QmaticTimeslotEventTrigger(**kwargs).serialize() == (classpath, kwargs)
    with pytest.raises(ValueError, match="days_ahead, not date_from"):
        QmaticTimeslotEventTrigger(branch_id=STOCKHOLM, service_id=PASSPORT, date_from="2026-12-01")


@needs_asset_watchers
def test_the_watcher_announces_a_freed_slot_and_keeps_watching(sandbox: Sandbox, full_slot: FullSlot) -> None:
    """Nothing while the window is full; an event when a cancellation frees its slot; then, with
    nothing new, no second event (the watch goes on)."""
    from airflow_provider_qmatic.triggers.timeslot_events import QmaticTimeslotEventTrigger

    window = {k: full_slot.window[k] for k in ("branch_id", "service_id", "time_from", "time_to")}
    # Up to the full slot's day: it is the first free slot, so no earlier day lists one.
    days = (date.fromisoformat(full_slot.window["date_to"]) - datetime.now(timezone.utc).date()).days
    trigger = QmaticTimeslotEventTrigger(**window, days_ahead=days, **FAST)
    events: list[dict[str, Any]] = []

    async def watch() -> None:
        async for event in trigger.run():
            events.append(event.payload)

    canceller = full_slot.free_one_when_polled(sandbox, polls=2)

    async def main() -> None:
        task = asyncio.ensure_future(watch())
        while not events:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # several more polls, all listing the same slot
        assert not task.done()  # still watching
        task.cancel()

    asyncio.run(asyncio.wait_for(main(), 20))
    canceller.join()
    assert len(events) == 1
    (event,) = events
    assert (event["status"], event["branch_id"], event["service_id"]) == ("success", STOCKHOLM, PASSPORT)
    assert [s["start_time"] for s in event["slots"]] == [full_slot.slot["startTime"]]
    assert sandbox.requests("timeslots") >= 5


def test_the_interval_grows_while_nothing_changes_and_resets_on_news(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """The intervals the trigger chose, as it logs them: from poll_interval up by half each
    unchanged answer to max_poll_interval; back to poll_interval once a slot of the window fills."""
    slot = sandbox.free_slots(limit=1)[0]
    day = slot["startTime"][:10]
    trigger = QmaticTimeslotTrigger(
        branch_id=STOCKHOLM,
        service_id=PASSPORT,
        date_from=day,
        date_to=day,
        min_slots=10**6,  # never enough: it keeps polling
        poll_interval=0.02,
        max_poll_interval=0.1,
    )

    async def main() -> None:
        task = asyncio.ensure_future(first_event_or_none(trigger))
        while sandbox.requests("timeslots") < 8:  # the interval has reached its cap
            await asyncio.sleep(0.05)
        for n in range(slot["available"]):  # the window's first slot fills: the listing changes
            await asyncio.to_thread(sandbox.book_directly, customer(str(n)), slot)
        polls = sandbox.requests("timeslots")
        while sandbox.requests("timeslots") < polls + 3:
            await asyncio.sleep(0.05)
        task.cancel()

    with caplog.at_level(logging.DEBUG, logger="airflow_provider_qmatic.triggers.timeslots"):
        asyncio.run(asyncio.wait_for(main(), 30))
    chosen = [
        (r.args[1], round(float(r.args[2]), 4))  # type: ignore[index]
        for r in caplog.records
        if r.name == "airflow_provider_qmatic.triggers.timeslots"
    ]
    assert chosen[:6] == [
        ("new", 0.02),
        ("unchanged", 0.03),
        ("unchanged", 0.045),
        ("unchanged", 0.0675),
        ("unchanged", 0.1),
        ("unchanged", 0.1),
    ]
    news = [i for i, (what, _) in enumerate(chosen) if what == "new"]
    assert len(news) == 2  # the first answer, and the one after the slot filled
    assert chosen[news[1]] == ("new", 0.02)
    assert chosen[news[1] - 1] == ("unchanged", 0.1)
    assert chosen[news[1] + 1 : news[1] + 2] == [("unchanged", 0.03)]


async def first_event_or_none(trigger: QmaticTimeslotTrigger) -> Any:
    async for event in trigger.run():
        return event
    return None
