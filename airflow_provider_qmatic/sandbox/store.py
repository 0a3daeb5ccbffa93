"""The sandbox's state: catalogue, slot occupancy, appointments and tokens, behind one lock.

Pure Python (no web framework), so it can be unit-tested and driven in process. Every public method
takes the lock, first lets overdue reservations expire (lazily, but before anything reads a slot or
an appointment, so the answers are always correct), then does a small amount of work: handlers
stay cheap even with thousands of appointments, and nothing copies the whole store per request.

Appointments are private to the tenant that created them (another tenant gets 404); the seeded
branches and their slot capacity are shared by all tenants.
"""

from __future__ import annotations

import heapq
import secrets
import threading
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from airflow_provider_qmatic.models import AppointmentStatus
from airflow_provider_qmatic.sandbox.clock import Clock
from airflow_provider_qmatic.sandbox.errors import SandboxError, conflict, not_found
from airflow_provider_qmatic.sandbox.seed import Branch, SeedData, Service
from airflow_provider_qmatic.sandbox.settings import SandboxClient
from airflow_provider_qmatic.scopes import Scope

RESERVED = AppointmentStatus.RESERVED
CONFIRMED = AppointmentStatus.CONFIRMED
CANCELLED = AppointmentStatus.CANCELLED
RELEASED = AppointmentStatus.RELEASED
EXPIRED = AppointmentStatus.EXPIRED


class Slot:
    """One bookable time of one service at one branch, and how many people hold it."""

    __slots__ = ("branch_id", "end", "end_ts", "service_id", "start", "start_ts", "used")

    def __init__(self, branch_id: str, service_id: str, start: datetime, end: datetime) -> None:
        self.branch_id = branch_id
        self.service_id = service_id
        self.start = start
        self.end = end
        self.start_ts = start.timestamp()
        self.end_ts = end.timestamp()
        self.used = 0

    def time_slot(self) -> dict[str, str]:
        return {"startTime": self.start.isoformat(), "endTime": self.end.isoformat()}


class Appointment:
    """A reservation, later (maybe) an appointment: one record, one id, through every status."""

    __slots__ = (
        "branch",
        "client_id",
        "created_at",
        "customer",
        "expires_at",
        "id",
        "information_questions",
        "notes",
        "number",
        "resource_id",
        "service",
        "slot",
        "status",
        "tenant",
        "updated_at",
    )

    def __init__(
        self,
        *,
        tenant: str,
        client_id: str,
        branch: Branch,
        service: Service,
        slot: Slot,
        number: int,
        notes: str | None,
        resource_id: str | None,
        now: float,
        expires_at: float,
    ) -> None:
        self.id = str(uuid.uuid4())
        self.tenant = tenant
        self.client_id = client_id
        self.branch = branch
        self.service = service
        self.slot = slot
        self.number = number
        self.notes = notes
        self.resource_id = resource_id
        self.status = RESERVED
        self.expires_at: float | None = expires_at
        self.customer: dict[str, Any] | None = None
        self.information_questions: list[dict[str, str]] = []
        self.created_at = now
        self.updated_at = now

    def to_json(self) -> dict[str, Any]:
        """The Appointment of Part B, exactly its keys."""
        return {
            "appointmentId": self.id,
            "status": self.status,
            "timeSlot": self.slot.time_slot(),
            "branch": {"id": self.branch.id, "name": self.branch.name},
            "service": {"id": self.service.id, "name": self.service.name},
            "customer": dict(self.customer) if self.customer is not None else None,
            "numberOfReservations": self.number,
            "notes": self.notes,
            "expiresAt": iso_utc(self.expires_at) if self.expires_at is not None else None,
        }

    def to_admin_json(self) -> dict[str, Any]:
        """Part B's shape plus what only the sandbox knows (tenant, client, timestamps, answers)."""
        data = self.to_json()
        data.update(
            tenant=self.tenant,
            clientId=self.client_id,
            resourceId=self.resource_id,
            informationQuestions=list(self.information_questions),
            createdAt=iso_utc(self.created_at),
            updatedAt=iso_utc(self.updated_at),
        )
        return data


@dataclass(frozen=True)
class Token:
    """An issued access token: opaque value, who it is for, what it allows, when it dies."""

    value: str
    client_id: str
    tenant: str
    system_id: str
    scopes: frozenset[Scope]
    issued_at: float
    expires_at: float

    def to_admin_json(self, now: float) -> dict[str, Any]:
        return {
            "access_token": self.value,
            "client_id": self.client_id,
            "tenant": self.tenant,
            "system_id": self.system_id,
            "scopes": sorted(s.value for s in self.scopes),
            "issued_at": iso_utc(self.issued_at),
            "expires_at": iso_utc(self.expires_at),
            "expired": now >= self.expires_at,
        }


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds")


class Store:
    """All mutable state. ``slot_capacity`` and ``reservation_hold`` may change at run time."""

    def __init__(self, seed: SeedData, clock: Clock, *, slot_capacity: int, reservation_hold: float) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self.slot_capacity = slot_capacity
        self.reservation_hold = reservation_hold
        self._tokens: dict[str, Token] = {}
        self._load(seed)

    # ----------------------------------------------------------------------------- lifecycle
    def load(self, seed: SeedData, *, keep_tokens: bool = False) -> None:
        """Replace every branch, slot and appointment by ``seed`` (a reset); tokens too unless kept."""
        with self._lock:
            self._load(seed)
            if not keep_tokens:
                self._tokens = {}

    def _load(self, seed: SeedData) -> None:
        self.seed = seed
        self._branches: dict[str, Branch] = {b.id: b for b in seed.branches}
        self._services: dict[tuple[str, str], Service] = {
            (b.id, s.id): s for b in seed.branches for s in b.services
        }
        self._slots: dict[tuple[str, str], list[Slot]] = {}
        self._slot_index: dict[tuple[str, str, float], Slot] = {}
        for (branch_id, service_id), specs in seed.slots.items():
            row = [Slot(branch_id, service_id, spec.start, spec.end) for spec in specs]
            self._slots[(branch_id, service_id)] = row
            for slot in row:
                self._slot_index[(branch_id, service_id, slot.start_ts)] = slot
        self._appointments: dict[str, Appointment] = {}
        self._by_customer: dict[tuple[str, str], list[str]] = {}
        self._expiry_heap: list[tuple[float, str]] = []

    # ----------------------------------------------------------------------------- tokens
    def issue_token(self, client: SandboxClient, scopes: frozenset[Scope], lifetime: float) -> Token:
        now = self._clock.time()
        token = Token(
            value=secrets.token_urlsafe(32),
            client_id=client.client_id,
            tenant=client.tenant,
            system_id=client.system_id,
            scopes=scopes,
            issued_at=now,
            expires_at=now + lifetime,
        )
        with self._lock:
            self._tokens[token.value] = token
        return token

    def find_token(self, value: str) -> Token | None:
        """The token with this value, expired or not (the caller decides; dict reads are atomic)."""
        return self._tokens.get(value)

    def tokens(self) -> list[dict[str, Any]]:
        now = self._clock.time()
        with self._lock:
            return [t.to_admin_json(now) for t in self._tokens.values()]

    # ----------------------------------------------------------------------------- catalogue
    def branches(self) -> list[dict[str, Any]]:
        return [b.to_json() for b in self.seed.branches]

    def services(self, branch_id: str) -> list[dict[str, Any]]:
        return [s.to_json() for s in self._branch(branch_id).services]

    def timeslots(self, branch_id: str, service_id: str, first: date, last: date) -> list[dict[str, Any]]:
        """Free slots whose local start date is in [first, last], still in the future."""
        with self._lock:
            now = self._expire_due()
            self._service(branch_id, service_id)
            out: list[dict[str, Any]] = []
            capacity = self.slot_capacity
            for slot in self._slots.get((branch_id, service_id), ()):
                day = slot.start.date()
                if day > last:
                    break
                free = capacity - slot.used
                if day >= first and free > 0 and slot.start_ts > now:
                    out.append({**slot.time_slot(), "available": free})
            return out

    def free_slots(
        self,
        *,
        branch_id: str | None = None,
        service_id: str | None = None,
        limit: int = 10,
        min_available: int = 1,
    ) -> list[dict[str, Any]]:
        """Introspection: future slots with at least ``min_available`` places, in catalogue order."""
        if limit <= 0:
            return []
        with self._lock:
            now = self._expire_due()
            out: list[dict[str, Any]] = []
            capacity = self.slot_capacity
            for (b_id, s_id), row in self._slots.items():
                if (branch_id and b_id != branch_id) or (service_id and s_id != service_id):
                    continue
                for slot in row:
                    free = capacity - slot.used
                    if free >= min_available and slot.start_ts > now:
                        out.append(
                            {"branchId": b_id, "serviceId": s_id, **slot.time_slot(), "available": free}
                        )
                        if len(out) >= limit:
                            return out
            return out

    def slot_count(self) -> int:
        return len(self._slot_index)

    # ----------------------------------------------------------------------------- booking
    def reserve(
        self,
        *,
        tenant: str,
        client_id: str,
        branch_id: str,
        service_id: str,
        start: datetime,
        end: datetime | None,
        number: int,
        notes: str | None,
        resource_id: str | None,
    ) -> dict[str, Any]:
        with self._lock:
            now = self._expire_due()
            branch = self._branch(branch_id)
            service = self._service(branch_id, service_id)
            slot = self._slot_index.get((branch_id, service_id, start.timestamp()))
            when = start.isoformat()
            if slot is None or (end is not None and end.timestamp() != slot.end_ts):
                raise conflict(
                    "slot_unavailable",
                    f"no bookable slot of service {service_id} at branch {branch_id} "
                    f"is {when}" + (f" to {end.isoformat()}" if end is not None else ""),
                )
            if slot.start_ts <= now:
                raise conflict("slot_unavailable", f"the slot at {when} has already started")
            free = self.slot_capacity - slot.used
            if number > free:
                raise conflict(
                    "slot_unavailable",
                    f"the slot at {when} has {max(free, 0)} place(s) left, {number} requested",
                )
            slot.used += number
            appointment = Appointment(
                tenant=tenant,
                client_id=client_id,
                branch=branch,
                service=service,
                slot=slot,
                number=number,
                notes=notes,
                resource_id=resource_id,
                now=now,
                expires_at=now + self.reservation_hold,
            )
            self._appointments[appointment.id] = appointment
            heapq.heappush(self._expiry_heap, (now + self.reservation_hold, appointment.id))
            return appointment.to_json()

    def release(self, tenant: str, appointment_id: str) -> None:
        with self._lock:
            now = self._expire_due()
            appointment = self._appointment(tenant, appointment_id)
            if appointment.status == EXPIRED:
                raise conflict("reservation_expired", f"reservation {appointment_id} is {appointment.status}")
            if appointment.status != RESERVED:
                raise conflict(
                    "invalid_state",
                    f"appointment {appointment_id} is {appointment.status}; only a RESERVED "
                    "reservation can be released (cancel a confirmed appointment)",
                )
            self._free(appointment)
            appointment.status = RELEASED
            appointment.expires_at = None
            appointment.updated_at = now

    def confirm(
        self,
        tenant: str,
        appointment_id: str,
        customer: dict[str, Any],
        questions: list[dict[str, str]],
    ) -> dict[str, Any]:
        with self._lock:
            now = self._expire_due()
            appointment = self._appointment(tenant, appointment_id)
            if appointment.status in (EXPIRED, RELEASED):
                raise conflict(
                    "reservation_expired",
                    f"reservation {appointment_id} is {appointment.status}: reserve a slot again",
                )
            if appointment.status != RESERVED:
                raise conflict(
                    "invalid_state",
                    f"appointment {appointment_id} is already {appointment.status}; fetch it to see it",
                )
            appointment.status = CONFIRMED
            appointment.expires_at = None
            appointment.customer = customer
            appointment.information_questions = questions
            appointment.updated_at = now
            key = (tenant, str(customer["personalIdentifier"]))
            self._by_customer.setdefault(key, []).append(appointment.id)
            return appointment.to_json()

    def get(self, tenant: str, appointment_id: str) -> dict[str, Any]:
        with self._lock:
            self._expire_due()
            return self._appointment(tenant, appointment_id).to_json()

    def search(self, tenant: str, personal_identifier: str) -> list[dict[str, Any]]:
        """Every appointment confirmed for this customer (so CONFIRMED or later CANCELLED)."""
        with self._lock:
            self._expire_due()
            ids = self._by_customer.get((tenant, personal_identifier), [])
            found = [self._appointments[i] for i in ids]
            found.sort(key=lambda a: (a.slot.start_ts, a.created_at))
            return [a.to_json() for a in found]

    def reschedule(self, tenant: str, appointment_id: str, reservation_id: str) -> dict[str, Any]:
        with self._lock:
            now = self._expire_due()
            appointment = self._appointment(tenant, appointment_id)
            if appointment.status != CONFIRMED:
                raise conflict(
                    "invalid_state",
                    f"appointment {appointment_id} is {appointment.status}; only a CONFIRMED "
                    "appointment can be rescheduled",
                )
            reservation = self._appointment(tenant, reservation_id, what="reservation")
            if reservation.status != RESERVED:
                raise conflict(
                    "reservation_expired",
                    f"reservation {reservation_id} is {reservation.status}, not a live reservation",
                )
            if (
                reservation.branch.id != appointment.branch.id
                or reservation.service.id != appointment.service.id
            ):
                raise conflict(
                    "invalid_state",
                    f"reservation {reservation_id} is for another branch or service; the service of "
                    "an appointment never changes (book a new appointment instead)",
                )
            self._free(appointment)
            appointment.slot = reservation.slot
            appointment.number = reservation.number
            appointment.updated_at = now
            # Part B leaves open what a used reservation reads as; the sandbox takes the one answer
            # that needs no status outside Part B: it is gone (404), its slot now the appointment's.
            del self._appointments[reservation.id]
            return appointment.to_json()

    def cancel(self, tenant: str, appointment_id: str) -> None:
        with self._lock:
            now = self._expire_due()
            appointment = self._appointment(tenant, appointment_id)
            if appointment.status != CONFIRMED:
                hint = " (release a reservation instead)" if appointment.status == RESERVED else ""
                raise conflict(
                    "invalid_state",
                    f"appointment {appointment_id} is {appointment.status}; only a CONFIRMED "
                    f"appointment can be cancelled{hint}",
                )
            self._free(appointment)
            appointment.status = CANCELLED
            appointment.updated_at = now

    # ----------------------------------------------------------------------------- introspection
    def appointments(self, *, status: str | None = None, tenant: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            self._expire_due()
            return [
                a.to_admin_json()
                for a in self._appointments.values()
                if (status is None or a.status == status) and (tenant is None or a.tenant == tenant)
            ]

    def counts(self) -> dict[str, int]:
        with self._lock:
            self._expire_due()
            out: dict[str, int] = {}
            for a in self._appointments.values():
                out[a.status] = out.get(a.status, 0) + 1
            return out

    # ----------------------------------------------------------------------------- internals
    def _expire_due(self) -> float:
        """Expire every reservation whose hold ran out; returns the current (sandbox) time."""
        now = self._clock.time()
        heap = self._expiry_heap
        while heap and heap[0][0] <= now:
            expires_at, appointment_id = heapq.heappop(heap)
            appointment = self._appointments.get(appointment_id)
            if appointment is not None and appointment.status == RESERVED:
                self._free(appointment)
                appointment.status = EXPIRED
                appointment.updated_at = expires_at
        return now

    def _free(self, appointment: Appointment) -> None:
        appointment.slot.used = max(0, appointment.slot.used - appointment.number)

    def _branch(self, branch_id: str) -> Branch:
        branch = self._branches.get(branch_id)
        if branch is None:
            raise not_found("branch", _shorten(branch_id))
        return branch

    def _service(self, branch_id: str, service_id: str) -> Service:
        self._branch(branch_id)
        service = self._services.get((branch_id, service_id))
        if service is None:
            raise SandboxError(
                404, "not_found", f"service {_shorten(service_id)} not found at branch {branch_id}"
            )
        return service

    def _appointment(self, tenant: str, appointment_id: str, what: str = "appointment") -> Appointment:
        appointment = self._appointments.get(appointment_id)
        if appointment is None or appointment.tenant != tenant:
            raise not_found(what, _shorten(appointment_id))
        return appointment


def _shorten(text: str) -> str:
    return text if len(text) <= 64 else text[:61] + "..."


STATUSES: tuple[str, ...] = tuple(status.value for status in AppointmentStatus)
