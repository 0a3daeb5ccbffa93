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

# name, IANA zone, address (the public example's fields), (longitude, latitude). The first three
# span three time zones (one of them outside Europe).
_BRANCHES: tuple[tuple[str, str, dict[str, str], tuple[float, float]], ...] = (
    (
        "Stockholm City",
        "Europe/Stockholm",
        {"streetName": "Drottninggatan 12", "city": "Stockholm", "zipCode": "111 51", "country": "SE"},
        (18.0649, 59.3326),
    ),
    (
        "New York Midtown",
        "America/New_York",
        {"streetName": "350 Fifth Avenue", "city": "New York", "zipCode": "10118", "country": "US"},
        (-73.9857, 40.7484),
    ),
    (
        "London Bridge",
        "Europe/London",
        {"streetName": "32 London Bridge Street", "city": "London", "zipCode": "SE1 9SG", "country": "GB"},
        (-0.0865, 51.5045),
    ),
    (
        "Göteborg Centrum",
        "Europe/Stockholm",
        {"streetName": "Kungsportsavenyen 5", "city": "Göteborg", "zipCode": "411 36", "country": "SE"},
        (11.9746, 57.7003),
    ),
    (
        "Boston Back Bay",
        "America/New_York",
        {"streetName": "100 Boylston Street", "city": "Boston", "zipCode": "02116", "country": "US"},
        (-71.0725, 42.3515),
    ),
    (
        "Amsterdam Zuid",
        "Europe/Amsterdam",
        {"streetName": "Beethovenstraat 10", "city": "Amsterdam", "zipCode": "1077 JH", "country": "NL"},
        (4.8731, 52.3454),
    ),
    (
        "Chicago Loop",
        "America/Chicago",
        {"streetName": "233 South Wacker Drive", "city": "Chicago", "zipCode": "60606", "country": "US"},
        (-87.6359, 41.8789),
    ),
    (
        "Manchester Piccadilly",
        "Europe/London",
        {"streetName": "1 Piccadilly Gardens", "city": "Manchester", "zipCode": "M1 1RG", "country": "GB"},
        (-2.2374, 53.4808),
    ),
    (
        "Paris Opéra",
        "Europe/Paris",
        {"streetName": "8 Rue Auber", "city": "Paris", "zipCode": "75009", "country": "FR"},
        (2.3319, 48.872),
    ),
    (
        "Malmö Triangeln",
        "Europe/Stockholm",
        {"streetName": "Södra Förstadsgatan 41", "city": "Malmö", "zipCode": "211 43", "country": "SE"},
        (13.0001, 55.5948),
    ),
    (
        "Los Angeles Downtown",
        "America/Los_Angeles",
        {"streetName": "200 North Spring Street", "city": "Los Angeles", "zipCode": "90012", "country": "US"},
        (-118.243, 34.0537),
    ),
    (
        "Berlin Mitte",
        "Europe/Berlin",
        {"streetName": "Unter den Linden 21", "city": "Berlin", "zipCode": "10117", "country": "DE"},
        (13.3889, 52.517),
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
        """The admin (introspection) view; API answers are shaped by :mod:`shapes`."""
        return {"id": self.id, "name": self.name, "durationMinutes": self.duration_minutes}


@dataclass(frozen=True)
class Branch:
    id: str
    name: str
    time_zone: str
    address: dict[str, str]
    location: tuple[float, float]  # longitude, latitude
    services: tuple[Service, ...]

    def to_json(self) -> dict[str, object]:
        """The rich (and admin) view: the public fields plus ``timeZone``."""
        return {
            "id": self.id,
            "name": self.name,
            "address": dict(self.address),
            "location": {"longitude": self.location[0], "latitude": self.location[1]},
            "timeZone": self.time_zone,
        }


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
    for name, zone_name, address, location in _BRANCHES[: settings.branch_count]:
        branch_id = _guid(rng)
        count = rng.randint(2, MAX_SERVICES_PER_BRANCH)
        picked = sorted(rng.sample(range(len(_SERVICES)), count))
        services = tuple(Service(_guid(rng), _SERVICES[i][0], _SERVICES[i][1]) for i in picked)
        branches.append(Branch(branch_id, name, zone_name, dict(address), location, services))

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
