"""The sandbox's state: catalogue, slot occupancy, appointments and tokens, behind one lock.

Pure Python (no web framework), so it can be unit-tested and driven in process. Every public method
takes the lock, first lets overdue reservations expire (lazily, but before anything reads a slot or
an appointment, so the answers are always correct), then does a small amount of work: handlers
stay cheap even with thousands of appointments, and nothing copies the whole store per request.

Appointments are private to the tenant that created them (another tenant gets 404); the seeded
branches and their slot capacity are shared by all tenants, while each tenant's configuration
(required fields, reservation caps, service groups) comes from the settings. Answers are shaped by
:mod:`shapes` in the configured ``answer_shape``; a cancelled appointment is deleted for the API
(404 afterwards) but kept, marked, for the introspection endpoints.
"""

from __future__ import annotations

import bisect
import heapq
import secrets
import threading
import uuid
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any

from airflow_provider_qmatic.api.contract import Scope
from airflow_provider_qmatic.sandbox import shapes
from airflow_provider_qmatic.sandbox.clock import Clock
from airflow_provider_qmatic.sandbox.errors import SandboxError, conflict, not_found
from airflow_provider_qmatic.sandbox.records import (
    CANCELLED,
    CONFIRMED,
    EXPIRED,
    FINALIZED,
    RELEASED,
    RESERVED,
    Appointment,
    Slot,
    Token,
)
from airflow_provider_qmatic.sandbox.seed import Branch, SeedData, Service
from airflow_provider_qmatic.sandbox.settings import SandboxClient, SandboxSettings, TenantSettings


class Store:
    """All mutable state. ``settings`` is replaced (never mutated) when the sandbox is configured;
    the store reads the slot capacity, the hold, the answer shape and the tenants' configuration
    from it on every call."""

    def __init__(self, seed: SeedData, clock: Clock, settings: SandboxSettings) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self.settings = settings
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
        # Slot starts per service, in order: combination slots look up the slots a time falls in.
        self._starts = {key: [slot.start_ts for slot in row] for key, row in self._slots.items()}
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
        rich = self.settings.rich
        return [shapes.branch(b, rich=rich) for b in self.seed.branches]

    def services(self, tenant: str) -> list[dict[str, Any]]:
        """Tenant-wide: one item per service and branch (the public page's list)."""
        config, rich = self.settings.tenant(tenant), self.settings.rich
        return [shapes.service(b, s, config, rich=rich) for b in self.seed.branches for s in b.services]

    def service_groups(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's service groups: ``[{id, name, services: [{id, name}]}]`` (may be empty).

        A member names a service by id or by name; every seeded service it names is listed once.
        """
        out: list[dict[str, Any]] = []
        for name, members in self.settings.tenant(tenant).service_groups.items():
            services: dict[str, str] = {}
            for b in self.seed.branches:
                for s in b.services:
                    if s.id in members or s.name in members:
                        services.setdefault(s.id, s.name)
            out.append(
                {
                    "id": str(uuid.uuid5(_GROUP_NAMESPACE, f"{tenant}/{name}")),
                    "name": name,
                    "services": [{"id": i, "name": n} for i, n in services.items()],
                }
            )
        return out

    def timeslots(
        self, tenant: str, branch_id: str, service_id: str, first: date, last: date, number: int = 1
    ) -> list[dict[str, Any]]:
        """Free slots whose local start date is in [first, last], still in the future, with room
        for ``number`` people (none when that is above the service's cap). A full slot is never
        listed: in the public shape a listed slot is a free slot."""
        with self._lock:
            now = self._expire_due()
            service = self._service(branch_id, service_id)
            cap = self.settings.tenant(tenant).cap(service.id, service.name)
            if cap > 0 and number > cap:
                return []
            out: list[dict[str, Any]] = []
            capacity, rich = self.settings.slot_capacity, self.settings.rich
            for slot in self._slots.get((branch_id, service_id), ()):
                day = slot.start.date()
                if day > last:
                    break
                free = capacity - slot.used
                if day >= first and free >= number and slot.start_ts > now:
                    out.append(shapes.time_slot(slot, free, rich=rich))
            return out

    def service_combinations(self, tenant: str) -> list[dict[str, Any]]:
        """``[{branchId, serviceCombinations:[{resourceTypeId, combinableServices, ...}]}]``: one
        item per branch configured for combinations, one resource type each (Qmatic combines only
        services that need the same single resource type). ``unCombinableServices`` lists the
        branch's other services; ``combinedServices`` is left empty, since no public page says what
        it holds. Refused when the tenant has combinations switched off."""
        config = self.combinations_on(tenant)
        out: list[dict[str, Any]] = []
        for branch in self.seed.branches:
            members = _combinable(branch, config.combination_branches)
            if not members:
                continue
            combination = {
                "resourceTypeId": str(uuid.uuid5(_RESOURCE_TYPE_NAMESPACE, branch.id)),
                "combinableServices": [s.id for s in members],
                "unCombinableServices": [s.id for s in branch.services if s not in members],
                "combinedServices": [],
            }
            out.append({"branchId": branch.id, "serviceCombinations": [combination]})
        return out

    def combination_timeslots(
        self, tenant: str, branch_id: str, service_ids: list[str], first: date, last: date, number: int
    ) -> list[dict[str, Any]]:
        """Free times for all of ``service_ids`` one after another: each slot lasts the sum of their
        durations and starts where the shortest service's slots start; it is listed while every
        service's own slots cover it with room left. ``number`` is the sum over the services (the
        page's rule), so each service needs room for ``number / len(service_ids)`` people, rounded up.
        """
        with self._lock:
            now = self._expire_due()
            services, people = self._combination(tenant, branch_id, service_ids, number)
            if people is None:
                return []
            total = sum(s.duration_minutes for s in services) * 60.0
            grid = min(services, key=lambda s: s.duration_minutes)
            capacity, rich = self.settings.slot_capacity, self.settings.rich
            out: list[dict[str, Any]] = []
            for start in self._slots.get((branch_id, grid.id), ()):
                day = start.start.date()
                if day > last:
                    break
                if day < first or start.start_ts <= now:
                    continue
                covering = self._covering(branch_id, services, start.start_ts, start.start_ts + total)
                if covering is None:
                    continue
                free = capacity - max(slot.used for slot in covering)
                if free >= people:
                    window = Slot(branch_id, grid.id, start.start, start.start + timedelta(seconds=total))
                    out.append(shapes.time_slot(window, free, rich=rich))
            return out

    def _combination(
        self, tenant: str, branch_id: str, service_ids: list[str] | tuple[str, ...], number: int
    ) -> tuple[list[Service], int | None]:
        """The services of a combination at the branch (400 when combinations are off, or one of
        them is not configured to combine there) and the people each must serve for ``number``, the
        sum over them (None when that is above a service's cap)."""
        config = self.combinations_on(tenant)
        branch = self._branch(branch_id)
        services = [self._service(branch_id, sid) for sid in dict.fromkeys(service_ids)]
        allowed = _combinable(branch, config.combination_branches)
        refused = [s.id for s in services if s not in allowed]
        if refused:
            raise SandboxError(
                400,
                "invalid_request",
                f"serviceId: {', '.join(refused)} cannot be combined at branch {branch_id} "
                "(not configured for service combinations there)",
            )
        people = -(-number // len(services))
        if any(0 < config.cap(s.id, s.name) < people for s in services):
            return services, None
        return services, people

    def _covering(
        self, branch_id: str, services: list[Service], begin: float, end: float
    ) -> list[Slot] | None:
        """Every slot of each service that [begin, end) falls in, or None when a service's slots
        leave a gap there (before opening, after closing, another day)."""
        out: list[Slot] = []
        for service in services:
            row = self._slots.get((branch_id, service.id), [])
            starts = self._starts[(branch_id, service.id)]
            i = bisect.bisect_right(starts, begin) - 1
            if i < 0 or row[i].end_ts <= begin:
                return None
            reached = begin
            while reached < end:
                if i >= len(row) or row[i].start_ts > reached:
                    return None
                out.append(row[i])
                reached = row[i].end_ts
                i += 1
        return out

    def combinations_on(self, tenant: str) -> TenantSettings:
        """The tenant's settings; a 400 when its system has service combinations switched off (the
        page says only that such a tenant's combination calls return an error: code a guess)."""
        config = self.settings.tenant(tenant)
        if not config.service_combinations:
            raise SandboxError(
                400,
                "invalid_request",
                "serviceCombination: service combinations are not switched on for this system",
            )
        return config

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
            capacity = self.settings.slot_capacity
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
        service_ids: tuple[str, ...],
        start: datetime,
        end: datetime | None,
        number: int,
        notes: str | None,
        resource_id: str | None,
        combination: bool = False,
    ) -> dict[str, Any]:
        """Hold a slot: one service's seeded slot, or (``combination``) a slot for all of
        ``service_ids`` as :meth:`combination_timeslots` lists it, which takes a place in every
        slot of each service it covers."""
        with self._lock:
            now = self._expire_due()
            branch = self._branch(branch_id)
            when = start.isoformat()
            wanted = when + (f" to {end.isoformat()}" if end is not None else "")
            if combination:
                services, people = self._combination(tenant, branch_id, service_ids, number)
                if people is None:
                    raise conflict(
                        "invalid_state",
                        f"numberOfReservations: {number} over {len(services)} services is more than "
                        "one of them allows (config.maxNumberOfReservations)",
                    )
                total = timedelta(minutes=sum(s.duration_minutes for s in services))
                grid = min(services, key=lambda s: s.duration_minutes)
                first = self._slot_index.get((branch_id, grid.id, start.timestamp()))
                covering = self._covering(branch_id, services, start.timestamp(), (start + total).timestamp())
                if first is None or covering is None or (end is not None and end != start + total):
                    raise conflict(
                        "slot_unavailable",
                        f"no bookable slot of services {', '.join(s.id for s in services)} at branch "
                        f"{branch_id} is {wanted}",
                    )
                slot, holds = Slot(branch_id, grid.id, first.start, first.start + total), tuple(covering)
            else:
                services, people = [self._service(branch_id, service_ids[0])], number
                found = self._slot_index.get((branch_id, service_ids[0], start.timestamp()))
                if found is None or (end is not None and end.timestamp() != found.end_ts):
                    raise conflict(
                        "slot_unavailable",
                        f"no bookable slot of service {service_ids[0]} at branch {branch_id} is {wanted}",
                    )
                cap = self.settings.tenant(tenant).cap(services[0].id, services[0].name)
                if cap > 0 and number > cap:
                    raise conflict(
                        "invalid_state",
                        f"numberOfReservations: {number} is more than service {service_ids[0]} allows "
                        f"(config.maxNumberOfReservations {cap})",
                    )
                slot, holds = found, (found,)
            if slot.start_ts <= now:
                raise conflict("slot_unavailable", f"the slot at {when} has already started")
            free = self.settings.slot_capacity - max(held.used for held in holds)
            if people > free:
                raise conflict(
                    "slot_unavailable",
                    f"the slot at {when} has {max(free, 0)} place(s) left, {people} requested",
                )
            for held in holds:
                held.used += people
            appointment = Appointment(
                tenant=tenant,
                client_id=client_id,
                branch=branch,
                service=services[0],
                services=tuple(services),
                slot=slot,
                holds=holds,
                places=people,
                number=number,
                notes=notes,
                resource_id=resource_id,
                now=now,
                expires_at=now + self.settings.reservation_hold,
            )
            self._appointments[appointment.id] = appointment
            heapq.heappush(self._expiry_heap, (now + self.settings.reservation_hold, appointment.id))
            return self._answer(appointment)

    def release(self, tenant: str, appointment_id: str) -> None:
        with self._lock:
            now = self._expire_due()
            appointment = self._appointment(tenant, appointment_id)
            if appointment.status == EXPIRED:
                raise conflict("reservation_expired", f"reservation {appointment_id} is {appointment.status}")
            if appointment.status != RESERVED:
                raise conflict(
                    "invalid_state",
                    f"appointment {appointment_id} is {appointment.status}; a reservation can be "
                    "released only until it is CONFIRMED or FINALIZED (cancel an appointment instead)",
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
            return self._answer(appointment)

    def update_customer(self, tenant: str, appointment_id: str, customer: dict[str, Any]) -> None:
        """Replace a booked appointment's customer; a search by the new identifier finds it."""
        with self._lock:
            now = self._expire_due()
            appointment = self._appointment(tenant, appointment_id)
            if appointment.status != CONFIRMED or appointment.customer is None:
                raise conflict(
                    "invalid_state",
                    f"appointment {appointment_id} is {appointment.status}; only a booked "
                    "(CONFIRMED) appointment's customer can be updated",
                )
            old = (tenant, str(appointment.customer["personalIdentifier"]))
            new = (tenant, str(customer["personalIdentifier"]))
            if old != new:
                self._by_customer[old].remove(appointment.id)
                if not self._by_customer[old]:
                    del self._by_customer[old]
                self._by_customer.setdefault(new, []).append(appointment.id)
            appointment.customer = customer
            appointment.updated_at = now

    def get(self, tenant: str, appointment_id: str) -> dict[str, Any]:
        with self._lock:
            self._expire_due()
            return self._answer(self._appointment(tenant, appointment_id))

    def search(self, tenant: str, personal_identifier: str) -> list[dict[str, Any]]:
        """Every appointment booked for this customer and not cancelled (cancel deletes)."""
        with self._lock:
            self._expire_due()
            ids = self._by_customer.get((tenant, personal_identifier), [])
            found = [a for a in (self._appointments[i] for i in ids) if not a.deleted]
            found.sort(key=lambda a: (a.slot.start_ts, a.created_at))
            return [self._answer(a) for a in found]

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
            if reservation.branch.id != appointment.branch.id or reservation.services != appointment.services:
                raise conflict(
                    "invalid_state",
                    f"reservation {reservation_id} is for another branch or service; the service of "
                    "an appointment never changes (book a new appointment instead)",
                )
            self._free(appointment)
            appointment.slot, appointment.holds = reservation.slot, reservation.holds
            appointment.number, appointment.places = reservation.number, reservation.places
            appointment.updated_at = now
            # Part B leaves open what a used reservation reads as; the sandbox takes the one answer
            # that needs no status outside Part B: it is gone (404), its slot now the appointment's.
            del self._appointments[reservation.id]
            return self._answer(appointment)

    def cancel(self, tenant: str, appointment_id: str) -> None:
        """Cancel deletes (the public page's 204 "Cancelled/Deleted"): a later get, cancel,
        reschedule or update answers 404; introspection still shows it, CANCELLED and deleted."""
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
            appointment.deleted = True
            appointment.updated_at = now

    # ----------------------------------------------------------------------------- introspection
    def finalize(self, appointment_id: str) -> dict[str, Any]:
        """Mark a booked appointment FINALIZED (the visit took place; no public call does it):
        from then on release, cancel, reschedule and update are refused with 409."""
        with self._lock:
            now = self._expire_due()
            appointment = self._appointments.get(appointment_id)
            if appointment is None or appointment.deleted:
                raise not_found("appointment", _shorten(appointment_id))
            if appointment.status != CONFIRMED:
                raise conflict(
                    "invalid_state",
                    f"appointment {appointment_id} is {appointment.status}; only a CONFIRMED "
                    "appointment can be finalized",
                )
            appointment.status = FINALIZED
            appointment.updated_at = now
            return shapes.admin_appointment(appointment, self.settings.tenant(appointment.tenant))

    def appointments(self, *, status: str | None = None, tenant: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            self._expire_due()
            return [
                shapes.admin_appointment(a, self.settings.tenant(a.tenant))
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
        for slot in appointment.holds:
            slot.used = max(0, slot.used - appointment.places)

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
        """The tenant's appointment; 404 for another tenant's, an unknown or a deleted one."""
        appointment = self._appointments.get(appointment_id)
        if appointment is None or appointment.tenant != tenant or appointment.deleted:
            raise not_found(what, _shorten(appointment_id))
        return appointment

    def _answer(self, appointment: Appointment) -> dict[str, Any]:
        """The appointment as the API answers it, in the configured shape (under the lock)."""
        settings = self.settings
        return shapes.appointment(appointment, settings.tenant(appointment.tenant), rich=settings.rich)


def _combinable(branch: Branch, configured: Mapping[str, tuple[str, ...]] | None) -> list[Service]:
    """The branch's services that may share an appointment (its entry by id or by name; all of
    them when nothing is configured)."""
    if configured is None:
        return list(branch.services)
    members = configured.get(branch.id) or configured.get(branch.name) or ()
    return [s for s in branch.services if s.id in members or s.name in members]


def _shorten(text: str) -> str:
    return text if len(text) <= 64 else text[:61] + "..."


_GROUP_NAMESPACE = uuid.UUID("0c5e3f63-8d0b-4f4a-b8a5-6a1f2b7c9d41")
_RESOURCE_TYPE_NAMESPACE = uuid.UUID("b3a4c1d2-5e6f-4a7b-8c9d-0e1f2a3b4c5d")
