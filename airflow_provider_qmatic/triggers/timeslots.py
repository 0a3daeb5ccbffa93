"""Waiting for free time slots in Airflow's triggerer: :class:`QmaticTimeslotTrigger` (behind the
deferred :class:`~airflow_provider_qmatic.sensors.timeslots.QmaticTimeslotAvailableSensor`) and
:class:`QmaticTimeslotEventTrigger` (an asset watcher's, Airflow 3).

One implementation of a request
-------------------------------
Each poll is the hook's own synchronous call (:func:`find_slots`), run on a thread with
``asyncio.to_thread``: the deadlines, refused redirects, redaction, retry predicate, token cache
and request budget are the client's, not a second async copy of them, and the triggerer's event
loop never blocks on the network. The connection is read by id in the triggerer (the trigger's
serialized kwargs hold ids, dates, filters and poll settings, never a secret), and the token cache
and budget are the connection's own (``credential_cache``): shared with every task process of the
host, or of the cluster with ``redis``.

Pacing
------
Every waiter of a tenant (deferred triggers, sensors poking on workers, asset watchers) takes a
request from the tenant's *waiting budget* before each poll
(:func:`~airflow_provider_qmatic.state.waiting_budget`: ``waiting_share`` of
``requests_per_minute``, half by default, one bucket per tenant in the same place as the tenant's
budget), and then, like any call, from the tenant's budget itself. So however many wait, together
they spend at most that share, and bookings always find the other half. A trigger waits for its
turn with ``asyncio.sleep``, holding no thread.

Each trigger also slows down on its own: after a poll whose answer (every slot listed, with its
places) is the same as the last one, the next poll comes ``GROWTH`` times later, up to
``max_poll_interval``; an answer that changed (someone booked or cancelled in the window) brings the
interval back to ``poll_interval``, since more changes tend to follow.

Errors
------
A refusal that no retry can fix (an unknown branch or service: 404; a forbidden tenant: 403; bad
credentials: 401; a bad argument) ends the wait with an ``error`` event naming the field at fault
(a 404 is told apart by one read of the services list). Transient faults are retried by the
client as the hook always does; one that outlasts those retries ends the wait too, as a retryable
error, so the task's own ``retries`` apply, exactly as when the sensor pokes on a worker.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from airflow_provider_qmatic import DEFAULT_CONN_ID
from airflow_provider_qmatic.api.slots import SlotQuery
from airflow_provider_qmatic.compat import BaseTrigger, TriggerEvent
from airflow_provider_qmatic.exceptions import QmaticError, QmaticNotFoundError

if TYPE_CHECKING:
    from airflow_provider_qmatic.api.models import Slot
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook
    from airflow_provider_qmatic.state.budget import RateLimiter

log = logging.getLogger(__name__)

DEFAULT_POLL_INTERVAL = 60.0
DEFAULT_MAX_POLL_INTERVAL = 300.0
#: How much longer the next poll waits after an unchanged answer.
GROWTH = 1.5


def find_slots(hook: QmaticHook, query: SlotQuery) -> list[Slot]:
    """One listing of ``query``'s slots through the hook (every slot, free or not); a 404 becomes a
    QmaticNotFoundError naming ``branch_id`` or ``service_id`` where one read of the services list
    can tell which."""
    try:
        return hook.find_timeslots(query.branch_id, query.service_id, query.date_from, query.date_to)
    except QmaticNotFoundError as exc:
        raise _which_id(hook, query, exc) from None


def _which_id(hook: QmaticHook, query: SlotQuery, exc: QmaticNotFoundError) -> QmaticNotFoundError:
    fix = "QmaticHook().list_branches() and list_services(branch_id) show the tenant's ids"
    try:
        services = hook.list_services()
    except QmaticError:
        services = []
    branches = {s.branch.id for s in services if s.branch is not None and s.branch.id}
    if branches and query.branch_id not in branches:
        field, problem = "branch_id", f"the tenant has no branch {query.branch_id}"
    elif branches and not any(
        s.id == query.service_id for s in services if s.branch is not None and s.branch.id == query.branch_id
    ):
        field, problem = "service_id", f"branch {query.branch_id} offers no service {query.service_id}"
    else:
        field, problem = "branch_id", f"branch {query.branch_id} or its service {query.service_id} is unknown"
    return QmaticNotFoundError(
        f"{field}: {problem} (Qmatic answered 404: {exc.message}); {fix}", status=404, field=field
    )


def error_payload(exc: QmaticError) -> dict[str, Any]:
    """An error as a trigger event carries it: its class, message and field, nothing secret (the
    provider's messages never hold one)."""
    return {
        "status": "error",
        "error": type(exc).__name__,
        "message": str(exc),
        "field": exc.field,
        "retryable": exc.retryable,
    }


class QmaticTimeslotTrigger(BaseTrigger):  # type: ignore[misc]
    """Fires once ``min_slots`` free slots match: ``{"status": "success", "slots": [...]}`` (the
    find operator's XCom form), or ``{"status": "error", ...}`` (:func:`error_payload`).

    The slot question (``branch_id``, ``service_id``, ``date_from``, ``date_to``, ``time_from``,
    ``time_to``, ``weekdays``, ``min_slots``, ``start_before``) is checked as
    :class:`~airflow_provider_qmatic.api.slots.SlotQuery` does, when the trigger is built.

    :param qmatic_conn_id: read in the triggerer; nothing of it is serialized.
    :param poll_interval: seconds between polls while the answer changes.
    :param max_poll_interval: the most the interval grows to while nothing changes.
    :param waiting_share: the part of the tenant's requests per minute all waiters share.
    """

    def __init__(
        self,
        *,
        branch_id: str,
        service_id: str,
        date_from: str | None = None,
        date_to: str | None = None,
        time_from: str | None = None,
        time_to: str | None = None,
        weekdays: list[int] | None = None,
        min_slots: int = 1,
        start_before: str | None = None,
        qmatic_conn_id: str = DEFAULT_CONN_ID,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        waiting_share: float | None = None,
    ) -> None:
        super().__init__()
        self.query = SlotQuery.parse(
            branch_id=branch_id,
            service_id=service_id,
            date_from=date_from,
            date_to=date_to,
            time_from=time_from,
            time_to=time_to,
            weekdays=weekdays,
            min_slots=min_slots,
            start_before=start_before,
        )
        self.qmatic_conn_id = qmatic_conn_id
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = max(float(max_poll_interval), self.poll_interval)
        self.waiting_share = waiting_share
        if self.poll_interval <= 0:
            raise ValueError("poll_interval must be above 0 seconds")
        if waiting_share is not None and not 0 < waiting_share <= 1:
            raise ValueError(f"waiting_share must be above 0 and at most 1, got {waiting_share}")

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                **self.query.to_kwargs(),
                "qmatic_conn_id": self.qmatic_conn_id,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "waiting_share": self.waiting_share,
            },
        )

    async def run(self) -> AsyncIterator[Any]:
        async with aclosing(self.polls()) as polls:
            async for answer in polls:
                if isinstance(answer, QmaticError):
                    yield TriggerEvent(error_payload(answer))
                    return
                if self.query.satisfied_by(answer):
                    yield TriggerEvent({"status": "success", "slots": self.query.xcom(answer)})
                    return

    async def polls(self) -> AsyncGenerator[list[Slot] | QmaticError, None]:
        """Each poll's matching slots, paced (see the module documentation); an error is yielded
        instead, and polling goes on after it only if it is retryable and the caller asks again."""
        from airflow_provider_qmatic.hooks.qmatic import QmaticHook

        hook = QmaticHook(qmatic_conn_id=self.qmatic_conn_id)
        try:
            try:
                budget = await asyncio.to_thread(self._waiting_budget, hook)
            except QmaticError as exc:
                yield exc
                return
            interval, previous = self.poll_interval, None
            while True:
                slots: list[Slot] | None = None
                query = self.current_query()
                try:  # a lost Redis (budget) is an error like a failed poll
                    while (wait := await asyncio.to_thread(budget.try_acquire)) > 0:
                        # Jittered: many waiters told the same wait would all ask again at once.
                        await asyncio.sleep(wait * random.uniform(1.0, 1.5))
                    slots = await asyncio.to_thread(find_slots, hook, query)
                except QmaticError as exc:
                    yield exc
                    if not exc.retryable:
                        return
                else:
                    yield query.matching(slots)
                answer = _fingerprint(slots)
                changed = answer is not None and answer != previous  # the first answer, or news
                if changed:
                    interval, previous = self.poll_interval, answer
                else:
                    interval = min(self.max_poll_interval, interval * GROWTH)
                log.debug(
                    "Qmatic slot watch (%s): answer %s; next poll in %.3f s",
                    query.describe(),
                    "new" if changed else "unchanged",
                    interval,
                )
                await asyncio.sleep(interval)
        finally:
            if "client" in vars(hook):  # built: close its pooled connections
                hook.client.close()

    def current_query(self) -> SlotQuery:
        """The question to ask at this poll: the one given (a watch may move its days along)."""
        return self.query

    def _waiting_budget(self, hook: QmaticHook) -> RateLimiter:
        from airflow_provider_qmatic import state

        share = state.WAITING_SHARE if self.waiting_share is None else self.waiting_share
        return state.waiting_budget(hook.config, share)


def _fingerprint(slots: list[Slot] | None) -> tuple[tuple[str, str], ...] | None:
    """What a listing says, to tell whether it changed: each slot's start and places."""
    if slots is None:
        return None
    return tuple((s.start_time.isoformat() if s.start_time else "", str(s.available)) for s in slots)
