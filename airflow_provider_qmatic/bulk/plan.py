"""A bulk job's plan: what a real run would do to each row, found by reading only (``dry_run``).

A dry run of :class:`~airflow_provider_qmatic.bulk.runner.BulkRunner` reads and validates its rows
as a real run does, then plans each valid row here instead of running its flow. A plan reads
through the flows a real run uses (:class:`~airflow_provider_qmatic.flows.Flows`, with the job's
caches), so "already done" is decided by the very reads a real run skips rows with:

* **book**: the customer's search (:meth:`Flows.existing_booking`); found: ``skipped_existing``.
  Else the service's cap on ``number_of_reservations`` (read only above 1), then the time slot
  listing of the branch and service around the row's date (one listing per branch, service and
  date in a job, the listing a booking without ``end_time`` reads too, see
  :meth:`Flows.listed_slot`): no listed slot at ``start_time``, a listed one with another end than
  ``end_time``, or one shown without a place left is a ``failed`` row with the reason; else
  ``planned``.
* **reschedule**: the appointment, read as a reschedule reads it (:meth:`Flows.movable`: a
  status other than CONFIRMED fails the row); already at ``start_time``: ``skipped_existing``;
  else the new slot is checked like a booking's, at the appointment's branch and service.
* **cancel**: the appointment, read as a cancel's ``check_first`` reads it
  (:meth:`Flows.cancelled_already`); cancelled or gone: ``skipped_existing``, else ``planned``.
* **update_customer**: the customer's search and the comparison a real run makes before each PUT
  (:func:`~airflow_provider_qmatic.bulk.runner.update_booked` with ``dry_run``).

Where the listing shows how many places a slot has left (``available`` as a count), the plan
counts the places its own earlier rows take, so the third row for a slot with two places is
planned as full, as the real run would find it. A listing that shows no count (the public shape:
a listed slot is a free slot) cannot say so; two rows for one such slot are both planned.

The client reads only while a plan runs (:meth:`QmaticClient.reads_only`): a write would be
refused before it is sent, and stop the run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_qmatic.exceptions import QmaticConflictError
from airflow_provider_qmatic.flows import FlowEvents, Flows, starts_at

if TYPE_CHECKING:
    from airflow_provider_qmatic.api.models import BookingRequest, RescheduleRequest

# The writes a real run sends for one planned row, from its flow: a booking reserves and confirms,
# a reschedule reserves and moves the appointment, a cancel cancels. A customer update sends one
# PUT per appointment whose details differ (counted per row). Lost answers and 429s add to these.
WRITES_PER_ROW: dict[str, int] = {"book": 2, "reschedule": 2, "cancel": 1}


@dataclass(frozen=True, slots=True)
class RowPlan:
    """What a real run would do to one row.

    :ivar writes: the writes it would send; 0 means the row is done already (``skipped_existing``).
    :ivar appointment_id: the row's appointment, where one is known.
    :ivar note: why, in words that name no personal data (the results file's ``error`` column).
    """

    writes: int
    appointment_id: str | None = None
    note: str | None = None


def estimate(reads: int, writes: int, limit_per_minute: float | None) -> tuple[int, float | None]:
    """The requests a real run would send and how long they take at the tenant's limit.

    ``reads`` are the plan's own requests (API and token): a real run looking every row up
    (``skip_existing="always"``) reads the same, less the slot listings of rows that give
    ``end_time``. ``writes`` are the planned rows' writes (:data:`WRITES_PER_ROW`). So the estimate
    errs on the long side; retries after lost answers or 429s are not foreseen. Seconds are
    ``requests / limit * 60``: the limiter's first burst is left out, and None without a limit.
    """
    requests = reads + writes
    seconds = round(requests * 60.0 / limit_per_minute, 1) if limit_per_minute else None
    return requests, seconds


def customer_update_plan(ids: list[str], to_update: int) -> RowPlan:
    """A customer update row's plan from its booked appointments' ids and how many differ."""
    joined = " ".join(ids) or None
    if not ids:
        return RowPlan(0, None, "no booked appointment found")
    if not to_update:
        return RowPlan(0, joined, "every booked appointment already shows the details")
    return RowPlan(to_update, joined, f"would update {to_update} of {len(ids)} booked appointment(s)")


class Planner:
    """Plans the rows of one job over its flows; thread-safe (the runner's workers share it)."""

    def __init__(self, flows: Flows) -> None:
        self._flows = flows
        self._lock = threading.Lock()
        # Places left per slot, where the listing gives a count, less what planned rows take.
        self._places: dict[tuple[str, str, str], int] = {}

    def plan(self, action: str, request: Any, events: FlowEvents) -> RowPlan:
        """The row's plan; a row a real run would fail raises the error it fails with."""
        if action == "book":
            return self._book(request, events)
        if action == "reschedule":
            return self._reschedule(request, events)
        done = self._flows.cancelled_already(request.appointment_id, events)
        if done is not None:
            gone = (
                "not found: cancelled or deleted before" if done.appointment is None else "already cancelled"
            )
            return RowPlan(0, request.appointment_id, gone)
        return RowPlan(WRITES_PER_ROW["cancel"], request.appointment_id, "would cancel")

    def _book(self, request: BookingRequest, events: FlowEvents) -> RowPlan:
        events.step = "search"
        existing = self._flows.existing_booking(request)
        if existing is not None:
            return RowPlan(
                0,
                existing.appointment_id,
                "already booked: the customer has an appointment at this branch, service and start",
            )
        if request.combined:
            events.step = "service_combinations"
            self._flows.check_combination(request.branch_id, request.services)
        events.step = "list_services"
        for service_id in request.services:
            self._flows.check_reservations_cap(request.branch_id, service_id, request.number_of_reservations)
        self._take_slot(
            request.branch_id,
            request.services,
            request.start_time,
            request.end_time,
            request.number_of_reservations,
            events,
        )
        return RowPlan(WRITES_PER_ROW["book"], None, "would reserve and confirm")

    def _reschedule(self, request: RescheduleRequest, events: FlowEvents) -> RowPlan:
        appointment_id = request.appointment_id
        current = self._flows.movable(appointment_id, events, combination=request.combined)
        if starts_at(current, request.start_time):
            return RowPlan(0, appointment_id, "already at start_time")
        branch_id = current.branch.id if current.branch is not None else None
        service_id: str | tuple[str, ...] | None = (
            request.services
            if request.combined
            else current.service.id
            if current.service is not None
            else None
        )
        if branch_id is None or service_id is None:
            return RowPlan(
                WRITES_PER_ROW["reschedule"],
                appointment_id,
                "would reserve and move (slot not checked: the appointment shows no branch or service)",
            )
        self._take_slot(
            branch_id,
            service_id,
            request.start_time,
            request.end_time,
            current.number_of_reservations or 1,
            events,
        )
        return RowPlan(WRITES_PER_ROW["reschedule"], appointment_id, "would reserve and move")

    def _take_slot(
        self,
        branch_id: str,
        service_id: str | tuple[str, ...],
        start: datetime,
        end: datetime | None,
        number: int,
        events: FlowEvents,
    ) -> None:
        """Check that the listing offers a slot at ``start`` with room for ``number``, and count the
        places taken; raise the refusal a reserve would meet (409 ``slot_unavailable``) if not."""
        events.step = "timeslots"
        slot = self._flows.listed_slot(branch_id, service_id, start)
        if slot is None:
            raise _unavailable(
                "slot not offered or full: the time slots listing shows no free slot of the service at "
                "the branch starting at start_time"
            )
        if end is not None and slot.end_time != end:
            raise _unavailable(
                "slot not offered: the listed slot at start_time ends at another time than end_time"
            )
        if not slot.is_available:
            raise _unavailable("slot full: the listing shows no place left at start_time")
        places = slot.available
        if isinstance(places, bool) or places is None:
            return  # free, but how many places is not shown
        services = service_id if isinstance(service_id, str) else "+".join(service_id)
        key = (branch_id, services, start.astimezone(timezone.utc).isoformat())
        with self._lock:
            left = self._places.setdefault(key, places)
            if left < number:
                taken = places - left
                raise _unavailable(
                    f"slot full: the listing shows {places} place(s) left at start_time"
                    + (f", {taken} of them taken by earlier rows of this plan" if taken else "")
                    + f", {number} needed"
                )
            self._places[key] = left - number


def _unavailable(reason: str) -> QmaticConflictError:
    return QmaticConflictError(reason, code="slot_unavailable")
