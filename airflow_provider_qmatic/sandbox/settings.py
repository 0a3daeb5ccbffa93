"""Every knob of the sandbox, in one validated dataclass.

The defaults are Qmatic's documented behaviour (100 API requests per minute, 1 token request per
second, 60-minute tokens, 15-minute holds, 2 MB bodies). Tests turn them down or up: a 1-second
token, a huge slot capacity for bulk jobs, faults. ``SandboxSettings`` is immutable; a change at
run time builds a new one through :meth:`SandboxSettings.with_changes`, which validates it again.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from airflow_provider_qmatic.config import normalise_tenant
from airflow_provider_qmatic.exceptions import QmaticConfigError
from airflow_provider_qmatic.scopes import ALL_SCOPES, Scope

# Names of API endpoints, used by statistics and to aim faults (``fault_endpoints``).
ENDPOINTS: tuple[str, ...] = (
    "token",
    "branches",
    "services",
    "timeslots",
    "reserve",
    "release",
    "confirm",
    "get",
    "search",
    "reschedule",
    "cancel",
)
# The endpoints that change state: the only ones "commit then fail" applies to.
WRITE_ENDPOINTS: frozenset[str] = frozenset({"reserve", "release", "confirm", "reschedule", "cancel"})
RATE_LIMIT_ALGORITHMS: tuple[str, ...] = ("token_bucket", "sliding_window")
COMMIT_THEN_FAIL_MODES: tuple[str, ...] = ("500", "drop", "both")
FAULT_BODIES: tuple[str, ...] = ("json", "empty", "html")
MAX_BRANCHES = 12

# Knobs that shape the seed data: changing one at run time rebuilds the store (like a reset).
SEED_KNOBS: frozenset[str] = frozenset(
    {"seed", "weeks", "branch_count", "start_date", "open_hour", "close_hour"}
)
_SYSTEM_ID_NAMESPACE = uuid.UUID("6f1b8f0e-3f7a-4c59-9a55-2d1c3e0b7a10")


def derive_system_id(tenant: str) -> str:
    """The tenant's system id when none is given: a GUID that depends on the tenant name only.

    Stable across runs and seeds, so a connection written down once keeps working.
    """
    return str(uuid.uuid5(_SYSTEM_ID_NAMESPACE, tenant))


@dataclass(frozen=True)
class SandboxClient:
    """One OAuth2 client the sandbox accepts: id, secret, tenant (account name), system id, scopes.

    ``system_id`` is the value callers send as ``X-TENANT-ID``; left empty it is derived from the
    tenant, so every client of one tenant shares it, as in Qmatic.
    """

    client_id: str
    client_secret: str = field(repr=False)
    tenant: str
    system_id: str = ""
    scopes: frozenset[Scope] = ALL_SCOPES

    def __post_init__(self) -> None:
        if not self.client_id or ":" in self.client_id or not self.client_id.isprintable():
            raise ValueError("client_id must be non-empty printable text without ':'")
        if not self.client_secret or not self.client_secret.isprintable():
            raise ValueError(f"client {self.client_id}: the secret must be non-empty printable text")
        try:
            tenant = normalise_tenant(self.tenant)
        except QmaticConfigError:
            raise ValueError(
                f"client {self.client_id}: tenant {self.tenant!r} must be an account name "
                "(lowercase letters, digits, '.', '_' or '-')"
            ) from None
        object.__setattr__(self, "tenant", tenant)
        if not self.system_id:
            object.__setattr__(self, "system_id", derive_system_id(tenant))
        if not self.scopes:
            raise ValueError(f"client {self.client_id}: needs at least one scope")
        object.__setattr__(self, "scopes", frozenset(Scope(s) for s in self.scopes))

    def public(self) -> dict[str, Any]:
        """What the introspection endpoints show of this client: everything but the secret."""
        return {
            "client_id": self.client_id,
            "tenant": self.tenant,
            "system_id": self.system_id,
            "scopes": sorted(s.value for s in self.scopes),
        }


def demo_client(seed: int) -> SandboxClient:
    """The client used when none is configured: fixed id and tenant, a secret fixed by the seed."""
    rng = random.Random(f"demo-client-{seed}")
    secret = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(40))
    return SandboxClient(client_id="demo-client", client_secret=secret, tenant="demo")


@dataclass(frozen=True)
class SandboxSettings:
    """All knobs. Rates of 0 switch a limit off; fault fractions are in [0, 1].

    Seed data: ``seed``, ``branch_count`` (1-12), ``weeks`` of slots, ``start_date`` (first day of
    slots; default tomorrow in each branch's zone), ``open_hour``/``close_hour`` (local time),
    ``slot_capacity`` (people per slot; raise it for bulk tests).

    Limits: ``requests_per_minute`` per tenant, with ``api_burst`` and ``rate_limit_algorithm``;
    ``token_requests_per_second`` per client with ``token_burst``; ``retry_after_header``.

    Faults (API endpoints only unless ``faults_on_token``; only those in ``fault_endpoints`` when it
    is not empty): ``fail_rate`` (500), ``unavailable_rate`` (503), ``drop_rate`` (connection closed
    without a response), ``commit_then_fail_rate`` with ``commit_then_fail_mode`` (writes that are
    stored and then answered with a 500 or a dropped connection), ``latency_ms`` plus uniform
    ``latency_jitter_ms``, ``fault_body`` (JSON, empty or an HTML page, like a gateway) and
    ``fault_seed`` (default: ``seed``).
    """

    seed: int = 0
    clients: tuple[SandboxClient, ...] = ()
    branch_count: int = 3
    weeks: int = 4
    start_date: date | None = None
    open_hour: int = 9
    close_hour: int = 17
    slot_capacity: int = 2
    token_lifetime: float = 3600.0
    reservation_hold: float = 900.0
    max_body_bytes: int = 2 * 1024 * 1024
    requests_per_minute: float = 100.0
    api_burst: int = 10
    rate_limit_algorithm: str = "token_bucket"
    token_requests_per_second: float = 1.0
    token_burst: int = 1
    retry_after_header: bool = True
    fail_rate: float = 0.0
    unavailable_rate: float = 0.0
    drop_rate: float = 0.0
    commit_then_fail_rate: float = 0.0
    commit_then_fail_mode: str = "both"
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    fault_endpoints: tuple[str, ...] = ()
    faults_on_token: bool = False
    fault_body: str = "json"
    fault_seed: int | None = None

    def __post_init__(self) -> None:
        clients = tuple(self.clients) or (demo_client(self.seed),)
        object.__setattr__(self, "clients", clients)
        object.__setattr__(self, "fault_endpoints", tuple(self.fault_endpoints))
        self._validate()

    @property
    def client(self) -> SandboxClient:
        """The first (primary) client: the one the fixture and the CLI's connection line use."""
        return self.clients[0]

    @property
    def effective_fault_seed(self) -> int:
        return self.seed if self.fault_seed is None else self.fault_seed

    def with_changes(self, changes: Mapping[str, Any]) -> SandboxSettings:
        """A validated copy with ``changes`` applied; JSON-ish values (strings, lists) are coerced.

        :raises ValueError: unknown knob or a value out of its range, naming the knob.
        """
        known = {f.name for f in dataclasses.fields(self)}
        coerced: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in known:
                raise ValueError(f"unknown setting {name!r}; known: {', '.join(sorted(known))}")
            coerced[name] = _coerce(name, value)
        return dataclasses.replace(self, **coerced)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view; client secrets left out."""
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "clients":
                value = [c.public() for c in value]
            elif f.name == "start_date":
                value = value.isoformat() if value else None
            elif f.name == "fault_endpoints":
                value = list(value)
            data[f.name] = value
        return data

    def _validate(self) -> None:
        ids = [c.client_id for c in self.clients]
        if len(set(ids)) != len(ids):
            raise ValueError("clients: two clients have the same client_id")
        system_ids: dict[str, str] = {}
        for c in self.clients:
            if system_ids.setdefault(c.tenant, c.system_id) != c.system_id:
                raise ValueError(f"clients: tenant {c.tenant!r} has two different system ids")
        _int_range("branch_count", self.branch_count, 1, MAX_BRANCHES)
        _int_range("weeks", self.weeks, 1, 520)
        _int_range("open_hour", self.open_hour, 0, 23)
        _int_range("close_hour", self.close_hour, self.open_hour + 1, 24)
        _int_range("slot_capacity", self.slot_capacity, 1, 10**9)
        _int_range("max_body_bytes", self.max_body_bytes, 1, 2**40)
        _int_range("api_burst", self.api_burst, 1, 10**9)
        _int_range("token_burst", self.token_burst, 1, 10**9)
        _number_range("token_lifetime", self.token_lifetime, 1.0, 10**9)
        _number_range("reservation_hold", self.reservation_hold, 0.001, 10**9)
        _number_range("requests_per_minute", self.requests_per_minute, 0.0, 10**12)
        _number_range("token_requests_per_second", self.token_requests_per_second, 0.0, 10**12)
        _number_range("latency_ms", self.latency_ms, 0.0, 600_000)
        _number_range("latency_jitter_ms", self.latency_jitter_ms, 0.0, 600_000)
        for name in ("fail_rate", "unavailable_rate", "drop_rate", "commit_then_fail_rate"):
            _number_range(name, getattr(self, name), 0.0, 1.0)
        if self.fail_rate + self.unavailable_rate + self.drop_rate > 1.0:
            raise ValueError("fail_rate + unavailable_rate + drop_rate must be at most 1")
        _choice("rate_limit_algorithm", self.rate_limit_algorithm, RATE_LIMIT_ALGORITHMS)
        _choice("commit_then_fail_mode", self.commit_then_fail_mode, COMMIT_THEN_FAIL_MODES)
        _choice("fault_body", self.fault_body, FAULT_BODIES)
        unknown = [e for e in self.fault_endpoints if e not in ENDPOINTS]
        if unknown:
            raise ValueError(f"fault_endpoints: unknown {unknown}; known: {', '.join(ENDPOINTS)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError("seed must be an integer")
        for name in ("retry_after_header", "faults_on_token"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false")
        if self.fault_seed is not None and (
            isinstance(self.fault_seed, bool) or not isinstance(self.fault_seed, int)
        ):
            raise ValueError("fault_seed must be an integer or null")


def parse_scopes(text: str | Iterable[str]) -> frozenset[Scope]:
    """Scopes from ``"book cancel"``, ``"book,cancel"``, full strings, or a list of either."""
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    return frozenset(Scope.parse(item) for item in items)


def _coerce(name: str, value: Any) -> Any:
    if name == "start_date" and isinstance(value, str):
        return date.fromisoformat(value)
    if name == "fault_endpoints":
        if isinstance(value, str):
            return tuple(value.replace(",", " ").split())
        if value is None:
            return ()
        return tuple(value)
    if name == "clients":
        raise ValueError("clients cannot change at run time; start another sandbox")
    return value


def _int_range(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")


def _number_range(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
