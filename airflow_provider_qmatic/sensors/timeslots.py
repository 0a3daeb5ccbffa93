"""QmaticTimeslotAvailableSensor: wait until a branch has free slots for a service, then hand them on.

DAG files import this module at every parse, so it imports nothing heavy at module level (the
trigger, the hook, the client and the models come inside ``execute``), and Airflow's sensor base
only from :mod:`~airflow_provider_qmatic.compat`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_qmatic import DEFAULT_CONN_ID
from airflow_provider_qmatic.compat import (
    AirflowFailException,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    default_deferrable,
)
from airflow_provider_qmatic.operators._base import QmaticBaseOperator

if TYPE_CHECKING:
    from airflow_provider_qmatic.api.slots import SlotQuery

    Context = Mapping[str, Any]

__all__ = ["QmaticTimeslotAvailableSensor"]

# The trigger's defaults, repeated here so that parsing a DAG does not import the trigger module.
_MAX_POLL_INTERVAL = 300.0


class QmaticTimeslotAvailableSensor(BaseSensorOperator, QmaticBaseOperator):  # type: ignore[misc]
    """Wait until at least ``min_slots`` free slots of a service at a branch match, then return them.

    Deferred by default (see :func:`~airflow_provider_qmatic.compat.default_deferrable`): after one
    poll on the worker it waits in the triggerer
    (:class:`~airflow_provider_qmatic.triggers.timeslots.QmaticTimeslotTrigger`), holding no worker
    slot, for as long as ``timeout`` allows (what is left of it when it defers). With
    ``deferrable=False`` it pokes every ``poke_interval`` on the worker, or frees the slot between
    pokes with ``mode="reschedule"``; the same question, the same answer, the same errors.

    Every waiter of the tenant, deferred or poking, draws from one waiting budget, ``waiting_share``
    of the connection's ``requests_per_minute`` (half by default), so sensors together never crowd
    bookings out. Deferred, the interval grows by half after each unchanged answer up to
    ``max_poll_interval`` and drops back to ``poke_interval`` when the answer changes; poking
    follows Airflow's own ``exponential_backoff`` and ``max_wait``.

    Errors that no retry can fix (an unknown branch or service, a forbidden tenant, bad
    credentials, a bad argument) fail the task at once, naming the argument; with ``soft_fail`` the
    task is skipped instead, as for a timeout. Transient faults are retried by the client, and the
    task's ``retries`` apply if they persist.

    XCom: the matching slots in the form ``QmaticFindTimeslotsOperator`` returns:
    ``[{"branch_id", "service_id", "start_time", "end_time", "available"}]``.

    :param branch_id: the branch's id (GUID). Templated.
    :param service_id: the service's id (GUID). Templated.
    :param date_from: first day (a date, a datetime or ISO text); None means today (UTC). Templated.
    :param date_to: last day, same forms; None means ``date_from`` plus 7 days. Templated.
    :param time_from: only slots starting at or after this branch time, ``"HH:MM"``. Templated.
    :param time_to: only slots starting before this branch time, ``"HH:MM"``. Templated.
    :param weekdays: only these days, ``["mon", "fri"]``, ``"mon,fri"`` or numbers (Monday 0).
        Templated.
    :param min_slots: how many matching free slots to wait for (default 1). Templated.
    :param start_before: only slots that start before this moment (ISO-8601 with an offset, or an
        aware datetime): an appointment's own start, to wait for an earlier one. Templated.
    :param deferrable: wait in the triggerer; None follows an explicit ``[operators]
        default_deferrable`` and otherwise defers.
    :param max_poll_interval: seconds the deferred interval grows to while nothing changes.
    :param waiting_share: the part of the tenant's requests per minute that all waiters share
        (default 0.5).
    :param qmatic_conn_id: the Airflow connection to Qmatic Cloud. Templated.
    """

    template_fields: Sequence[str] = (
        "branch_id",
        "service_id",
        "date_from",
        "date_to",
        "time_from",
        "time_to",
        "weekdays",
        "min_slots",
        "start_before",
        "qmatic_conn_id",
    )
    ui_color = "#d9f6e9"

    def __init__(
        self,
        *,
        branch_id: str,
        service_id: str,
        date_from: str | date | None = None,
        date_to: str | date | None = None,
        time_from: str | None = None,
        time_to: str | None = None,
        weekdays: str | Sequence[str | int] | None = None,
        min_slots: int | str = 1,
        start_before: str | datetime | None = None,
        deferrable: bool | None = None,
        max_poll_interval: float | timedelta = _MAX_POLL_INTERVAL,
        waiting_share: float | None = None,
        qmatic_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(qmatic_conn_id=qmatic_conn_id, **kwargs)
        self.branch_id = branch_id
        self.service_id = service_id
        self.date_from = date_from
        self.date_to = date_to
        self.time_from = time_from
        self.time_to = time_to
        self.weekdays = weekdays
        self.min_slots = min_slots
        self.start_before = start_before
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.max_poll_interval = (
            max_poll_interval.total_seconds()
            if isinstance(max_poll_interval, timedelta)
            else float(max_poll_interval)
        )
        if waiting_share is not None and not 0 < waiting_share <= 1:
            raise ValueError(f"waiting_share must be above 0 and at most 1, got {waiting_share}")
        self.waiting_share = waiting_share

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)  # poke (or reschedule) until done or timed out
        started = time.monotonic()
        with self._ending_as_sensors_do():
            found = self._poll()
        if found is not None:
            return found
        from airflow_provider_qmatic.triggers.timeslots import QmaticTimeslotTrigger

        remaining = max(0.0, self.timeout - (time.monotonic() - started))
        query = self._query()
        self.log.info(
            "Deferring: waiting in the triggerer for %d free slot(s) (%s), at most %.0f s more",
            query.min_slots,
            query.describe(),
            remaining,
        )
        self.defer(
            trigger=QmaticTimeslotTrigger(
                **query.to_kwargs(),
                qmatic_conn_id=self.qmatic_conn_id,
                poll_interval=max(self.poke_interval, 0.001),
                max_poll_interval=self.max_poll_interval,
                waiting_share=self.waiting_share,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=remaining),
        )

    def poke(self, context: Context) -> Any:
        found = self._poll()
        return PokeReturnValue(is_done=found is not None, xcom_value=found)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> list[dict[str, Any]]:
        """Back from the triggerer: the slots, or the poll's error raised here (a non-retryable one
        without spending retries; ``soft_fail`` skips instead, through the sensor base)."""
        from airflow_provider_qmatic import exceptions

        if event.get("status") == "success":
            slots: list[dict[str, Any]] = event["slots"]
            self.log.info("Found %d matching free slot(s): %s", len(slots), _starts(slots))
            return slots
        message = f"{event.get('error')}: {event.get('message')}"
        if not event.get("retryable"):
            raise AirflowFailException(message)
        kind = getattr(exceptions, str(event.get("error")), None)
        if not (isinstance(kind, type) and issubclass(kind, exceptions.QmaticError)):
            kind = exceptions.QmaticServerError
        raise kind(str(event.get("message")), field=event.get("field"))

    # -- one poll, the same on a worker and (through the trigger) in the triggerer ----------------

    def _query(self) -> SlotQuery:
        from airflow_provider_qmatic.api.slots import SlotQuery

        return SlotQuery.parse(
            branch_id=self.branch_id,
            service_id=self.service_id,
            date_from=self.date_from,
            date_to=self.date_to,
            time_from=self.time_from,
            time_to=self.time_to,
            weekdays=self.weekdays,
            min_slots=self.min_slots,
            start_before=self.start_before,
        )

    def _poll(self) -> list[dict[str, Any]] | None:
        """One paced listing: the matching slots in XCom form once there are enough, else None."""
        from airflow_provider_qmatic import state
        from airflow_provider_qmatic.triggers.timeslots import find_slots

        with self.failing_fast():
            query = self._query()  # every argument checked before any request
            share = state.WAITING_SHARE if self.waiting_share is None else self.waiting_share
            state.waiting_budget(self.hook.config, share).acquire()
            matching = query.matching(find_slots(self.hook, query))
        if query.satisfied_by(matching):
            found = query.xcom(matching)
            self.log.info("Found %d matching free slot(s): %s", len(found), _starts(found))
            return found
        self.log.info(
            "%d matching free slot(s) of %d wanted (%s); waiting",
            len(matching),
            query.min_slots,
            query.describe(),
        )
        return None

    @contextmanager
    def _ending_as_sensors_do(self) -> Iterator[None]:
        """``soft_fail`` (and ``never_fail``) skip on a failure, as the sensor base does for pokes:
        for the poll a deferrable sensor makes before it defers."""
        try:
            yield
        except AirflowFailException as exc:
            if self.soft_fail or getattr(self, "never_fail", False):
                raise AirflowSkipException(
                    f"Skipping ({'soft_fail' if self.soft_fail else 'never_fail'}): {exc}"
                ) from exc
            raise


def _starts(slots: list[dict[str, Any]], shown: int = 5) -> str:
    starts = [str(s.get("start_time")) for s in slots[:shown]]
    return ", ".join(starts) + (f" and {len(slots) - shown} more" if len(slots) > shown else "")
