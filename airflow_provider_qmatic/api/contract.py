"""Part B of the API contract (second edition) as one table: every endpoint the provider calls and
the sandbox serves, each row marked ``page`` (a public Qmatic page shows it) or ``guess``.

Qmatic publishes only some of these paths (``../shared`` Part A and the public-pages digest). The
client builds its requests from this table and the sandbox routes, authorises and answers from it,
so correcting an endpoint is a change to one row here, or, on a deployment, one entry of the
connection's ``endpoints`` extra (:func:`resolve`), without a release. Plain Python: the client
imports it without Airflow, pydantic or FastAPI.

The OAuth2 scopes live here too, since every row names the scopes a token may carry to call it: a
token is requested for exactly the scopes of the operation at hand and cached per scope set, so a
cancel job never holds a token that could book (least privilege).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Literal


class Scope(str, Enum):
    """The three scopes Qmatic's identity server grants."""

    BOOK = "com.qmatic.saas.appointments/external.appointment.book"
    RESCHEDULE = "com.qmatic.saas.appointments/external.appointment.reschedule"
    CANCEL = "com.qmatic.saas.appointments/external.appointment.cancel"

    @classmethod
    def parse(cls, value: str) -> Scope:
        """Accept the full scope string or its short name (``book``, ``reschedule``, ``cancel``)."""
        text = value.strip()
        for scope in cls:
            if text in (scope.value, scope.name.lower()):
                return scope
        known = ", ".join(s.name.lower() for s in cls)
        raise ValueError(f"unknown scope {text!r}: use one of {known} or the full scope string")


ALL_SCOPES: frozenset[Scope] = frozenset(Scope)
# The scope sets the provider asks tokens for: one scope each (least privilege).
BOOK_SCOPES: frozenset[Scope] = frozenset({Scope.BOOK})
RESCHEDULE_SCOPES: frozenset[Scope] = frozenset({Scope.RESCHEDULE})
CANCEL_SCOPES: frozenset[Scope] = frozenset({Scope.CANCEL})


def scope_string(scopes: frozenset[Scope]) -> str:
    """The ``scope`` form value: scope strings joined by single spaces, in a stable order."""
    return " ".join(sorted(s.value for s in scopes))


# Any endpoint may also answer these: bad or missing credentials, a token without the scope or a
# foreign tenant, an oversized body, the rate limit, and server or gateway faults.
ANY_ENDPOINT_STATUSES: frozenset[int] = frozenset({401, 403, 408, 413, 429, 500, 502, 503, 504})

Source = Literal["page", "guess"]


@dataclass(frozen=True)
class Operation:
    """One endpoint of Part B.

    :param name: the operation's name in counters, faults, logs, error texts and the ``endpoints``
        extra.
    :param scopes: a token carrying any one of these may call it, the first being the one the client
        asks for when the caller's scopes cannot call it; empty for the token endpoint (Basic auth).
    :param idempotent: repeating it after a lost answer cannot do it twice (Part B's retry rules).
    :param writes: it changes state (reads and the search never do, whatever their method).
    :param localised: it sends ``Accept-Language`` (Part B: on every read).
    :param success: the status of a successful answer.
    :param refusals: the statuses besides :data:`ANY_ENDPOINT_STATUSES` it may answer.
    :param source: ``page`` when a public Qmatic page shows the method and path, else ``guess``.
    :param note: what of the row is public and what is not, where ``source`` alone does not say.
    """

    name: str
    method: str
    path: str
    scopes: tuple[Scope, ...]
    idempotent: bool
    writes: bool = False
    localised: bool = False
    success: int = 200
    refusals: frozenset[int] = frozenset()
    source: Source = "guess"
    note: str = ""

    @property
    def statuses(self) -> frozenset[int]:
        """Every status this endpoint may answer."""
        return ANY_ENDPOINT_STATUSES | self.refusals | {self.success}

    @property
    def placeholders(self) -> frozenset[str]:
        """The ``{name}`` fields of the path template."""
        return frozenset(_PLACEHOLDER.findall(self.path))

    def token_scopes(self, preferred: frozenset[Scope]) -> frozenset[Scope]:
        """The scopes to call it with: ``preferred`` if a token with them may call it, else the first
        scope of the row, so no caller sends a token the endpoint refuses (a release is always made
        with ``book``, even inside a reschedule)."""
        if preferred & set(self.scopes):
            return preferred
        return frozenset(self.scopes[:1])


_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
_API = "/external/v1"
_READERS = (Scope.BOOK, Scope.RESCHEDULE, Scope.CANCEL)

# fmt: off
TOKEN = Operation(
    "token", "POST", "/oauth2/token", (), idempotent=True, refusals=frozenset({400}), source="page",
)
BRANCHES = Operation(
    "branches", "GET", f"{_API}/branches", _READERS, idempotent=True, localised=True,
)
# Public: tenant-wide, one item per service and branch (the client filters by branch.id).
SERVICES = Operation(
    "services", "GET", f"{_API}/services", _READERS, idempotent=True, localised=True, source="page",
    note="the page writes /services without the /external/v1 prefix",
)
# The booking page names a service-group listing; no page shows its path or answer.
SERVICE_GROUPS = Operation(
    "service_groups", "GET", f"{_API}/servicegroups", _READERS, idempotent=True, localised=True,
)
TIMESLOTS = Operation(
    "timeslots", "GET", f"{_API}/branches/{{branch_id}}/services/{{service_id}}/timeslots", _READERS,
    idempotent=True, localised=True, refusals=frozenset({400, 404}),
)
RESERVE = Operation(
    "reserve", "POST", f"{_API}/reservations", (Scope.BOOK, Scope.RESCHEDULE), idempotent=False,
    writes=True, success=201, refusals=frozenset({400, 404, 409}),
    note="body fields public (requestedResourceId, numberOfReservations); path, method and answer guessed",
)
RELEASE = Operation(
    "release", "DELETE", f"{_API}/reservations/reservations/{{appointment_id}}", (Scope.BOOK,),
    idempotent=True, writes=True, success=204, refusals=frozenset({404, 409}), source="page",
    note="path and 204 public; the method is a guess",
)
# A second confirm of one reservation is answered 409, never a second booking.
CONFIRM = Operation(
    "confirm", "POST", f"{_API}/appointments/{{appointment_id}}/confirm", (Scope.BOOK,),
    idempotent=True, writes=True, success=201, refusals=frozenset({400, 404, 409}),
    note="201 and the customer fields public; path, method and body layout guessed",
)
GET = Operation(
    "get", "GET", f"{_API}/appointments/{{appointment_id}}", _READERS, idempotent=True,
    localised=True, refusals=frozenset({404}), source="page",
    note="the page writes /appointments/AppointmentId without the /external/v1 prefix",
)
# A search changes nothing, whatever its method.
SEARCH = Operation(
    "search", "POST", f"{_API}/appointments/search", _READERS, idempotent=True, localised=True,
    refusals=frozenset({400}), source="page",
    note="the page writes /appointments/search; its example answer is one object, not an array",
)
RESCHEDULE = Operation(
    "reschedule", "PUT", f"{_API}/appointments/{{appointment_id}}/reschedule", (Scope.RESCHEDULE,),
    idempotent=True, writes=True, refusals=frozenset({400, 404, 409}),
)
# A cancelled appointment may be deleted: a repeat or a later get may answer 404.
CANCEL = Operation(
    "cancel", "DELETE", f"{_API}/appointments/{{appointment_id}}", (Scope.CANCEL,), idempotent=True,
    writes=True, success=204, refusals=frozenset({404, 409}), source="page",
    note="the page writes /appointments/appointmentId; 204 'cancelled/deleted'",
)
UPDATE_CUSTOMER = Operation(
    "update_customer", "PUT", f"{_API}/appointments/{{appointment_id}}/customer", (Scope.BOOK,),
    idempotent=True, writes=True, success=204, refusals=frozenset({400, 404, 409}), source="page",
    note="the page writes /Appointments/appointmentId/customer (capital A, no prefix); scope a guess",
)
# Service combinations (several services in one appointment): a family of its own, switched on per
# system and configured per branch. A tenant without them refuses these calls (the page gives no
# code); cancel, release and update customer are shared with single-service appointments.
_COMBI = f"{_API}/serviceCombination"
SERVICE_COMBINATIONS = Operation(
    "service_combinations", "GET", f"{_COMBI}/branch", _READERS, idempotent=True, localised=True,
    refusals=frozenset({400, 404, 409}), source="page",
    note="every branch's combinations; no page shows the one-branch form, so the client filters by branchId",
)
COMBINATION_TIMESLOTS = Operation(
    "combination_timeslots", "GET", f"{_COMBI}/branch/{{branch_id}}/timeslots", _READERS,
    idempotent=True, localised=True, refusals=frozenset({400, 404, 409}), source="page",
    note="the page puts {serviceId} where the branch id belongs; serviceId repeated in the query, "
    "numberOfReservations the sum over the services; from/to as the single-service call (guess)",
)
# Before the get: its path would also match "search" as an appointment id.
COMBINATION_SEARCH = Operation(
    "combination_search", "GET", f"{_COMBI}/appointments/search", _READERS, idempotent=True,
    localised=True, refusals=frozenset({400, 404, 409}), source="page",
    note="a GET with the search's JSON body, as the page writes it",
)
COMBINATION_RESERVE = Operation(
    "combination_reserve", "POST", f"{_COMBI}/reservations", (Scope.BOOK, Scope.RESCHEDULE),
    idempotent=False, writes=True, success=201, refusals=frozenset({400, 404, 409}),
    note="as reserve with serviceIds[] instead of serviceId; no page shows it",
)
COMBINATION_CONFIRM = Operation(
    "combination_confirm", "POST", f"{_COMBI}/appointments/{{appointment_id}}/confirm", (Scope.BOOK,),
    idempotent=True, writes=True, success=201, refusals=frozenset({400, 404, 409}),
    note="as confirm; no page shows it",
)
COMBINATION_GET = Operation(
    "combination_get", "GET", f"{_COMBI}/appointments/{{appointment_id}}", _READERS, idempotent=True,
    localised=True, refusals=frozenset({404, 409}),
    note="the page's path is cut off after /external/v1/s; the rest as get",
)
COMBINATION_RESCHEDULE = Operation(
    "combination_reschedule", "PUT", f"{_COMBI}/appointments/{{appointment_id}}/reschedule",
    (Scope.RESCHEDULE,), idempotent=True, writes=True, refusals=frozenset({400, 404, 409}),
    note="as reschedule; no page shows it",
)
# fmt: on

API_OPERATIONS: tuple[Operation, ...] = (
    BRANCHES,
    SERVICES,
    SERVICE_GROUPS,
    TIMESLOTS,
    RESERVE,
    RELEASE,
    CONFIRM,
    GET,
    SEARCH,
    RESCHEDULE,
    CANCEL,
    UPDATE_CUSTOMER,
    SERVICE_COMBINATIONS,
    COMBINATION_TIMESLOTS,
    COMBINATION_SEARCH,
    COMBINATION_RESERVE,
    COMBINATION_CONFIRM,
    COMBINATION_GET,
    COMBINATION_RESCHEDULE,
)
# The calls a tenant without service combinations refuses.
COMBINATION_OPERATIONS: frozenset[str] = frozenset(
    op.name for op in API_OPERATIONS if op.path.startswith(_COMBI + "/")
)
OPERATIONS: dict[str, Operation] = {op.name: op for op in (TOKEN, *API_OPERATIONS)}


def check_endpoint_overrides(overrides: object) -> dict[str, str]:
    """Validate an ``endpoints`` mapping (operation name -> path template) before any request.

    Raises ValueError naming the key and the fix: an unknown operation, a path that is not an
    absolute path (a scheme, a host, a query, a fragment or ``..``), or other placeholders than the
    row's own (the client fills exactly those).
    """
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise ValueError(
            'endpoints must be a JSON object mapping an operation to a path, e.g. {"reserve": '
            '"/external/v1/reservations"}'
        )
    known = ", ".join(OPERATIONS)
    checked: dict[str, str] = {}
    for name, path in overrides.items():
        if name not in OPERATIONS:
            raise ValueError(f"endpoints: unknown operation {str(name)[:40]!r}; use one of {known}")
        where = f"endpoints.{name}"
        if not isinstance(path, str) or not path.startswith("/") or path.startswith("//"):
            raise ValueError(
                f"{where} must be an absolute path starting with one '/', e.g. {OPERATIONS[name].path}"
            )
        if any(ch in path for ch in "?#\\%") or "://" in path or not path.isprintable() or " " in path:
            raise ValueError(
                f"{where} must be a path only: no scheme, host, query, fragment, '%', '\\' or spaces "
                "(the host comes from the connection's region or base URL)"
            )
        if ".." in path.split("/") or "." in path.split("/"):
            raise ValueError(f"{where} must not contain '.' or '..' segments")
        expected = OPERATIONS[name].placeholders
        found = frozenset(_PLACEHOLDER.findall(path))
        stray = re.sub(_PLACEHOLDER, "", path)
        if found != expected or "{" in stray or "}" in stray:
            want = ", ".join("{" + p + "}" for p in sorted(expected)) or "no placeholders"
            raise ValueError(f"{where} must use exactly the placeholders of the default path: {want}")
        checked[name] = path
    return checked


def resolve(overrides: Mapping[str, str] | None = None) -> dict[str, Operation]:
    """The contract table with a deployment's corrected paths (already checked) in place."""
    if not overrides:
        return OPERATIONS
    return {name: replace(op, path=overrides.get(name, op.path)) for name, op in OPERATIONS.items()}
