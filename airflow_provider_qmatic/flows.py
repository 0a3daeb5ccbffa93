"""The booking flows, written once: reserve -> commit -> settle, and "is this already done?".

The single operators and the bulk runner both call :class:`Flows`; nothing else composes API calls.
Plain Python (no Airflow), over a :class:`~airflow_provider_qmatic.client.client.QmaticClient`.

* **reserve -> commit -> settle.** A booking reserves a slot and confirms it; a reschedule reserves
  the new slot and moves the appointment onto it. If the commit fails, a lost or unclear answer
  is resolved by *reading* (is the reservation confirmed? is the appointment at the new time?),
  never by sending the write again; otherwise the reservation is released so that no slot stays
  held for Qmatic's 15 minutes. Release needs the ``book`` scope (Part B), so it is always sent
  with a book token, also for a reschedule (whose own token may not release).
* **One reserve budget.** A reserve whose answer was lost cannot be found again (a reservation has
  no customer), so the flow reserves anew; an expired hold is reserved anew too. Every reserve may
  leave a hold that crowds out other customers, so all of these draw from one small budget
  (:data:`RESERVE_BUDGET`), which the bulk runner carries across task retries in its journal.

**No decision on a field the public pages do not show** (Part B, second edition). No public
example of an appointment carries ``status``, ``notes``, ``expiresAt`` or the customer's personal
identifier, and no service carries a duration. So:

* *already booked* = found by the customer's search at the branch, service and start instant,
  unless a ``status``, when present, says RESERVED, CANCELLED, RELEASED or EXPIRED;
* *a lost confirm landed* = the reservation, read by id, shows a customer (a reservation never
  confirmed shows none: ``customer`` null or absent) whose readable fields are the request's, and
  no ``status`` other than CONFIRMED or FINALIZED (see :func:`confirmed_by`);
* *a reschedule landed* = the appointment's time slot starts at the new time;
* *cancelled* = 204; a 404 after this client's own unclear attempt (or an earlier try's, which the
  caller says) = cancelled by us; a 404 to a first, clearly answered attempt = already gone
  (``changed=False``, logged);
* *end time* of a booking given without one = the end of the listed free time slot that starts at
  the requested start; a service's ``durationMinutes`` only when that slot is not listed and the
  listing carries one; else an error asking for ``end_time``;
* *the hold ends* 15 minutes after the reserve was answered (:data:`HOLD`), whatever ``expiresAt``
  says (:attr:`FlowEvents.hold_ends`);
* ``status`` is used when present, never required: a reschedule is refused only when a present
  status is not CONFIRMED; an unknown value is kept (reported by the models) and decides nothing.

Times are compared as instants (aware datetimes, ``==`` across offsets): Part B promises ISO-8601
with an offset, and ``09:00+01:00`` is ``08:00+00:00``. A time Qmatic sent without an offset names
no instant, so it never counts as "the same start": treating wall-clock equality as equal could
skip a row that was never booked. Statuses are compared as :class:`AppointmentStatus` members.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from airflow_provider_qmatic.api.contract import BOOK_SCOPES, CANCEL_SCOPES, RESCHEDULE_SCOPES, Scope
from airflow_provider_qmatic.client.retry import backoff_delay
from airflow_provider_qmatic.exceptions import (
    QmaticConflictError,
    QmaticError,
    QmaticNotFoundError,
    QmaticNotSentError,
    QmaticOwnHoldsError,
    QmaticServerError,
    QmaticTenantRequiresFieldError,
    QmaticUnknownOutcomeError,
    QmaticValidationError,
)
from airflow_provider_qmatic.state.journal import CANCELLING, DONE, LOST, RELEASED, RESERVED, RESERVING

if TYPE_CHECKING:
    from datetime import date

    from airflow_provider_qmatic.api.models import (
        Appointment,
        BookingRequest,
        BranchCombinations,
        CustomerUpdate,
        RescheduleRequest,
        Service,
        Slot,
    )
    from airflow_provider_qmatic.client.client import QmaticClient
    from airflow_provider_qmatic.state.journal import Journal, JournalState

log = logging.getLogger(__name__)

# Reserves one booking or reschedule may send in all: after lost answers, after expired holds and,
# in bulk, over task retries (the journal carries the count). Each lost answer may hold a place for
# 15 minutes; one call keeps the last reserve for a later try (see Flows._reserve_and_commit).
RESERVE_BUDGET = 6
# How long Qmatic holds a reservation (public: "times out after 15 minutes unless released"),
# counted from the reserve's answer, never from an ``expiresAt`` no public answer shows.
HOLD = timedelta(minutes=15)


Recorder = Callable[..., None]


class FlowEvents:
    """What a flow reports while it runs, readable after it returns or raises.

    :param reserves_left: reserves this call may still send (the rest of the row's budget).
    :param held_before: reserves of earlier tries whose answers were lost (their holds may still
        fill the slot), from the bulk journal.
    :param record: called as ``record(event, reservation_id=..., appointment_id=...)`` for each
        event (:data:`RESERVING`, :data:`LOST`, :data:`RESERVED`, :data:`DONE`, :data:`RELEASED`,
        :data:`CANCELLING`) before the flow goes on; the bulk runner journals them.
    :param stopped: asked before each new reserve; True ends the flow with its last error.
    """

    def __init__(
        self,
        *,
        reserves_left: int = RESERVE_BUDGET,
        held_before: int = 0,
        record: Recorder | None = None,
        stopped: Callable[[], bool] | None = None,
    ) -> None:
        self.step = "validate"
        self.reserves_left = reserves_left
        self.held_before = held_before
        self.reserves = 0
        self.lost_reserves = 0
        self.unreleased = 0
        # When the last reservation's hold ends: the reserve's answer time plus HOLD.
        self.hold_ends: datetime | None = None
        self._record = record
        self._stopped = stopped

    @classmethod
    def journaled(
        cls,
        journal: Journal | None,
        state: JournalState | None,
        fingerprint: str,
        row: int,
        *,
        budget: int = RESERVE_BUDGET,
        stopped: Callable[[], bool] | None = None,
    ) -> FlowEvents:
        """The events of one row of a journaled job (a single operator's booking is row 1): the rest
        of its reserve budget and the holds earlier tries may have left, as ``state`` shows them,
        and every event written to ``journal`` as it happens."""
        history = state.rows.get(fingerprint) if state is not None else None

        def record(
            event: str, *, reservation_id: str | None = None, appointment_id: str | None = None
        ) -> None:
            if journal is not None:
                journal.record(
                    event,
                    fingerprint=fingerprint,
                    row=row,
                    reservation_id=reservation_id,
                    appointment_id=appointment_id,
                )

        return cls(
            reserves_left=budget - (history.reserves if history else 0),
            held_before=history.lost if history else 0,
            record=record,
            stopped=stopped,
        )

    @property
    def possibly_orphaned(self) -> int:
        """Holds this call may have left: reserves whose answer was lost, releases that failed."""
        return self.lost_reserves + self.unreleased

    def stopped(self) -> bool:
        return self._stopped is not None and self._stopped()

    def emit(
        self, event: str, *, reservation_id: str | None = None, appointment_id: str | None = None
    ) -> None:
        if event == RESERVING:
            self.reserves_left -= 1
            self.reserves += 1
        elif event == LOST:
            self.lost_reserves += 1
        elif event == RESERVED:
            self.hold_ends = _now() + HOLD
        if self._record is not None:
            self._record(event, reservation_id=reservation_id, appointment_id=appointment_id)


_A = TypeVar("_A", "Appointment", "Appointment | None")


@dataclass(frozen=True)
class FlowResult(Generic[_A]):
    """What a flow did.

    :ivar appointment_id: the booked, moved or cancelled appointment.
    :ivar appointment: the appointment as Qmatic last answered it (None after a cancel's 204).
    :ivar changed: True if this call booked, moved or cancelled it; False if it already was so.
    :ivar reserves: reserve requests this call sent.
    :ivar possibly_orphaned: holds this call may have left (lost reserve answers, failed releases).
    """

    appointment_id: str
    appointment: _A
    changed: bool
    reserves: int = 0
    possibly_orphaned: int = 0


@dataclass(frozen=True)
class Settled:
    """What became of a reservation an earlier, killed try left (see :meth:`Flows.settle`)."""

    fate: str  # "done", "released" or "unknown"
    appointment_id: str | None = None


class Flows:
    """The flows over one client.

    :param client: every request goes through it (its limiter paces them).
    :param list_services: how to read a branch's services (the bulk runner caches them per branch);
        called with the branch id, it returns that branch's items of the tenant-wide list.
    :param search: how to search a customer's appointments, ``search(pid, combination)`` (the
        bulk runner caches per customer); ``combination`` asks the ``/serviceCombination/`` search.
    :param find_timeslots: how to list the free slots of a service (or of a combination of several)
        at a branch between two dates (for the end time of a booking given without one); by default
        one request each time.
    :param list_combinations: how to read a branch's service combinations (checked before a
        combination's first reserve).

    Several services in one appointment (``request.combined``) run the same flows over the
    ``/serviceCombination/`` twins of reserve, confirm, get, search and reschedule.
    """

    def __init__(
        self,
        client: QmaticClient,
        *,
        list_services: Callable[[str], list[Service]] | None = None,
        search: Callable[[str, bool], list[Appointment]] | None = None,
        find_timeslots: Callable[[str, tuple[str, ...], date, date], list[Slot]] | None = None,
        list_combinations: Callable[[str], list[BranchCombinations]] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self._list_services = list_services or (
            lambda branch_id: client.list_services(branch_id, scopes=BOOK_SCOPES)
        )
        self._search = search or (
            lambda pid, combination: client.search_appointments(
                pid, scopes=BOOK_SCOPES, combination=combination
            )
        )
        self._find_timeslots = find_timeslots or (
            lambda branch_id, services, first, last: client_slots(client, branch_id, services, first, last)
        )
        self._list_combinations = list_combinations or (
            lambda branch_id: client.list_service_combinations(branch_id, scopes=BOOK_SCOPES)
        )
        self._sleep = sleep

    # -- already done? --------------------------------------------------------------------------

    def existing_booking(self, request: BookingRequest) -> Appointment | None:
        """The customer's appointment at the request's branch, service and start, found by search
        (see :func:`is_booked`)."""
        for appointment in self._search(request.customer.personal_identifier, request.combined):
            if (
                is_booked(appointment)
                and appointment.branch is not None
                and appointment.branch.id == request.branch_id
                and _same_services(appointment, request.services)
                and starts_at(appointment, request.start_time)
            ):
                return appointment
        return None

    def _service(self, branch_id: str, service_id: str) -> Service | None:
        for service in self._list_services(branch_id):
            if service.id == service_id:
                return service
        return None

    def listed_slot(self, branch_id: str, service_id: str | tuple[str, ...], start: datetime) -> Slot | None:
        """The time slot Qmatic lists for the service (or the combination of several) at the branch
        starting at the instant
        ``start`` (with an aware end after it), or None when the listing shows none.

        The listing asks for the day before to the day after the start's date, one request either
        way: the branch's local date (no public answer gives its time zone) may differ from the
        date written in the start's offset. Both a booking without ``end_time`` and a bulk dry run
        read slots here, through the same (in bulk, cached) listing.
        """
        day = start.date()
        services = (service_id,) if isinstance(service_id, str) else service_id
        try:
            slots = self._find_timeslots(
                branch_id, services, day - timedelta(days=1), day + timedelta(days=1)
            )
        except QmaticNotFoundError as exc:
            raise QmaticNotFoundError(
                f"branch_id, service_id: {exc.message}; check both ids (QmaticHook().list_services("
                "branch_id) lists the services of a branch)",
                status=exc.status,
                code=exc.code,
                field="service_id",
            ) from None
        for slot in slots:
            end = slot.end_time
            aware_end = end is not None and end.utcoffset() is not None
            if _same_instant(slot.start_time, start) and aware_end and end is not None and end > start:
                return slot
        return None

    def end_time(self, request: BookingRequest) -> datetime:
        """The end of the booking's slot when the request gives none: the end of the listed free
        time slot that starts at the requested start (:meth:`listed_slot`); the service's
        ``durationMinutes`` when that slot is not listed and the services list carries one; else a
        QmaticValidationError asking for ``end_time``.
        """
        slot = self.listed_slot(request.branch_id, request.services, request.start_time)
        if slot is not None and slot.end_time is not None:
            return slot.end_time
        service = None if request.combined else self._service(request.branch_id, request.service_id)
        if service is not None and service.duration_minutes:
            return request.with_end(int(service.duration_minutes)).time_slot().end_time
        raise QmaticValidationError(
            f"end_time: no free time slot of service {' + '.join(request.services)} at branch "
            f"{request.branch_id} "
            "starts at start_time, and Qmatic lists no duration for the service, so the end cannot be "
            "worked out; pass end_time, or pick a start from find_timeslots (the slot may be taken)",
            field="end_time",
        )

    def check_reservations_cap(self, branch_id: str, service_id: str, number: int) -> None:
        """Refuse, before any reserve, more reservations than the service's
        ``config.maxNumberOfReservations`` allows (when above 0). One place per booking is never
        above a cap, so the services list is read only for a larger ``number``."""
        if number <= 1:
            return
        service = self._service(branch_id, service_id)
        cap = service.max_reservations if service is not None else None
        if cap is not None and number > cap:
            raise QmaticValidationError(
                f"number_of_reservations: service {service_id} allows at most {cap} per appointment "
                f"(its config.maxNumberOfReservations), got {number}; lower number_of_reservations",
                field="number_of_reservations",
            )

    def check_combination(self, branch_id: str, service_ids: tuple[str, ...]) -> None:
        """Refuse, before any reserve, services that the branch does not list as combinable
        together (Qmatic's ``/serviceCombination/branch``), or a tenant that refuses the listing
        (combinations switched off): a QmaticValidationError naming the services and the branch."""

        named = f"services {', '.join(service_ids)} at branch {branch_id}"
        try:
            listing: list[BranchCombinations] = self._list_combinations(branch_id)
        except QmaticValidationError as exc:
            raise QmaticValidationError(
                f"service_ids: {named} cannot be booked as one appointment: Qmatic refused to list "
                f"service combinations ({exc.message}); they may be switched off for this tenant, so "
                "book the services one by one",
                field="service_ids",
            ) from None
        if not any(item.combinable(service_ids) for item in listing):
            raise QmaticValidationError(
                f"service_ids: {named} are not configured to combine in one appointment "
                "(QmaticHook().list_service_combinations(branch_id) shows what is); book them one "
                "by one, or have them combined in Qmatic",
                field="service_ids",
            )

    # -- the flows ----------------------------------------------------------------------------

    def book(
        self, request: BookingRequest, *, check_existing: bool = False, events: FlowEvents | None = None
    ) -> FlowResult[Appointment]:
        """Book one appointment: reserve, confirm, settle.

        :param check_existing: search the customer's appointments first and return one already
            booked at this branch, service and start instead of booking again (a retry).
        :raises QmaticTenantRequiresFieldError: the confirm was refused for a field the tenant
            requires and the request lacks (the reservation is released first).
        """
        events = events or FlowEvents()
        if check_existing:
            events.step = "search"
            existing = self.existing_booking(request)
            if existing is not None:
                events.emit(DONE, appointment_id=existing.appointment_id)
                return FlowResult(existing.appointment_id, existing, changed=False)
        if request.combined:
            events.step = "service_combinations"
            self.check_combination(request.branch_id, request.services)
        events.step = "list_services"
        for service_id in request.services:
            self.check_reservations_cap(request.branch_id, service_id, request.number_of_reservations)
        if request.end_time is None:
            events.step = "timeslots"
            request = request.model_copy(update={"end_time": self.end_time(request)})
        confirmation = request.confirmation_body()

        def confirm(reservation_id: str) -> Appointment:
            try:
                return self.client.confirm(
                    reservation_id, confirmation, scopes=BOOK_SCOPES, combination=request.combined
                )
            except QmaticValidationError as exc:
                raise tenant_required_field(exc, request) or exc from None

        def confirmed(reservation_id: str) -> Appointment | None:
            current = self._read(reservation_id, BOOK_SCOPES, request.combined)
            return current if current is not None and confirmed_by(current, request) else None

        appointment = self._reserve_and_commit(
            request.reservation_body(), BOOK_SCOPES, "confirm", confirm, confirmed, events, request.combined
        )
        return _result(appointment.appointment_id, appointment, events)

    def reschedule(
        self, request: RescheduleRequest, *, events: FlowEvents | None = None
    ) -> FlowResult[Appointment]:
        """Move an appointment to ``request.start_time`` (same branch and service).

        Already there: returned unchanged, nothing sent. A ``status``, when the answer carries one,
        must be CONFIRMED; without one Qmatic decides. Otherwise reserve the new slot (with the
        reschedule scope), move the appointment onto it, and on failure release the reservation
        with a book token; the appointment keeps its old time.
        """
        events = events or FlowEvents()
        appointment_id = request.appointment_id
        current = self.movable(appointment_id, events, combination=request.combined)
        if starts_at(current, request.start_time):
            events.emit(DONE, appointment_id=appointment_id)
            return FlowResult(appointment_id, current, changed=False)
        if request.end_time is None:
            request = request.with_end(_minutes(current))
        body = request.reservation_body_for(current)
        if request.combined:
            events.step = "service_combinations"
            self.check_combination(body["branchId"], request.services)
        combination = request.combined

        def move(reservation_id: str) -> Appointment:
            return self.client.reschedule(
                appointment_id, reservation_id, scopes=RESCHEDULE_SCOPES, combination=combination
            )

        def moved(_reservation_id: str) -> Appointment | None:
            # Part B leaves open what a used reservation reads as: ask the appointment instead.
            now = self._read(appointment_id, RESCHEDULE_SCOPES, combination)
            return now if now is not None and starts_at(now, request.start_time) else None

        appointment = self._reserve_and_commit(
            body, RESCHEDULE_SCOPES, "reschedule", move, moved, events, combination
        )
        return _result(appointment_id, appointment, events)

    def movable(self, appointment_id: str, events: FlowEvents, *, combination: bool = False) -> Appointment:
        """The appointment a reschedule reads first; refused (409 ``invalid_state``) when a status
        Qmatic shows is not CONFIRMED. A reschedule and a bulk dry run read it here alike."""
        from airflow_provider_qmatic.api.models import AppointmentStatus

        events.step = "get"
        current = self.client.get_appointment(
            appointment_id, scopes=RESCHEDULE_SCOPES, combination=combination
        )
        status = current.status_enum
        if status is not None and status is not AppointmentStatus.CONFIRMED:
            raise QmaticConflictError(
                f"the appointment is {status}; only a confirmed one can be rescheduled",
                code="invalid_state",
            )
        return current

    def cancel(
        self,
        appointment_id: str,
        *,
        check_first: bool = False,
        attempted_before: bool = False,
        events: FlowEvents | None = None,
    ) -> FlowResult[Appointment | None]:
        """Cancel an appointment: 204 is done (``changed=True``).

        Qmatic may delete a cancelled appointment, so a later cancel or get may answer 404. A 404
        (or a 409 with the appointment read as CANCELLED or gone) that answers this client's own
        repeat of a cancel whose first answer was lost, or that follows an earlier try's cancel
        (``attempted_before``: the caller's journal says one was sent), means this call cancelled it:
        ``changed=True``. A 404 to a first, clearly answered attempt means it was gone before:
        ``changed=False``, and a warning says so. A 409 with the appointment still readable and not
        CANCELLED stands (a FINALIZED appointment, for example).

        :param check_first: read the appointment first and send nothing if it reads CANCELLED or is
            gone (404).
        """
        events = events or FlowEvents()
        if check_first:
            done = self.cancelled_already(appointment_id, events, attempted_before=attempted_before)
            if done is not None:
                return done
        events.step = "cancel"
        events.emit(CANCELLING, appointment_id=appointment_id)
        try:
            self.client.cancel(appointment_id, scopes=CANCEL_SCOPES)
        except QmaticNotFoundError as exc:
            return self._gone(appointment_id, attempted_before or exc.after_unclear_attempt, events)
        except QmaticConflictError as exc:
            ours = attempted_before or exc.after_unclear_attempt
            events.step = "get"
            try:
                current = self.client.get_appointment(appointment_id, scopes=CANCEL_SCOPES)
            except QmaticNotFoundError:
                return self._gone(appointment_id, ours, events)
            if not _reads_cancelled(current):
                events.step = "cancel"  # the refusal stands: report it as the cancel's
                raise
            events.emit(DONE, appointment_id=appointment_id)
            return FlowResult(appointment_id, current, changed=ours)
        events.emit(DONE, appointment_id=appointment_id)
        return FlowResult(appointment_id, None, changed=True)

    def cancelled_already(
        self, appointment_id: str, events: FlowEvents, *, attempted_before: bool = False
    ) -> FlowResult[Appointment | None] | None:
        """Read the appointment a cancel would send: its result when it reads CANCELLED or is gone
        (404), else None (a cancel is needed). A cancel's ``check_first`` and a bulk dry run read
        it here alike."""
        events.step = "get"
        try:
            current = self.client.get_appointment(appointment_id, scopes=CANCEL_SCOPES)
        except QmaticNotFoundError:
            return self._gone(appointment_id, attempted_before, events)
        if _reads_cancelled(current):
            events.emit(DONE, appointment_id=appointment_id)
            return FlowResult(appointment_id, current, changed=attempted_before)
        return None

    def _gone(self, appointment_id: str, ours: bool, events: FlowEvents) -> FlowResult[Appointment | None]:
        """A 404 for an appointment to cancel: cancelled by us (``ours``) or gone before."""
        if not ours:
            log.warning(
                "Appointment %s is not found (404): cancelled or deleted before this task; nothing sent",
                appointment_id,
            )
        events.emit(DONE, appointment_id=appointment_id)
        return FlowResult(appointment_id, None, changed=ours)

    def update_customer(
        self,
        appointment_id: str,
        details: CustomerUpdate,
        *,
        current: Appointment | None = None,
        found_by_identifier: bool = False,
        check_first: bool = False,
        events: FlowEvents | None = None,
    ) -> FlowResult[Appointment | None]:
        """Set an appointment's customer details (``PUT .../customer``, 204).

        A PUT: the client repeats it after a lost answer or a 5xx, and a task retry may send it
        again, both harmlessly (the same details are set again). A 404 raises QmaticNotFoundError.

        Skipping: given ``current`` (the appointment as the caller just read it) or with
        ``check_first`` (read here by get), nothing is sent when :func:`customer_matches` finds every
        field of ``details`` already on the appointment's customer. Public answers never show the
        personal identifier, so it matches only when shown and equal, or when ``current`` came from
        a search for ``details.personal_identifier`` (``found_by_identifier=True``): without one of
        these the update is sent. ``changed`` is False for a skipped update, True for a sent one.
        """
        events = events or FlowEvents()
        if current is None and check_first:
            events.step = "get"
            current = self.client.get_appointment(appointment_id, scopes=BOOK_SCOPES)
            found_by_identifier = False
        if current is not None and customer_matches(current, details, identifier_known=found_by_identifier):
            events.emit(DONE, appointment_id=appointment_id)
            return FlowResult(appointment_id, current, changed=False)
        events.step = "update_customer"
        self.client.update_customer(appointment_id, details.to_wire(), scopes=BOOK_SCOPES)
        events.emit(DONE, appointment_id=appointment_id)
        return FlowResult(appointment_id, None, changed=True)

    # -- resuming a killed try --------------------------------------------------------------------

    def settle(
        self,
        reservation_id: str,
        *,
        booking: bool,
        events: FlowEvents | None = None,
        combination: bool | None = False,
    ) -> Settled:
        """Find out what became of a reservation a killed try left without an outcome, and clean up.

        A booking's reservation is read: confirmed (:func:`confirmed_by`: a customer on it and no
        status against it; or a present status CONFIRMED, FINALIZED, or CANCELLED later) means the
        row is done; an unconfirmed one is released here; a 404 means it is gone (released, or
        expired and deleted). A reschedule's reservation is only released: whether the appointment
        moved is read by the row itself, from the appointment. ``unknown`` (only for bookings)
        means Qmatic could not say now: the row must wait for a later try.

        ``combination`` says which get reads a booking's reservation (the ``/serviceCombination/``
        one for several services); None (a bulk journal does not say) reads with the single-service
        get and, on 404, with the combination get too (a refusal of that counts as gone).
        """
        from airflow_provider_qmatic.api.models import AppointmentStatus

        events = events or FlowEvents()
        if not booking:
            self._release(reservation_id, events)
            return Settled("released")
        for _look in range(3):
            try:
                current = self._settle_read(reservation_id, combination)
            except (QmaticNotFoundError, QmaticValidationError):
                events.emit(RELEASED, reservation_id=reservation_id)
                return Settled("released")
            except QmaticError as exc:
                log.warning(
                    "Could not read reservation %s (%s); it stays in the journal", reservation_id, exc
                )
                return Settled("unknown")
            if confirmed_by(current) or current.status_enum is AppointmentStatus.CANCELLED:
                events.emit(DONE, reservation_id=reservation_id, appointment_id=reservation_id)
                return Settled("done", reservation_id)
            if current.status_enum in (AppointmentStatus.RELEASED, AppointmentStatus.EXPIRED):
                events.emit(RELEASED, reservation_id=reservation_id)
                return Settled("released")
            try:
                self.client.release_reservation(reservation_id, scopes=BOOK_SCOPES)
            except (QmaticConflictError, QmaticNotFoundError):
                continue  # confirmed, expired or gone meanwhile (a late request of the killed try)
            except QmaticError as exc:
                log.warning(
                    "Could not release reservation %s (%s); it is held until it expires", reservation_id, exc
                )
                return Settled("unknown")
            events.emit(RELEASED, reservation_id=reservation_id)
            return Settled("released")
        return Settled("unknown")

    # -- internals --------------------------------------------------------------------------------

    def _reserve_and_commit(
        self,
        body: dict[str, Any],
        scopes: frozenset[Scope],
        commit_step: str,
        commit: Callable[[str], Appointment],
        resolve: Callable[[str], Appointment | None],
        events: FlowEvents,
        combination: bool = False,
    ) -> Appointment:
        """Reserve, commit the reservation, and settle a failed commit; within the reserve budget.

        After a lost reserve answer or an expired hold this call reserves again only while two
        reserves are left: the last one is kept for a later try, which may succeed once the holds
        of the lost answers have expired.
        """
        events.step = "reserve"
        if events.reserves_left <= 0:
            raise QmaticConflictError(
                "no reserve left for this booking: earlier tries used its budget of reserves (each "
                "may have held the slot for 15 minutes); check the slot and book it anew",
                code="reserve_budget_spent",
            )
        while True:
            events.step = "reserve"
            events.emit(RESERVING)
            try:
                reservation = self.client.reserve(body, scopes=scopes, combination=combination)
            except QmaticUnknownOutcomeError:
                # Stored or not, nobody can find it (it has no customer); it expires by itself.
                events.emit(LOST)
                if events.reserves_left < 2 or events.stopped():
                    raise
                self._sleep(backoff_delay(events.reserves))
                continue
            except QmaticConflictError as exc:
                held = events.lost_reserves + events.held_before
                if exc.code == "slot_unavailable" and held:
                    raise QmaticOwnHoldsError(
                        f"{exc.message}; the slot may be filled by {held} reservation(s) of this "
                        "booking whose answers were lost: they expire after Qmatic's 15-minute hold, "
                        "so a retry after that can succeed",
                        status=exc.status,
                        code=exc.code,
                    ) from None
                raise
            reservation_id = reservation.appointment_id
            try:
                events.emit(RESERVED, reservation_id=reservation_id)  # journaled before the commit
                events.step = commit_step
                appointment = commit(reservation_id)
            except (QmaticServerError, QmaticConflictError) as exc:
                # The answer is unclear (5xx, lost) or a 409 may answer our own repeat: read. A
                # commit none of whose attempts left this machine cannot have taken effect: reading
                # would only wait on the same lost Redis (or unreachable Qmatic) once more.
                never_sent = isinstance(exc, QmaticNotSentError) and not exc.after_unclear_attempt
                done = None if never_sent else resolve(reservation_id)
                if done is not None:
                    events.emit(DONE, reservation_id=reservation_id, appointment_id=done.appointment_id)
                    return done
                self._release(reservation_id, events)
                if not isinstance(exc, QmaticConflictError) or not _hold_over(exc, events):
                    raise
                if events.reserves_left < 2 or events.stopped():
                    raise
                continue  # the hold ran out before the commit: reserve again
            except BaseException:
                self._release(reservation_id, events)
                raise
            events.emit(DONE, reservation_id=reservation_id, appointment_id=appointment.appointment_id)
            return appointment

    def _release(self, reservation_id: str, events: FlowEvents) -> None:
        """Free a reservation with a book token (Part B: release needs ``book``, whoever reserved).

        The step stays the commit's: the error the caller sees is the commit's, not this one's.
        """
        try:
            self.client.release_reservation(reservation_id, scopes=BOOK_SCOPES)
        except (QmaticNotFoundError, QmaticConflictError):
            pass  # not held any more: expired, released, or used
        except QmaticError as exc:
            events.unreleased += 1
            log.warning(
                "Could not release reservation %s (%s); it holds its place until Qmatic's hold ends",
                reservation_id,
                exc,
            )
            return
        events.emit(RELEASED, reservation_id=reservation_id)

    def _read(
        self, appointment_id: str, scopes: frozenset[Scope], combination: bool = False
    ) -> Appointment | None:
        try:
            return self.client.get_appointment(appointment_id, scopes=scopes, combination=combination)
        except QmaticError:
            return None

    def _settle_read(self, reservation_id: str, combination: bool | None) -> Appointment:
        """A reservation read for :meth:`settle` (see there for ``combination``)."""
        try:
            return self.client.get_appointment(
                reservation_id, scopes=BOOK_SCOPES, combination=bool(combination)
            )
        except QmaticNotFoundError:
            if combination is not None:
                raise
        return self.client.get_appointment(reservation_id, scopes=BOOK_SCOPES, combination=True)


def client_slots(
    client: QmaticClient, branch_id: str, services: tuple[str, ...], first: date, last: date
) -> list[Slot]:
    """Free slots of one service, or of a combination of several (one request either way)."""
    if len(services) > 1:
        return client.find_combination_timeslots(branch_id, services, first, last, scopes=BOOK_SCOPES)
    return client.find_timeslots(branch_id, services[0], first, last, scopes=BOOK_SCOPES)


def _same_services(appointment: Appointment, services: tuple[str, ...]) -> bool:
    """True if the appointment is for ``services``: the ids it shows equal them; or, when it shows
    only ``service`` (Part B allows a combination's answer either form), that one is among them."""
    shown = appointment.service_ids_shown
    if appointment.services:
        return shown == frozenset(services)
    return bool(shown) and shown <= frozenset(services) and (len(services) > 1 or shown == {services[0]})


def starts_at(appointment: Appointment, start: datetime) -> bool:
    """True if the appointment starts at the instant ``start`` (see the module docstring)."""
    slot = appointment.time_slot
    return _same_instant(slot.start_time if slot is not None else None, start)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _hold_over(refusal: QmaticConflictError, events: FlowEvents) -> bool:
    """A 409 to the commit because the reservation's hold ran out: Qmatic's code says so, or the
    15 minutes since the reserve's answer have passed (no public answer carries an expiry)."""
    if refusal.code == "reservation_expired":
        return True
    return events.hold_ends is not None and _now() >= events.hold_ends


def _same_instant(found: datetime | None, wanted: datetime) -> bool:
    if found is None or found.utcoffset() is None or wanted.utcoffset() is None:
        return False
    return found == wanted


def is_booked(appointment: Appointment) -> bool:
    """An appointment a search found (or a get read) counts as booked unless a present status says
    otherwise (RESERVED, CANCELLED, RELEASED, EXPIRED); an unknown status does not say otherwise."""
    from airflow_provider_qmatic.api.models import AppointmentStatus

    return appointment.status_enum not in (
        AppointmentStatus.RESERVED,
        AppointmentStatus.CANCELLED,
        AppointmentStatus.RELEASED,
        AppointmentStatus.EXPIRED,
    )


def confirmed_by(appointment: Appointment, request: BookingRequest | None = None) -> bool:
    """Whether a reservation, read by id, has been confirmed (by ``request``'s customer, if given).

    Public answers carry no status, and a reservation never confirmed answers a get too; what tells
    them apart is the customer, which only a confirm sets: a reservation reads ``customer: null``
    (or none), a confirmed appointment reads the customer. So: confirmed when the answer shows a
    customer and no status other than CONFIRMED or FINALIZED, or (richer answers) a present status
    CONFIRMED or FINALIZED. With ``request``, each customer field the answer shows among the
    personal identifier, names and email must equal the request's (ours, not someone else's).
    """
    from airflow_provider_qmatic.api.models import AppointmentStatus

    status = appointment.status_enum
    if appointment.status is not None and status not in (
        AppointmentStatus.CONFIRMED,
        AppointmentStatus.FINALIZED,
    ):
        return False
    shown = appointment.customer
    if shown is None or not any((shown.personal_identifier, shown.first_name, shown.last_name, shown.email)):
        # No customer, or an empty one (``{}`` is as plausible as ``null`` for a reservation): only
        # a present CONFIRMED or FINALIZED says it was confirmed.
        return status is not None
    if request is None:
        return True
    wanted = request.customer
    pairs = (
        (shown.personal_identifier, wanted.personal_identifier),
        (shown.first_name, wanted.first_name),
        (shown.last_name, wanted.last_name),
    )
    if any(have is not None and have.strip() != want for have, want in pairs):
        return False
    return shown.email is None or shown.email.strip().lower() == wanted.email.lower()


def _reads_cancelled(appointment: Appointment) -> bool:
    from airflow_provider_qmatic.api.models import AppointmentStatus

    return appointment.status_enum is AppointmentStatus.CANCELLED


# What a 400 to a confirm names when the tenant requires a field the request lacks.
_DATE_OF_BIRTH = re.compile(r"date[ _]?of[ _]?birth", re.IGNORECASE)
_QUESTION = re.compile(r"information[ _]?questions?(?:\[(?P<id>[^\]\s]{1,255})\])?", re.IGNORECASE)


def tenant_required_field(
    refusal: QmaticValidationError, request: BookingRequest
) -> QmaticTenantRequiresFieldError | None:
    """The refusal of a confirm as :class:`QmaticTenantRequiresFieldError` when Qmatic named a field
    the tenant may require (``dateOfBirth``, an information question) and the request lacks it;
    else None (the refusal is about something else, or the field was given and is wrong).

    Qmatic names the field in its message (Part B); ``informationQuestions[<questionId>]`` names the
    question, as the sandbox does.
    """
    if refusal.status != 400:
        return None
    text = f"{refusal.field or ''} {refusal.message}"
    action = "Qmatic refused the confirm, and the reservation was released"
    if _DATE_OF_BIRTH.search(text) and request.customer.date_of_birth is None:
        return QmaticTenantRequiresFieldError(
            "date_of_birth: this tenant requires the customer's date of birth to confirm a booking "
            f"({action}); give customer date_of_birth (YYYY-MM-DD): the operator's "
            "customer={..., 'date_of_birth': ...}, or a date_of_birth column in a bulk file",
            status=refusal.status,
            code=refusal.code,
            field="date_of_birth",
        )
    match = _QUESTION.search(text)
    if match is None:
        return None
    question = match.group("id")
    answered = {answer.question_id for answer in request.information_questions}
    if question is not None and question in answered:
        return None
    if question is None and answered:
        return None  # some answers were given: the refusal may be about one of them
    name = question or "<questionId>"
    return QmaticTenantRequiresFieldError(
        f"question:{name}: this tenant requires an answer to information question {name} to confirm "
        f"a booking ({action}); give it: the operator's information_questions={{'{name}': ...}}, or "
        f"a question:{name} column in a bulk file",
        status=refusal.status,
        code=refusal.code,
        field=f"question:{question or ''}",
    )


def customer_matches(appointment: Appointment, details: CustomerUpdate, *, identifier_known: bool) -> bool:
    """True when the appointment's customer already carries every field of ``details``.

    Each field ``details`` sets must be shown by the answer and equal (email case-insensitively,
    as addresses are compared; the date of birth as ``YYYY-MM-DD``); a field the answer leaves out
    counts as different, so an update is never skipped on a field nobody could read. The personal
    identifier, which no public answer shows, may instead be vouched for by the caller
    (``identifier_known``: the appointment was found by searching it).
    """
    shown = appointment.customer
    if shown is None:
        return False
    wanted = details.to_wire()
    have = {key: value for key, value in shown.model_dump(by_alias=True).items() if value is not None}
    if identifier_known and "personalIdentifier" not in have:
        have["personalIdentifier"] = details.personal_identifier
    for key, value in wanted.items():
        found = have.get(key)
        if found is None:
            return False
        if key == "email":
            if str(found).strip().lower() != str(value).lower():
                return False
        elif str(found).strip() != str(value):
            return False
    return True


def _result(appointment_id: str, appointment: Appointment, events: FlowEvents) -> FlowResult[Appointment]:
    return FlowResult(
        appointment_id,
        appointment,
        changed=True,
        reserves=events.reserves,
        possibly_orphaned=events.possibly_orphaned,
    )


def _minutes(appointment: Appointment) -> int:
    """The appointment's length in minutes, which a reschedule without ``end_time`` keeps."""
    slot = appointment.time_slot
    if slot is None or slot.start_time is None or slot.end_time is None:
        raise QmaticValidationError(
            "end_time: the appointment has no end time to keep the duration from; give end_time",
            field="end_time",
        )
    return max(1, round((slot.end_time - slot.start_time).total_seconds() / 60))
