"""Every knob of the sandbox, in one validated dataclass.

The defaults are Qmatic's documented behaviour (100 API requests per minute, 1 token request per
second, 60-minute tokens, 15-minute holds, 2 MB bodies). Tests turn them down or up: a 1-second
token, a huge slot capacity for bulk jobs, faults. ``SandboxSettings`` is immutable; a change at
run time builds a new one through :meth:`SandboxSettings.with_changes`, which validates it again.
"""

from __future__ import annotations

import dataclasses
import random
import re
import typing
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from typing import Annotated, Any

from pydantic import AfterValidator, Field, InstanceOf, TypeAdapter, ValidationError

from airflow_provider_qmatic.api.contract import (
    ALL_SCOPES,
    OPERATIONS,
    Scope,
    check_endpoint_overrides,
    resolve,
)
from airflow_provider_qmatic.config import normalise_tenant
from airflow_provider_qmatic.exceptions import QmaticConfigError

# Names of the contract's operations, used by statistics and to aim faults (``fault_endpoints``).
ENDPOINTS: tuple[str, ...] = tuple(OPERATIONS)
# The endpoints that change state: the only ones "commit then fail" applies to.
WRITE_ENDPOINTS: frozenset[str] = frozenset(op.name for op in OPERATIONS.values() if op.writes)
RATE_LIMIT_ALGORITHMS: tuple[str, ...] = ("token_bucket", "sliding_window")
COMMIT_THEN_FAIL_MODES: tuple[str, ...] = ("500", "drop", "both")
FAULT_BODIES: tuple[str, ...] = ("json", "empty", "html")
# "public": only the fields Qmatic's public examples show; "rich": plus status, expiry, notes,
# durations and time zones (what the first edition of Part B promised).
ANSWER_SHAPES: tuple[str, ...] = ("public", "rich")
# A search with exactly one match answers an array of it, or (as the public example) the object.
SEARCH_ANSWERS: tuple[str, ...] = ("array", "object")
# The knobs a tenant (system) may set for itself in ``tenant_config``; the top-level fields of the
# same names are every other tenant's values.
TENANT_KNOBS: tuple[str, ...] = (
    "require_date_of_birth",
    "required_questions",
    "max_reservations",
    "service_groups",
    "service_combinations",
    "combination_branches",
)
# Knobs mapping a name to a list (tuples inside, lists in JSON).
_LIST_MAPPINGS: tuple[str, ...] = ("service_groups", "combination_branches")
# ``max_reservations`` key that caps every service not named otherwise.
ALL_SERVICES = "*"
MAX_TENANT_ENTRIES = 200
MAX_BRANCHES = 12
# The seed's shape, for the slot-count bound: at most this many services per branch, none shorter.
MAX_SERVICES_PER_BRANCH = 4
SHORTEST_SERVICE_MINUTES = 10
# Upper bound of seed slots (about 450 bytes each): keeps the seed under roughly 120 MB, whatever
# an unauthenticated POST to /_sandbox/config asks for.
MAX_SLOTS = 250_000
MAX_CLIENTS = 100
# Bodies are held in memory whole; the gateway drains bigger ones up to 64 MiB to answer 413.
MAX_BODY_BYTES = 64 * 1024 * 1024
_YEAR_S = 365 * 24 * 3600.0

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
class TenantSettings:
    """What one tenant's (system's) configuration asks of a booking: see ``SandboxSettings``.

    Service references (keys of ``max_reservations``, members of a service group) are a service id
    or a service name, so a setting can be written before the seed's ids are known.
    """

    require_date_of_birth: bool = False
    required_questions: tuple[str, ...] = ()
    max_reservations: Mapping[str, int] = field(default_factory=dict)
    service_groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    service_combinations: bool = True
    combination_branches: Mapping[str, tuple[str, ...]] | None = None

    def cap(self, service_id: str, service_name: str) -> int:
        """The service's ``config.maxNumberOfReservations``: 0 means no cap (Qmatic's examples)."""
        caps = self.max_reservations
        for key in (service_id, service_name, ALL_SERVICES):
            if key in caps:
                return caps[key]
        return 0


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

    Answers: ``answer_shape`` ``public`` (default: exactly the fields Qmatic's public examples show,
    so a client cannot lean on a guessed field) or ``rich`` (plus ``status``, ``expiresAt``,
    ``notes``, ``durationMinutes``, ``timeZone``, the slots' ``available``); ``search_answer``
    ``array`` or ``object`` (one match answered as the object itself, as the public example).
    ``moved_paths`` serves operations at other paths (operation name -> path template, checked
    like a connection's ``endpoints`` extra); a moved operation no longer answers at its old path.

    Tenant configuration (every tenant; ``tenant_config`` overrides any of them per tenant):
    ``require_date_of_birth``, ``required_questions`` (question ids a confirm must answer),
    ``max_reservations`` (service id or name, or ``*``, -> ``config.maxNumberOfReservations``; 0 or
    absent: no cap), ``service_groups`` (group name -> service ids or names),
    ``service_combinations`` (the system setting that switches combinations on, as by default; off,
    every ``/serviceCombination/`` call is refused) and ``combination_branches`` (branch id or name
    -> the services, by id or name, that may share one appointment there; other branches have none;
    by default every branch's services may share one, so the combination example runs as-is).
    """

    seed: Annotated[int, _int(-(2**63), 2**63 - 1)] = 0
    clients: Annotated[
        tuple[InstanceOf[SandboxClient], ...], Field(min_length=1, max_length=MAX_CLIENTS)
    ] = ()
    branch_count: Annotated[int, _int(1, MAX_BRANCHES)] = 3
    weeks: Annotated[int, _int(1, 104)] = 4
    start_date: Annotated[date | None, Field(strict=True)] = None
    open_hour: Annotated[int, _int(0, 23)] = 9
    close_hour: Annotated[int, _int(1, 24)] = 17
    slot_capacity: Annotated[int, _int(1, 1_000_000)] = 2
    token_lifetime: Annotated[float, _number(1.0, _YEAR_S)] = 3600.0
    reservation_hold: Annotated[float, _number(0.001, _YEAR_S)] = 900.0
    max_body_bytes: Annotated[int, _int(1, MAX_BODY_BYTES)] = 2 * 1024 * 1024
    requests_per_minute: Annotated[float, _number(0.0, 1e9)] = 100.0
    api_burst: Annotated[int, _int(1, 1_000_000)] = 10
    rate_limit_algorithm: Annotated[str, _one_of(RATE_LIMIT_ALGORITHMS)] = "token_bucket"
    token_requests_per_second: Annotated[float, _number(0.0, 1e6)] = 1.0
    token_burst: Annotated[int, _int(1, 1_000_000)] = 1
    retry_after_header: Annotated[bool, Field(strict=True)] = True
    fail_rate: Annotated[float, _number(0.0, 1.0)] = 0.0
    unavailable_rate: Annotated[float, _number(0.0, 1.0)] = 0.0
    drop_rate: Annotated[float, _number(0.0, 1.0)] = 0.0
    commit_then_fail_rate: Annotated[float, _number(0.0, 1.0)] = 0.0
    commit_then_fail_mode: Annotated[str, _one_of(COMMIT_THEN_FAIL_MODES)] = "both"
    latency_ms: Annotated[float, _number(0.0, 60_000.0)] = 0.0
    latency_jitter_ms: Annotated[float, _number(0.0, 60_000.0)] = 0.0
    fault_endpoints: Annotated[
        tuple[Annotated[str, _one_of(ENDPOINTS)], ...], Field(max_length=len(ENDPOINTS))
    ] = ()
    faults_on_token: Annotated[bool, Field(strict=True)] = False
    fault_body: Annotated[str, _one_of(FAULT_BODIES)] = "json"
    fault_seed: Annotated[int | None, _int(-(2**63), 2**63 - 1)] = None
    answer_shape: Annotated[str, _one_of(ANSWER_SHAPES)] = "public"
    search_answer: Annotated[str, _one_of(SEARCH_ANSWERS)] = "array"
    moved_paths: Annotated[dict[str, str], Field(strict=True, max_length=len(OPERATIONS))] = field(
        default_factory=dict
    )
    require_date_of_birth: Annotated[bool, Field(strict=True)] = False
    required_questions: Annotated[
        tuple[Annotated[str, _text(200)], ...], Field(max_length=MAX_TENANT_ENTRIES)
    ] = ()
    max_reservations: Annotated[
        dict[Annotated[str, _text(255)], Annotated[int, _int(0, 1_000_000)]],
        Field(strict=True, max_length=MAX_TENANT_ENTRIES),
    ] = field(default_factory=dict)
    service_groups: Annotated[
        dict[
            Annotated[str, _text(255)],
            Annotated[tuple[Annotated[str, _text(255)], ...], Field(max_length=MAX_TENANT_ENTRIES)],
        ],
        Field(strict=True, max_length=MAX_TENANT_ENTRIES),
    ] = field(default_factory=dict)
    service_combinations: Annotated[bool, Field(strict=True)] = True
    combination_branches: (
        Annotated[
            dict[
                Annotated[str, _text(255)],
                Annotated[tuple[Annotated[str, _text(255)], ...], Field(max_length=MAX_TENANT_ENTRIES)],
            ],
            Field(strict=True, max_length=MAX_BRANCHES),
        ]
        | None
    ) = None
    tenant_config: Annotated[dict[str, dict[str, Any]], Field(strict=True, max_length=MAX_CLIENTS)] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        clients = tuple(self.clients) or (demo_client(self.seed),)
        object.__setattr__(self, "clients", clients)
        object.__setattr__(self, "fault_endpoints", tuple(self.fault_endpoints))
        object.__setattr__(self, "required_questions", tuple(self.required_questions))
        for name in _LIST_MAPPINGS:
            if getattr(self, name) is not None:
                object.__setattr__(self, name, {k: tuple(v) for k, v in dict(getattr(self, name)).items()})
        self._validate()
        object.__setattr__(self, "moved_paths", _check_moved_paths(self.moved_paths))
        object.__setattr__(self, "tenant_config", _check_tenant_config(self.tenant_config))
        unknown = set(self.tenant_config) - {c.tenant for c in self.clients}
        if unknown:
            raise ValueError(
                f"tenant_config: no client has tenant {', '.join(sorted(unknown))}; "
                f"tenants: {', '.join(sorted({c.tenant for c in self.clients}))}"
            )

    @property
    def client(self) -> SandboxClient:
        """The first (primary) client: the one the fixture and the CLI's connection line use."""
        return self.clients[0]

    @property
    def rich(self) -> bool:
        """Answers carry the fields no public example shows (``answer_shape="rich"``)."""
        return self.answer_shape == "rich"

    def tenant(self, tenant: str) -> TenantSettings:
        """One tenant's configuration: its ``tenant_config`` entry over the top-level values."""
        own = self.tenant_config.get(tenant, {})
        values = {name: own.get(name, getattr(self, name)) for name in TENANT_KNOBS}
        return TenantSettings(**values)

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
            elif f.name in ("fault_endpoints", "required_questions"):
                value = list(value)
            elif f.name in _LIST_MAPPINGS and value is not None:
                value = {name: list(members) for name, members in value.items()}
            elif f.name == "tenant_config":
                value = {
                    tenant: {k: _jsonable(v) for k, v in knobs.items()} for tenant, knobs in value.items()
                }
            elif isinstance(value, dict):
                value = dict(value)
            data[f.name] = value
        return data

    def estimated_slots(self) -> int:
        """An upper bound of the seed's slot count: every branch with the most services, all of the
        shortest duration, every weekday of every week open from ``open_hour`` to ``close_hour``."""
        per_day = (self.close_hour - self.open_hour) * 60 // SHORTEST_SERVICE_MINUTES
        return self.branch_count * MAX_SERVICES_PER_BRANCH * self.weeks * 5 * per_day

    def _validate(self) -> None:
        """Each field against its declared bounds, then the rules that span fields.

        The bounds are not cosmetic: ``/_sandbox/config`` takes settings from anyone who can reach
        the port, so every knob that sizes memory (slots, bodies) or time (latency) is capped.
        """
        for name, adapter in _field_adapters().items():
            value = getattr(self, name)
            try:
                adapter.validate_python(value)
            except ValidationError as exc:
                error = exc.errors(include_url=False)[0]
                where = "".join(f"[{i}]" for i in error["loc"])
                message = error["msg"].removeprefix("Value error, ")
                raise ValueError(f"{name}{where}: {message}, got {_short(error['input'])}") from None
        ids = [c.client_id for c in self.clients]
        if len(set(ids)) != len(ids):
            raise ValueError("clients: two clients have the same client_id")
        system_ids: dict[str, str] = {}
        for c in self.clients:
            if system_ids.setdefault(c.tenant, c.system_id) != c.system_id:
                raise ValueError(f"clients: tenant {c.tenant!r} has two different system ids")
        if self.close_hour <= self.open_hour:
            raise ValueError(f"close_hour must be after open_hour ({self.open_hour}), got {self.close_hour}")
        if self.fail_rate + self.unavailable_rate + self.drop_rate > 1.0:
            raise ValueError("fail_rate + unavailable_rate + drop_rate must be at most 1")
        if self.estimated_slots() > MAX_SLOTS:
            raise ValueError(
                f"branch_count, weeks, open_hour, close_hour: up to {self.estimated_slots():,} time slots "
                f"(branches x {MAX_SERVICES_PER_BRANCH} services x weeks x 5 days x slots a day); "
                f"at most {MAX_SLOTS:,} are allowed: lower weeks or branch_count, or shorten the day"
            )


@cache
def _field_adapters() -> dict[str, TypeAdapter[Any]]:
    """One pydantic validator per field, built from the ``Annotated`` bounds of its type hint."""
    hints = typing.get_type_hints(SandboxSettings, include_extras=True)
    return {f.name: TypeAdapter(hints[f.name]) for f in dataclasses.fields(SandboxSettings)}


def _int(low: int, high: int) -> Any:
    """An integer (never a bool, float or string) from ``low`` to ``high``."""
    return Field(strict=True, ge=low, le=high)


def _number(low: float, high: float) -> Any:
    """A finite number (int or float, never a bool or string) from ``low`` to ``high``."""
    return Field(strict=True, ge=low, le=high, allow_inf_nan=False)


def _text(max_len: int) -> AfterValidator:
    """Non-blank printable text of at most ``max_len`` characters."""

    def check(value: str) -> str:
        if not value.strip() or not value.isprintable() or len(value) > max_len:
            raise ValueError(f"must be non-blank printable text of at most {max_len} characters")
        return value

    return AfterValidator(check)


def _one_of(choices: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    return AfterValidator(check)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
    if name == "required_questions" and isinstance(value, list):
        return tuple(value)
    if name in _LIST_MAPPINGS and isinstance(value, dict):
        return {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    if name == "tenant_config" and isinstance(value, dict):
        return {
            tenant: {k: _coerce(k, v) if k in TENANT_KNOBS else v for k, v in knobs.items()}
            if isinstance(knobs, dict)
            else knobs
            for tenant, knobs in value.items()
        }
    return value


def _check_moved_paths(moved: Mapping[str, str]) -> dict[str, str]:
    """The contract's own check of an ``endpoints`` extra, plus: no two operations answer one
    method and path (a move onto another row's path would hide that row)."""
    try:
        checked = check_endpoint_overrides(moved)
    except ValueError as exc:
        raise ValueError(f"moved_paths: {exc}") from None
    seen: dict[tuple[str, str], str] = {}
    for op in resolve(checked).values():
        shape = (op.method, re.sub(r"\{[a-z_]+\}", "{}", op.path.rstrip("/")))
        other = seen.setdefault(shape, op.name)
        if other != op.name:
            raise ValueError(f"moved_paths: {op.name} and {other} would both answer {op.method} {op.path}")
    return checked


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _check_tenant_config(config: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-tenant overrides: a known tenant name (normalised), only ``TENANT_KNOBS``, each value
    within the bounds of the top-level field of the same name."""
    adapters = _field_adapters()
    checked: dict[str, dict[str, Any]] = {}
    for raw_tenant, knobs in config.items():
        try:
            tenant = normalise_tenant(str(raw_tenant))
        except QmaticConfigError:
            raise ValueError(f"tenant_config: {_short(raw_tenant)} is not an account name") from None
        if not isinstance(knobs, Mapping):
            raise ValueError(f"tenant_config[{tenant}] must be an object of {', '.join(TENANT_KNOBS)}")
        own: dict[str, Any] = {}
        for name, value in knobs.items():
            if name not in TENANT_KNOBS:
                raise ValueError(
                    f"tenant_config[{tenant}]: unknown setting {_short(name)}; use {', '.join(TENANT_KNOBS)}"
                )
            if name == "required_questions" and isinstance(value, list):
                value = tuple(value)
            if name in _LIST_MAPPINGS and isinstance(value, dict):
                value = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
            try:
                adapters[name].validate_python(value)
            except ValidationError as exc:
                error = exc.errors(include_url=False)[0]
                where = "".join(f"[{i}]" for i in error["loc"])
                message = error["msg"].removeprefix("Value error, ")
                raise ValueError(f"tenant_config[{tenant}].{name}{where}: {message}") from None
            own[name] = value
        checked[tenant] = own
    return checked
