"""Part B of the API contract as one table: every endpoint the provider calls and the sandbox serves.

Qmatic does not publish most of these paths, status codes or scope rules (see Part A of the
contract). The client builds its requests from this table, and the sandbox routes, authorises and
answers from it, so correcting an endpoint once Qmatic's real API is known is a change to one row
here and nothing else. Plain Python: the client imports it without Airflow, pydantic or FastAPI.
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow_provider_qmatic.scopes import Scope

# Any endpoint may also answer these: bad or missing credentials, a token without the scope or a
# foreign tenant, an oversized body, the rate limit, and server or gateway faults.
ANY_ENDPOINT_STATUSES: frozenset[int] = frozenset({401, 403, 408, 413, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class Operation:
    """One endpoint of Part B.

    :param name: the operation's name in counters, faults, logs and error texts.
    :param scopes: a token carrying any one of these may call it, the first being the one the client
        asks for when the caller's scopes cannot call it; empty for the token endpoint (Basic auth).
    :param idempotent: repeating it after a lost answer cannot do it twice (Part B's retry rules).
    :param writes: it changes state (reads and the search never do, whatever their method).
    :param localised: it sends ``Accept-Language`` (listing and search calls).
    :param success: the status of a successful answer.
    :param refusals: the statuses besides :data:`ANY_ENDPOINT_STATUSES` it may answer.
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

    @property
    def statuses(self) -> frozenset[int]:
        """Every status this endpoint may answer."""
        return ANY_ENDPOINT_STATUSES | self.refusals | {self.success}

    def token_scopes(self, preferred: frozenset[Scope]) -> frozenset[Scope]:
        """The scopes to call it with: ``preferred`` if a token with them may call it, else the first
        scope of the row, so no caller sends a token the endpoint refuses (a release is always made
        with ``book``, even inside a reschedule)."""
        if preferred & set(self.scopes):
            return preferred
        return frozenset(self.scopes[:1])


_API = "/external/v1"
_READERS = (Scope.BOOK, Scope.RESCHEDULE, Scope.CANCEL)

# fmt: off
TOKEN = Operation("token", "POST", "/oauth2/token", (), idempotent=True, refusals=frozenset({400}))
BRANCHES = Operation("branches", "GET", f"{_API}/branches", _READERS, idempotent=True, localised=True)
SERVICES = Operation(
    "services", "GET", f"{_API}/branches/{{branch_id}}/services", _READERS, idempotent=True,
    localised=True, refusals=frozenset({404}),
)
TIMESLOTS = Operation(
    "timeslots", "GET", f"{_API}/branches/{{branch_id}}/services/{{service_id}}/timeslots", _READERS,
    idempotent=True, localised=True, refusals=frozenset({400, 404}),
)
RESERVE = Operation(
    "reserve", "POST", f"{_API}/reservations", (Scope.BOOK, Scope.RESCHEDULE), idempotent=False,
    writes=True, success=201, refusals=frozenset({400, 404, 409}),
)
RELEASE = Operation(
    "release", "DELETE", f"{_API}/reservations/reservations/{{appointment_id}}", (Scope.BOOK,),
    idempotent=True, writes=True, success=204, refusals=frozenset({404, 409}),
)
# A second confirm of one reservation is answered 409, never a second booking.
CONFIRM = Operation(
    "confirm", "POST", f"{_API}/appointments/{{appointment_id}}/confirm", (Scope.BOOK,),
    idempotent=True, writes=True, success=201, refusals=frozenset({400, 404, 409}),
)
GET = Operation(
    "get", "GET", f"{_API}/appointments/{{appointment_id}}", _READERS, idempotent=True,
    refusals=frozenset({404}),
)
# A search changes nothing, whatever its method.
SEARCH = Operation(
    "search", "POST", f"{_API}/appointments/search", _READERS, idempotent=True, localised=True,
    refusals=frozenset({400}),
)
RESCHEDULE = Operation(
    "reschedule", "PUT", f"{_API}/appointments/{{appointment_id}}/reschedule", (Scope.RESCHEDULE,),
    idempotent=True, writes=True, refusals=frozenset({400, 404, 409}),
)
CANCEL = Operation(
    "cancel", "DELETE", f"{_API}/appointments/{{appointment_id}}", (Scope.CANCEL,), idempotent=True,
    writes=True, success=204, refusals=frozenset({404, 409}),
)
# fmt: on

API_OPERATIONS: tuple[Operation, ...] = (
    BRANCHES,
    SERVICES,
    TIMESLOTS,
    RESERVE,
    RELEASE,
    CONFIRM,
    GET,
    SEARCH,
    RESCHEDULE,
    CANCEL,
)
OPERATIONS: dict[str, Operation] = {op.name: op for op in (TOKEN, *API_OPERATIONS)}
