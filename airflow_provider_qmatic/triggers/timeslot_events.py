"""QmaticTimeslotEventTrigger: watch a branch's service for free slots, for an ``AssetWatcher``.

Airflow 3 schedules a DAG on an asset whose watcher's trigger fires: each event of this trigger
becomes an asset event (its payload under ``extra["payload"]``), and the DAG runs. Airflow 2.11 has
no asset watchers, so this module does not import there (``BaseEventTrigger`` is missing); the
sensor and its trigger (:mod:`~airflow_provider_qmatic.triggers.timeslots`) work on both lines.

It polls as the sensor's trigger does, paced by the same per-tenant waiting budget and growing
interval, for as long as the DAG is scheduled on the asset.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_qmatic.compat import BaseEventTrigger, TriggerEvent
from airflow_provider_qmatic.exceptions import QmaticError
from airflow_provider_qmatic.triggers.timeslots import QmaticTimeslotTrigger

if TYPE_CHECKING:
    from airflow_provider_qmatic.api.slots import SlotQuery

log = logging.getLogger(__name__)


class QmaticTimeslotEventTrigger(QmaticTimeslotTrigger, BaseEventTrigger):  # type: ignore[misc]
    """An event whenever the watched window offers at least ``min_slots`` matching free slots that
    the previous poll did not list: the first poll that finds enough, and later each slot newly
    freed (a cancellation). The payload: ``{"status": "success", "branch_id", "service_id",
    "slots": [...]}`` (the find operator's XCom form, all matching slots, earliest first).

    A triggerer restart forgets what was listed, so the same slots may be announced again: a DAG
    run on the asset must be safe to run twice, as the example's booking is. A transient fault is
    logged and polling goes on; an error no retry can fix (an unknown id, a forbidden tenant, bad
    credentials) is logged, naming the field, and the watch ends.

    Takes the arguments of :class:`~airflow_provider_qmatic.triggers.timeslots.QmaticTimeslotTrigger`
    but the dates: a watch runs for months, so it looks at the ``days_ahead`` days from today (UTC)
    at each poll, and its serialized kwargs (which Airflow compares at every parse of the DAG file)
    do not change from one day to the next.

    :param days_ahead: days after today to look at (default 7).
    """

    def __init__(self, *, days_ahead: int = 7, **kwargs: Any) -> None:
        if "date_from" in kwargs or "date_to" in kwargs:
            raise ValueError(
                "QmaticTimeslotEventTrigger takes days_ahead, not date_from or date_to: a watch runs for "
                "months and fixed dates would go stale"
            )
        if isinstance(days_ahead, bool) or not isinstance(days_ahead, int) or not 0 <= days_ahead <= 366:
            raise ValueError(f"days_ahead must be a whole number of days from 0 to 366, got {days_ahead!r}")
        super().__init__(**kwargs)
        self.days_ahead = days_ahead

    def serialize(self) -> tuple[str, dict[str, Any]]:
        classpath, kwargs = super().serialize()
        del kwargs["date_from"], kwargs["date_to"]
        return classpath, {**kwargs, "days_ahead": self.days_ahead}

    def current_query(self) -> SlotQuery:
        today = datetime.now(timezone.utc).date()
        return replace(self.query, date_from=today, date_to=today + timedelta(days=self.days_ahead))

    async def run(self) -> AsyncIterator[Any]:
        listed: set[str] = set()
        async with aclosing(self.polls()) as polls:
            async for answer in polls:
                if isinstance(answer, QmaticError):
                    if answer.retryable:
                        log.warning(
                            "Qmatic slot watch (%s): %s; polling on", self.current_query().describe(), answer
                        )
                        continue
                    log.error("Qmatic slot watch (%s) ends: %s", self.current_query().describe(), answer)
                    return
                slots = self.query.xcom(answer)  # the ids are the query's; the days do not show
                starts = {str(s["start_time"]) for s in slots}
                new, listed = starts - listed, starts
                if new and self.query.satisfied_by(answer):
                    yield TriggerEvent(
                        {
                            "status": "success",
                            "branch_id": self.query.branch_id,
                            "service_id": self.query.service_id,
                            "slots": slots,
                        }
                    )
