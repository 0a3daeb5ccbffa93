"""Operators for single appointments: book, reschedule, cancel, and find free time slots.

Each operator validates its arguments with the provider's models before any request, asks Qmatic
for a token with only the scope its operation needs, and returns a JSON-ready dict (or list of
dicts) for XCom that carries neither a secret nor the customer's personal data.

Errors that no retry can fix (bad arguments, 400, 403, 404, a slot already taken) fail the task at
once without spending Airflow retries; rate limits and server faults propagate, so the task's own
``retries`` apply.

DAG files import this module every time the scheduler parses them, so it imports nothing heavy at
module level: the models (pydantic), the client (requests) and the hook are imported inside
``execute``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from airflow_provider_qmatic import DEFAULT_CONN_ID
from airflow_provider_qmatic.api.slots import DEFAULT_DAYS
from airflow_provider_qmatic.operators._base import QmaticBaseOperator, rendered

if TYPE_CHECKING:
    from datetime import tzinfo

    from airflow_provider_qmatic.api.models import Appointment, BookingRequest

    Context = Mapping[str, Any]

__all__ = [
    "QmaticBookAppointmentOperator",
    "QmaticCancelAppointmentOperator",
    "QmaticFindTimeslotsOperator",
    "QmaticRescheduleAppointmentOperator",
]


class QmaticBookAppointmentOperator(QmaticBaseOperator):
    """Book one appointment: reserve the slot, then confirm it with the customer.

    If confirming fails the reservation is released before the task fails, so a failed task never
    leaves a slot held for Qmatic's 15 minutes. On a retry (``try_number > 1``) the customer's
    appointments are searched first: one already CONFIRMED at the same branch, service and start
    time (booked by an earlier try whose answer was lost) is returned instead of booking twice. The
    reservation is written to the task instance's journal before its confirm, so a retry after a
    killed try releases the hold that try left.

    XCom: the confirmed appointment as a dict (``Appointment.to_xcom()``; customer left out).

    :param branch_id: the branch's id (GUID). Templated.
    :param service_id: the service's id (GUID). Templated.
    :param service_ids: instead of ``service_id``, several services in one appointment (Qmatic's
        service combinations, which the branch must list as combinable: checked before any
        reserve): a list of ids, or text holding a JSON list. Give exactly one of the two. Booked
        through the ``/serviceCombination/`` calls, with the same guarantees. Templated.
    :param start_time: ISO-8601 text with an offset (``2026-12-01T09:00:00+01:00``) or an aware
        ``datetime``; a time without offset needs ``timezone``. Templated.
    :param end_time: like ``start_time``; left out, it is ``start_time`` plus the service's
        duration (one extra read of the branch's services). Templated.
    :param customer: ``personal_identifier``, ``first_name``, ``last_name``, ``email`` and
        optionally ``phone_number``, ``date_of_birth`` (snake_case or camelCase keys): a dict, a
        :class:`~airflow_provider_qmatic.api.models.Customer`, an XComArg, or a Jinja string that
        renders to a JSON object. Templated (rendered as JSON in the UI).
    :param notes: free text stored with the appointment. Templated.
    :param resource_id: a specific resource (GUID), if the branch uses them. Templated.
    :param number_of_reservations: places to hold in the slot (default 1); with ``service_ids``,
        people per service (Qmatic is sent the sum over the services). Templated.
    :param information_questions: answers to the service's questions, as ``{question_id: answer}``
        or a list of ``{"question_id", "answer"}``. Templated.
    :param timezone: IANA zone name (``"Europe/Stockholm"``) in which times without an offset are
        read; without it such times are refused. Templated.
    :param qmatic_conn_id: the Airflow connection to Qmatic Cloud. Templated.
    """

    template_fields: Sequence[str] = (
        "branch_id",
        "service_id",
        "service_ids",
        "start_time",
        "end_time",
        "customer",
        "notes",
        "resource_id",
        "number_of_reservations",
        "information_questions",
        "timezone",
        "qmatic_conn_id",
    )
    template_fields_renderers = {"customer": "json", "information_questions": "json", "service_ids": "json"}
    ui_color = "#c9e4f6"

    def __init__(
        self,
        *,
        branch_id: str,
        start_time: str | datetime,
        customer: Any,
        service_id: str | None = None,
        service_ids: Any = None,
        end_time: str | datetime | None = None,
        notes: str | None = None,
        resource_id: str | None = None,
        number_of_reservations: int | str = 1,
        information_questions: Any = None,
        timezone: str | None = None,
        qmatic_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(qmatic_conn_id=qmatic_conn_id, **kwargs)
        self.branch_id = branch_id
        self.service_id = service_id
        self.service_ids = service_ids
        self.start_time = start_time
        self.end_time = end_time
        self.customer = customer
        self.notes = notes
        self.resource_id = resource_id
        self.number_of_reservations = number_of_reservations
        self.information_questions = information_questions
        self.timezone = timezone

    def execute(self, context: Context) -> dict[str, Any]:
        with self.failing_fast():
            request = self._request()  # every argument checked before any request
            try_number = _try_number(context)
            result = self.journaled(
                context,
                booking=True,
                flow=lambda flows, events: flows.book(request, check_existing=try_number > 1, events=events),
                combination=request.combined,
            )
        appointment = result.appointment
        if result.changed:
            self.log.info(
                "Booked appointment %s for %s", result.appointment_id, _describe(appointment, self.timezone)
            )
        else:
            self.log.info(
                "Try %d: appointment %s for this customer at %s is already CONFIRMED (booked by an "
                "earlier try); returning it instead of booking again",
                try_number,
                result.appointment_id,
                _describe(appointment, self.timezone),
            )
        return appointment.to_xcom()

    def _request(self) -> BookingRequest:
        from airflow_provider_qmatic.api.models import BookingRequest

        data: dict[str, Any] = {
            "branch_id": self.branch_id,
            **_services(self.service_id, self.service_ids),
            "start_time": self.start_time,
            "end_time": self.end_time,
            "customer": rendered(self.customer, "customer"),
            "notes": self.notes,
            "resource_id": self.resource_id,
            "number_of_reservations": self.number_of_reservations,
        }
        if self.information_questions is not None:
            data["information_questions"] = rendered(self.information_questions, "information_questions")
        return BookingRequest.parse(data, timezone=self.timezone)


class QmaticRescheduleAppointmentOperator(QmaticBaseOperator):
    """Move a confirmed appointment to another time (same branch and service).

    A new slot is reserved and the appointment moved onto it; if moving fails the new reservation
    is released and the appointment keeps its old time. An appointment already at the target time
    is left alone and the task succeeds, so a retried task is harmless. The new reservation is
    written to the task instance's journal before the move, so a retry after a killed try releases
    the hold that try left.

    XCom: the moved appointment as a dict (``Appointment.to_xcom()``).

    :param appointment_id: the appointment's id (GUID). Templated.
    :param start_time: the new start (ISO-8601 with offset, or an aware ``datetime``). Templated.
    :param end_time: the new end; left out, the appointment keeps its current length. Templated.
    :param timezone: IANA zone name for times written without an offset. Templated.
    :param notes: notes for the new reservation. Templated.
    :param service_ids: for an appointment of several services (Qmatic's service combinations):
        its services, as booked (a list, or text holding a JSON list); it is then moved through the
        ``/serviceCombination/`` calls. Left out: an appointment of one service. Templated.
    :param qmatic_conn_id: the Airflow connection to Qmatic Cloud. Templated.
    """

    template_fields: Sequence[str] = (
        "appointment_id",
        "start_time",
        "end_time",
        "timezone",
        "notes",
        "service_ids",
        "qmatic_conn_id",
    )
    template_fields_renderers = {"service_ids": "json"}
    ui_color = "#f6e7c9"

    def __init__(
        self,
        *,
        appointment_id: str,
        start_time: str | datetime,
        end_time: str | datetime | None = None,
        timezone: str | None = None,
        notes: str | None = None,
        service_ids: Any = None,
        qmatic_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(qmatic_conn_id=qmatic_conn_id, **kwargs)
        self.appointment_id = appointment_id
        self.start_time = start_time
        self.end_time = end_time
        self.timezone = timezone
        self.notes = notes
        self.service_ids = service_ids

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_qmatic.api.models import RescheduleRequest

        with self.failing_fast():
            request = RescheduleRequest.parse(
                {
                    "appointment_id": self.appointment_id,
                    "start_time": self.start_time,
                    "end_time": self.end_time,
                    "notes": self.notes,
                    "service_ids": _service_list(self.service_ids),
                },
                timezone=self.timezone,
            )
            result = self.journaled(
                context,
                booking=False,
                flow=lambda flows, events: flows.reschedule(request, events=events),
                combination=request.combined,
            )
        appointment = result.appointment
        if result.changed:
            self.log.info(
                "Rescheduled appointment %s to %s",
                result.appointment_id,
                _describe(appointment, self.timezone),
            )
        else:
            self.log.info(
                "Appointment %s is already at %s; nothing to change",
                result.appointment_id,
                _describe(appointment, self.timezone),
            )
        return appointment.to_xcom()


class QmaticCancelAppointmentOperator(QmaticBaseOperator):
    """Cancel a confirmed appointment. An appointment already cancelled, or gone, counts as done.

    Qmatic may delete an appointment when it is cancelled (its public cancel page: "cancelled/
    deleted"), so a repeated cancel, or a cancel of an appointment cancelled elsewhere, may meet 404.
    That 404 cannot tell "cancelled and deleted before" from "never existed", and a repeated task must
    not fail, so it counts as done: the task succeeds with ``status`` ``NOT_FOUND``.

    XCom: ``{"appointment_id", "status", "already_cancelled", "appointment"}``: ``status`` is
    ``CANCELLED`` (``appointment`` is the appointment as read when it was already cancelled, else
    None: a successful cancel answers 204 with no body) or ``NOT_FOUND`` (gone; ``appointment`` None).

    :param appointment_id: the appointment's id (GUID). Templated.
    :param missing_ok: whether a 404 is expected (a job that cancels appointments that may be gone):
        True logs it as information, False (the default) as a warning to check the id.
    :param qmatic_conn_id: the Airflow connection to Qmatic Cloud. Templated.
    """

    template_fields: Sequence[str] = ("appointment_id", "qmatic_conn_id")
    ui_color = "#f6c9c9"

    def __init__(
        self,
        *,
        appointment_id: str,
        missing_ok: bool = False,
        qmatic_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(qmatic_conn_id=qmatic_conn_id, **kwargs)
        self.appointment_id = appointment_id
        self.missing_ok = missing_ok

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_qmatic.api.models import CancelRequest

        with self.failing_fast():
            appointment_id = CancelRequest.parse({"appointment_id": self.appointment_id}).appointment_id
            result = self.hook.cancel(appointment_id)
        gone = not result.changed and result.appointment is None
        if gone:
            report = self.log.info if self.missing_ok else self.log.warning
            report(
                "Appointment %s was not found (404): cancelled and deleted before, or never existed "
                "(check the id); nothing to cancel",
                appointment_id,
            )
        elif result.changed:
            self.log.info("Cancelled appointment %s", appointment_id)
        else:
            self.log.info("Appointment %s was already cancelled; nothing to do", appointment_id)
        return {
            "appointment_id": appointment_id,
            "status": "NOT_FOUND" if gone else "CANCELLED",
            "already_cancelled": not result.changed,
            "appointment": result.appointment.to_xcom() if result.appointment is not None else None,
        }


class QmaticFindTimeslotsOperator(QmaticBaseOperator):
    """List the time slots of a service at a branch between two dates (both included).

    The result feeds a mapped booking: map each slot into the booking's arguments and expand
    :class:`QmaticBookAppointmentOperator` over them (see ``docs/operators.md``).

    XCom: a list of ``{"branch_id", "service_id", "start_time", "end_time", "available"}``,
    times as ISO-8601 text with the branch's offset (``service_ids``, a list, instead of
    ``service_id`` for several services).

    :param branch_id: the branch's id (GUID). Templated.
    :param service_id: the service's id (GUID). Templated.
    :param service_ids: instead of ``service_id``, several services in one appointment: the slots
        long enough for all of them (Qmatic's ``/serviceCombination/`` time slots). Exactly one of
        the two. Templated.
    :param date_from: first day: a ``date``, a ``datetime`` (its own calendar day) or ISO text
        such as ``"{{ ds }}"``; None (or blank) means today (UTC). Templated.
    :param date_to: last day, same forms; None (or blank) means ``date_from`` plus
        :attr:`DEFAULT_DAYS` days. Templated.
    :param only_available: leave out slots Qmatic reports as full (default True).
    :param limit: return at most this many slots (the earliest), or all when None. Templated.
    :param qmatic_conn_id: the Airflow connection to Qmatic Cloud. Templated.
    """

    template_fields: Sequence[str] = (
        "branch_id",
        "service_id",
        "service_ids",
        "date_from",
        "date_to",
        "limit",
        "qmatic_conn_id",
    )
    template_fields_renderers = {"service_ids": "json"}
    ui_color = "#d9f6c9"
    #: Days searched after ``date_from`` when ``date_to`` is not given.
    DEFAULT_DAYS = DEFAULT_DAYS

    def __init__(
        self,
        *,
        branch_id: str,
        service_id: str | None = None,
        service_ids: Any = None,
        date_from: str | date | None = None,
        date_to: str | date | None = None,
        only_available: bool = True,
        limit: int | str | None = None,
        qmatic_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(qmatic_conn_id=qmatic_conn_id, **kwargs)
        self.branch_id = branch_id
        self.service_id = service_id
        self.service_ids = service_ids
        self.date_from = date_from
        self.date_to = date_to
        self.only_available = only_available
        self.limit = limit

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow_provider_qmatic.api.models import validate_service_ids
        from airflow_provider_qmatic.api.slots import SlotQuery, as_limit

        with self.failing_fast():
            services = _services(self.service_id, self.service_ids)
            several = validate_service_ids(services["service_ids"]) if "service_ids" in services else None
            if several is not None and len(several) == 1:
                services, several = {"service_id": several[0]}, None
            query = SlotQuery.parse(
                branch_id=self.branch_id,
                service_id=several[0] if several else services["service_id"],
                date_from=self.date_from,
                date_to=self.date_to,
            )
            limit = as_limit(self.limit)
            if several:
                slots = self.hook.find_combination_timeslots(
                    query.branch_id, several, query.date_from, query.date_to
                )
            else:
                slots = self.hook.find_timeslots(
                    query.branch_id, query.service_id, query.date_from, query.date_to
                )
        found = len(slots)
        if self.only_available:
            slots = query.matching(slots)
        if limit is not None:
            slots = slots[:limit]
        self.log.info(
            "Found %d time slot(s) from %s to %s, returning %d%s",
            found,
            query.date_from.isoformat(),
            query.date_to.isoformat(),
            len(slots),
            " (only available ones)" if self.only_available else "",
        )
        found_slots = query.xcom(slots)
        if several:  # each slot names all the services, ready to feed a booking of them
            for item in found_slots:
                del item["service_id"]
                item["service_ids"] = list(several)
        return found_slots


# -- helpers ----------------------------------------------------------------------------------------


def _services(service_id: Any, service_ids: Any) -> dict[str, Any]:
    """``{"service_id": ...}`` or ``{"service_ids": ...}``: exactly one of the two arguments given."""
    from airflow_provider_qmatic.exceptions import QmaticValidationError

    given = [
        name for name, value in (("service_id", service_id), ("service_ids", service_ids)) if _given(value)
    ]
    if len(given) != 1:
        raise QmaticValidationError(
            "service_id, service_ids: give exactly one: service_id for one service, or service_ids "
            "(a list of ids) for several services in one appointment"
            + ("; both were given" if given else "; neither was given"),
            field="service_ids" if given else "service_id",
        )
    if given == ["service_id"]:
        return {"service_id": service_id}
    return {"service_ids": _service_list(service_ids)}


def _service_list(value: Any) -> Any:
    """Service ids as given, or the list a template rendered to text holds (JSON, or a repr)."""
    if isinstance(value, str) and value.strip().startswith("["):
        return rendered(value, "service_ids", want="a list of service ids")
    return value


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, (str, list, tuple)) and not value)


def _try_number(context: Context) -> int:
    ti = context.get("ti") or context.get("task_instance")
    try:
        return int(getattr(ti, "try_number", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _describe(appointment: Appointment, zone_name: str | None = None) -> str:
    """``Stockholm City/Passport application at 2026-12-01 09:00 UTC+01:00`` for a log line."""
    branch = (appointment.branch.name or appointment.branch.id) if appointment.branch else "?"
    services = appointment.services or ([appointment.service] if appointment.service else [])
    service = " + ".join(s.name or s.id or "?" for s in services) or "?"
    start = appointment.time_slot.start_time if appointment.time_slot else None
    return f"{branch}/{service} at {_when(start, zone_name)}"


def _when(value: datetime | None, zone_name: str | None) -> str:
    """A time as people read it: in the named zone if one was given, else with its own offset."""
    if value is None:
        return "an unknown time"
    if value.tzinfo is None or value.utcoffset() is None:
        return value.strftime("%Y-%m-%d %H:%M")
    zone = _zone(zone_name)
    if zone is not None:
        return f"{value.astimezone(zone):%Y-%m-%d %H:%M} {zone_name}"
    offset = value.strftime("%z")
    shown = "UTC" if offset in ("+0000", "-0000") else f"UTC{offset[:3]}:{offset[3:5]}"
    return f"{value:%Y-%m-%d %H:%M} {shown}"


def _zone(name: str | None) -> tzinfo | None:
    if not name or not isinstance(name, str):
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        return None
