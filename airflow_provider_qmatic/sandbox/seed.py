"""Deterministic seed data: branches in several time zones, their services, and bookable slots.

Ids come from ``random.Random(seed)`` (never ``uuid4``), so the same seed gives the same branch and
service GUIDs on every machine; slot times depend on the seed and on the calendar (the first day is
``start_date`` or tomorrow in each branch's zone), so two sandboxes started the same day agree.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from airflow_provider_qmatic.sandbox.settings import (
    MAX_SERVICES_PER_BRANCH,
    SandboxSettings,
)

# name, IANA zone, address. The first three span three time zones (one of them outside Europe).
_BRANCHES: tuple[tuple[str, str, dict[str, str]], ...] = (
    (
        "Stockholm City",
        "Europe/Stockholm",
        {"street": "Drottninggatan 12", "city": "Stockholm", "postalCode": "111 51", "country": "SE"},
    ),
    (
        "New York Midtown",
        "America/New_York",
        {"street": "350 Fifth Avenue", "city": "New York", "postalCode": "10118", "country": "US"},
    ),
    (
        "London Bridge",
        "Europe/London",
        {"street": "32 London Bridge Street", "city": "London", "postalCode": "SE1 9SG", "country": "GB"},
    ),
    (
        "Göteborg Centrum",
        "Europe/Stockholm",
        {"street": "Kungsportsavenyen 5", "city": "Göteborg", "postalCode": "411 36", "country": "SE"},
    ),
    (
        "Boston Back Bay",
        "America/New_York",
        {"street": "100 Boylston Street", "city": "Boston", "postalCode": "02116", "country": "US"},
    ),
    (
        "Amsterdam Zuid",
        "Europe/Amsterdam",
        {"street": "Beethovenstraat 10", "city": "Amsterdam", "postalCode": "1077 JH", "country": "NL"},
    ),
    (
        "Chicago Loop",
        "America/Chicago",
        {"street": "233 South Wacker Drive", "city": "Chicago", "postalCode": "60606", "country": "US"},
    ),
    (
        "Manchester Piccadilly",
        "Europe/London",
        {"street": "1 Piccadilly Gardens", "city": "Manchester", "postalCode": "M1 1RG", "country": "GB"},
    ),
    (
        "Paris Opéra",
        "Europe/Paris",
        {"street": "8 Rue Auber", "city": "Paris", "postalCode": "75009", "country": "FR"},
    ),
    (
        "Malmö Triangeln",
        "Europe/Stockholm",
        {"street": "Södra Förstadsgatan 41", "city": "Malmö", "postalCode": "211 43", "country": "SE"},
    ),
    (
        "Los Angeles Downtown",
        "America/Los_Angeles",
        {"street": "200 North Spring Street", "city": "Los Angeles", "postalCode": "90012", "country": "US"},
    ),
    (
        "Berlin Mitte",
        "Europe/Berlin",
        {"street": "Unter den Linden 21", "city": "Berlin", "postalCode": "10117", "country": "DE"},
    ),
)

# name, duration in minutes (none under SHORTEST_SERVICE_MINUTES, which bounds the slot count).
# Each branch offers 2 to MAX_SERVICES_PER_BRANCH of them, chosen by the seed.
_SERVICES: tuple[tuple[str, int], ...] = (
    ("Passport application", 15),
    ("National ID card", 20),
    ("Driving licence renewal", 30),
    ("Residence permit consultation", 45),
    ("Document pick-up", 10),
    ("Tax advice", 30),
    ("Vehicle registration", 20),
)


@dataclass(frozen=True)
class Service:
    id: str
    name: str
    duration_minutes: int

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "durationMinutes": self.duration_minutes}


@dataclass(frozen=True)
class Branch:
    id: str
    name: str
    time_zone: str
    address: dict[str, str]
    services: tuple[Service, ...]

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "timeZone": self.time_zone, "address": dict(self.address)}


@dataclass(frozen=True)
class SlotSpec:
    """One bookable time: aware start and end in the branch's zone."""

    start: datetime
    end: datetime


@dataclass(frozen=True)
class SeedData:
    branches: tuple[Branch, ...]
    # (branch id, service id) -> slots in start order
    slots: dict[tuple[str, str], tuple[SlotSpec, ...]] = field(repr=False)
    first_days: dict[str, date]


def build_seed(settings: SandboxSettings, now: datetime) -> SeedData:
    """Branches, services and slots for ``settings``, relative to ``now`` (an aware datetime).

    Slots: every weekday (Monday-Friday) of ``weeks`` weeks from the first day, from
    ``open_hour`` to ``close_hour`` local time, back to back in the service's duration.
    """
    rng = random.Random(settings.seed)
    branches: list[Branch] = []
    for name, zone_name, address in _BRANCHES[: settings.branch_count]:
        branch_id = _guid(rng)
        count = rng.randint(2, MAX_SERVICES_PER_BRANCH)
        picked = sorted(rng.sample(range(len(_SERVICES)), count))
        services = tuple(Service(_guid(rng), _SERVICES[i][0], _SERVICES[i][1]) for i in picked)
        branches.append(Branch(branch_id, name, zone_name, dict(address), services))

    slots: dict[tuple[str, str], tuple[SlotSpec, ...]] = {}
    first_days: dict[str, date] = {}
    for branch in branches:
        zone = ZoneInfo(branch.time_zone)
        first = settings.start_date or (now.astimezone(zone).date() + timedelta(days=1))
        first_days[branch.id] = first
        for service in branch.services:
            slots[(branch.id, service.id)] = tuple(_service_slots(settings, zone, first, service))
    return SeedData(tuple(branches), slots, first_days)


def _service_slots(
    settings: SandboxSettings, zone: ZoneInfo, first: date, service: Service
) -> list[SlotSpec]:
    step = timedelta(minutes=service.duration_minutes)
    out: list[SlotSpec] = []
    for offset in range(settings.weeks * 7):
        day = first + timedelta(days=offset)
        if day.weekday() >= 5:
            continue
        # Walk in local wall-clock time so that a DST change keeps slots on the hour.
        start = datetime.combine(day, time(settings.open_hour), tzinfo=zone)
        close = (
            datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
            if settings.close_hour == 24
            else datetime.combine(day, time(settings.close_hour), tzinfo=zone)
        )
        while start + step <= close:
            out.append(SlotSpec(start, start + step))
            start = start + step
    return out


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))
