"""The booking flows, written once: reserve -> commit -> settle, and "is this already done?".

The single operators and the bulk runner both call :class:`Flows`; nothing else composes API calls.
Plain Python (no Airflow), over a :class:`~airflow_provider_qmatic.client.QmaticClient`.

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
* **Already done?** A CONFIRMED appointment of the customer at the branch, service and start
  instant; an appointment already at the target start; an appointment already CANCELLED.
* **What happened** comes back as a :class:`FlowResult` (done by this call, or found done), and
  :class:`FlowEvents` reports each step as it happens (the bulk runner journals them), so no
  caller reads the client's request counters.

Times are compared as instants (aware datetimes, ``==`` across offsets): Part B promises ISO-8601
with an offset, and ``09:00+01:00`` is ``08:00+00:00``. A time Qmatic sent without an offset names
no instant, so it never counts as "the same start": treating wall-clock equality as equal could
skip a row that was never booked. Statuses are compared as :class:`AppointmentStatus` members.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from airflow_provider_qmatic.exceptions import (
    QmaticConflictError,
    QmaticError,
    QmaticNotFoundError,
    QmaticOwnHoldsError,
    QmaticServerError,
    QmaticUnknownOutcomeError,
    QmaticValidationError,
)
from airflow_provider_qmatic.retry import backoff_delay
from airflow_provider_qmatic.scopes import Scope

if TYPE_CHECKING:
    from datetime import datetime

    from airflow_provider_qmatic.client import QmaticClient
    from airflow_provider_qmatic.models import (
        Appointment,
        BookingRequest,
        CustomerUpdate,
        RescheduleRequest,
        Service,
    )

log = logging.getLogger(__name__)

BOOK = frozenset({Scope.BOOK})
RESCHEDULE = frozenset({Scope.RESCHEDULE})
CANCEL = frozenset({Scope.CANCEL})
# Reserves one booking or reschedule may send in all: after lost answers, after expired holds and,
# in bulk, over task retries (the journal carries the count). Each lost answer may hold a place for
# 15 minutes; one call keeps the last reserve for a later try (see Flows._reserve_and_commit).
RESERVE_BUDGET = 6

# Journal events a flow reports through FlowEvents.record (the bulk runner writes them down).
RESERVING, LOST, RESERVED, DONE, RELEASED, CANCELLING = (
    "reserving",
    "lost",
    "reserved",
    "done",
    "released",
    "cancelling",
)

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
        self._record = record
        self._stopped = stopped

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
    :param list_services: how to read a branch's services (the bulk runner caches them per branch).
    :param search: how to search a customer's appointments (the bulk runner caches per customer).
    """

    def __init__(
        self,
        client: QmaticClient,
        *,
        list_services: Callable[[str], list[Service]] | None = None,
        search: Callable[[str], list[Appointment]] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self._list_services = list_services or (
            lambda branch_id: client.list_services(branch_id, scopes=BOOK)
        )
        self._search = search or (lambda pid: client.search_appointments(pid, scopes=BOOK))
        self._sleep = sleep

    # -- already done? --------------------------------------------------------------------------

    def existing_booking(self, request: BookingRequest) -> Appointment | None:
        """A CONFIRMED appointment of this customer at the request's branch, service and start."""
        from airflow_provider_qmatic.models import AppointmentStatus

        for appointment in self._search(request.customer.personal_identifier):
            if (
                appointment.status_enum is AppointmentStatus.CONFIRMED
                and appointment.branch is not None
                and appointment.branch.id == request.branch_id
                and appointment.service is not None
                and appointment.service.id == request.service_id
                and starts_at(appointment, request.start_time)
            ):
                return appointment
        return None

    def service_duration(self, branch_id: str, service_id: str) -> int:
        """The service's duration at the branch, for a booking given without ``end_time``."""
        for service in self._list_services(branch_id):
            if service.id == service_id:
                if not service.duration_minutes:
                    raise QmaticValidationError(
                        f"end_time: Qmatic gives no duration for service {service_id}, so the end "
                        "cannot be worked out; pass end_time",
                        field="end_time",
                    )
                return int(service.duration_minutes)
        raise QmaticNotFoundError(
            f"service {service_id} is not offered at branch {branch_id}; check service_id (the "
            "branch's services are listed by QmaticHook().list_services(branch_id))",
            status=404,
            code="not_found",
        )

    # -- the three flows ------------------------------------------------------------------------

    def book(
        self, request: BookingRequest, *, check_existing: bool = False, events: FlowEvents | None = None
    ) -> FlowResult[Appointment]:
        """Book one appointment: reserve, confirm, settle.

        :param check_existing: search the customer's appointments first and return one already
            CONFIRMED at this branch, service and start instead of booking again (a retry).
        """
        from airflow_provider_qmatic.models import AppointmentStatus

        events = events or FlowEvents()
        if check_existing:
            events.step = "search"
            existing = self.existing_booking(request)
            if existing is not None:
                events.emit(DONE, appointment_id=existing.appointment_id)
                return FlowResult(existing.appointment_id, existing, changed=False)
        if request.end_time is None:
            events.step = "list_services"
            request = request.with_end(self.service_duration(request.branch_id, request.service_id))
        confirmation = request.confirmation_body()

        def confirm(reservation_id: str) -> Appointment:
            return self.client.confirm(reservation_id, confirmation, scopes=BOOK)

        def confirmed(reservation_id: str) -> Appointment | None:
            current = self._read(reservation_id, BOOK)
            ok = current is not None and current.status_enum is AppointmentStatus.CONFIRMED
            return current if ok else None

        appointment = self._reserve_and_commit(
            request.reservation_body(), BOOK, "confirm", confirm, confirmed, events
        )
        return _result(appointment.appointment_id, appointment, events)

    def reschedule(
        self, request: RescheduleRequest, *, events: FlowEvents | None = None
    ) -> FlowResult[Appointment]:
        """Move a CONFIRMED appointment to ``request.start_time`` (same branch and service).

        Already there: returned unchanged, nothing sent. Otherwise reserve the new slot (with the
        reschedule scope), move the appointment onto it, and on failure release the reservation
        with a book token; the appointment keeps its old time.
        """
        from airflow_provider_qmatic.models import AppointmentStatus

        events = events or FlowEvents()
        appointment_id = request.appointment_id
        events.step = "get"
        current = self.client.get_appointment(appointment_id, scopes=RESCHEDULE)
        if current.status_enum is not AppointmentStatus.CONFIRMED:
            raise QmaticConflictError(
                f"the appointment is {current.status or 'in an unknown state'}; only a CONFIRMED one can "
                "be rescheduled",
                code="invalid_state",
            )
        if starts_at(current, request.start_time):
            events.emit(DONE, appointment_id=appointment_id)
            return FlowResult(appointment_id, current, changed=False)
        if request.end_time is None:
            request = request.with_end(_minutes(current))
        body = request.reservation_body_for(current)

        def move(reservation_id: str) -> Appointment:
            return self.client.reschedule(appointment_id, reservation_id, scopes=RESCHEDULE)

        def moved(_reservation_id: str) -> Appointment | None:
            # Part B leaves open what a used reservation reads as: ask the appointment instead.
            now = self._read(appointment_id, RESCHEDULE)
            return now if now is not None and starts_at(now, request.start_time) else None

        appointment = self._reserve_and_commit(body, RESCHEDULE, "reschedule", move, moved, events)
        return _result(appointment_id, appointment, events)

    def cancel(
        self, appointment_id: str, *, check_first: bool = False, events: FlowEvents | None = None
    ) -> FlowResult[Appointment | None]:
        """Cancel a CONFIRMED appointment; one already CANCELLED counts as done (``changed=False``).

        A 409 that answers the client's own repeat of a cancel whose first answer was lost means
        this call cancelled it (Part B): ``changed=True``. A 409 to a first, clearly answered
        attempt means it was cancelled before.

        :param check_first: read the appointment first and send nothing if it is CANCELLED.
        """
        from airflow_provider_qmatic.models import AppointmentStatus

        events = events or FlowEvents()
        if check_first:
            events.step = "get"
            current = self.client.get_appointment(appointment_id, scopes=CANCEL)
            if current.status_enum is AppointmentStatus.CANCELLED:
                events.emit(DONE, appointment_id=appointment_id)
                return FlowResult(appointment_id, current, changed=False)
        events.step = "cancel"
        events.emit(CANCELLING, appointment_id=appointment_id)
        try:
            self.client.cancel(appointment_id, scopes=CANCEL)
        except QmaticConflictError as exc:
            events.step = "get"
            current = self.client.get_appointment(appointment_id, scopes=CANCEL)
            if current.status_enum is not AppointmentStatus.CANCELLED:
                events.step = "cancel"  # the refusal stands: report it as the cancel's
                raise
            events.emit(DONE, appointment_id=appointment_id)
            return FlowResult(appointment_id, current, changed=exc.after_unclear_attempt)
        events.emit(DONE, appointment_id=appointment_id)
        return FlowResult(appointment_id, None, changed=True)

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
            current = self.client.get_appointment(appointment_id, scopes=BOOK)
            found_by_identifier = False
        if current is not None and customer_matches(current, details, identifier_known=found_by_identifier):
            events.emit(DONE, appointment_id=appointment_id)
            return FlowResult(appointment_id, current, changed=False)
        events.step = "update_customer"
        self.client.update_customer(appointment_id, details.to_wire(), scopes=BOOK)
        events.emit(DONE, appointment_id=appointment_id)
        return FlowResult(appointment_id, None, changed=True)

    # -- resuming a killed try --------------------------------------------------------------------

    def settle(self, reservation_id: str, *, booking: bool, events: FlowEvents | None = None) -> Settled:
        """Find out what became of a reservation a killed try left without an outcome, and clean up.

        A booking's reservation is read: CONFIRMED (or CANCELLED later) means the row is done, still
        RESERVED means it is released here. A reschedule's reservation is only released: whether
        the appointment moved is read by the row itself, from the appointment. ``unknown`` (only for
        bookings) means Qmatic could not say now: the row must wait for a later try.
        """
        from airflow_provider_qmatic.models import AppointmentStatus

        events = events or FlowEvents()
        if not booking:
            self._release(reservation_id, events)
            return Settled("released")
        for _look in range(3):
            try:
                current = self.client.get_appointment(reservation_id, scopes=BOOK)
            except QmaticNotFoundError:
                events.emit(RELEASED, reservation_id=reservation_id)
                return Settled("released")
            except QmaticError as exc:
                log.warning(
                    "Could not read reservation %s (%s); it stays in the journal", reservation_id, exc
                )
                return Settled("unknown")
            status = current.status_enum
            if status in (AppointmentStatus.CONFIRMED, AppointmentStatus.CANCELLED):
                events.emit(DONE, reservation_id=reservation_id, appointment_id=reservation_id)
                return Settled("done", reservation_id)
            if status is not AppointmentStatus.RESERVED:
                events.emit(RELEASED, reservation_id=reservation_id)
                return Settled("released")
            try:
                self.client.release_reservation(reservation_id, scopes=BOOK)
            except QmaticConflictError:
                continue  # confirmed or expired meanwhile (a late request of the killed try): look again
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
                reservation = self.client.reserve(body, scopes=scopes)
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
                # The answer is unclear (5xx, lost) or a 409 may answer our own repeat: read.
                done = resolve(reservation_id)
                if done is not None:
                    events.emit(DONE, reservation_id=reservation_id, appointment_id=done.appointment_id)
                    return done
                self._release(reservation_id, events)
                if exc.code != "reservation_expired" or events.reserves_left < 2 or events.stopped():
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
            self.client.release_reservation(reservation_id, scopes=BOOK)
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

    def _read(self, appointment_id: str, scopes: frozenset[Scope]) -> Appointment | None:
        try:
            return self.client.get_appointment(appointment_id, scopes=scopes)
        except QmaticError:
            return None


def starts_at(appointment: Appointment, start: datetime) -> bool:
    """True if the appointment starts at the instant ``start`` (see the module docstring)."""
    slot = appointment.time_slot
    found = slot.start_time if slot is not None else None
    if found is None or found.utcoffset() is None or start.utcoffset() is None:
        return False
    return found == start


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
