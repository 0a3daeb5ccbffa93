"""The sandbox's records: a slot, an appointment (a reservation until confirmed), an issued token.

Plain data, kept by :mod:`.store` and shaped into answers by :mod:`.shapes`; neither of those is
imported here, so the two can both read them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow_provider_qmatic.api.contract import Scope

if TYPE_CHECKING:
    from airflow_provider_qmatic.sandbox.seed import Branch, Service

# The sandbox's own status names (the rich shape and the introspection endpoints show them):
# CONFIRMED and FINALIZED are public, the others Part B's labels. Defined here rather than taken
# from the client's models, so the emulator states what it does, not what the client expects.
RESERVED = "RESERVED"
CONFIRMED = "CONFIRMED"
FINALIZED = "FINALIZED"
CANCELLED = "CANCELLED"
RELEASED = "RELEASED"
EXPIRED = "EXPIRED"
STATUSES: tuple[str, ...] = (RESERVED, CONFIRMED, FINALIZED, CANCELLED, RELEASED, EXPIRED)


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
    """A reservation, later (maybe) an appointment: one record, one id, through every status.

    ``slot`` is the time the appointment answers; ``holds`` are the seeded slots it takes
    ``places`` in: that one slot for a single service, or every slot of each service that a
    combination's longer ``slot`` covers (``services`` lists them all; ``service`` is the first).
    """

    __slots__ = (
        "branch",
        "client_id",
        "created_at",
        "customer",
        "deleted",
        "expires_at",
        "holds",
        "id",
        "information_questions",
        "notes",
        "number",
        "places",
        "resource_id",
        "service",
        "services",
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
        services: tuple[Service, ...] = (),
        holds: tuple[Slot, ...] = (),
        places: int | None = None,
    ) -> None:
        self.id = str(uuid.uuid4())
        self.tenant = tenant
        self.client_id = client_id
        self.branch = branch
        self.service = service
        self.services = services or (service,)
        self.slot = slot
        self.holds = holds or (slot,)
        self.places = number if places is None else places
        self.number = number
        self.notes = notes
        self.resource_id = resource_id
        self.status = RESERVED
        self.deleted = False  # by a cancel: 404 for the API, kept for introspection
        self.expires_at: float | None = expires_at
        self.customer: dict[str, Any] | None = None
        self.information_questions: list[dict[str, str]] = []
        self.created_at = now
        self.updated_at = now

    def expires_at_iso(self) -> str | None:
        return iso_utc(self.expires_at) if self.expires_at is not None else None


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
