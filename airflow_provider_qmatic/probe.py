"""``qmatic-probe``: learn which of the contract's guesses a tenant confirms, without writing anything.

Most paths of Part B are guesses (``contract.py`` marks each row ``page`` or ``guess``). A deployment
runs this once where Airflow runs, against its real tenant, through the same connection its DAGs use
(``QmaticHook``, so ``AIRFLOW_CONN_*`` variables and secrets backends work), and reads one row per
operation: the method and path the client used (the connection's ``endpoints`` extra included),
the status, whether the answer has Part B's shape (field *names* missing or unexpected, never a
value), and a verdict. A moved path shows up as a 404 or 405 on a path that must exist; the row
then names the ``endpoints`` key that corrects it, so the fix is a connection edit, not a release.

Every call is a read (``search`` is a POST that changes nothing) and goes through the client, so
the tenant's request budget and pacing apply: seven API requests and a token (eight when the
tenant has service combinations switched on: the combination listing tells, and then their time
slots are read too). ``--write-check`` adds
one reserve and its release (never a confirm), which is the only way to test the write paths and
risks a 15-minute hold if the release fails; it is therefore opt-in and reports any hold loudly.

Exit status: 0 when nothing contradicts the contract, 1 when a row differs (or a reservation may be
left held), 2 when the connection or the command line is unusable. Airflow is imported only by
:func:`main`, so importing this module costs nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import secrets
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import IO, TYPE_CHECKING, Any, Literal

from airflow_provider_qmatic import DEFAULT_CONN_ID, __version__
from airflow_provider_qmatic.api.contract import (
    BOOK_SCOPES,
    CANCEL_SCOPES,
    OPERATIONS,
    RESCHEDULE_SCOPES,
    Operation,
    Scope,
)
from airflow_provider_qmatic.exceptions import (
    QmaticAuthError,
    QmaticConfigError,
    QmaticError,
    QmaticForbiddenError,
    QmaticRedirectError,
    QmaticUnknownOutcomeError,
)

if TYPE_CHECKING:
    import requests

    from airflow_provider_qmatic.client.client import QmaticClient

Verdict = Literal["confirmed", "differs", "unknown"]

EXIT_OK = 0
EXIT_DIFFERS = 1
EXIT_USAGE = 2
DEFAULT_DAYS = 7
MAX_DAYS = 31
HOLD_MINUTES = 15
_API_PREFIX = "/external/v1"
# Field names are shown, values never; a "name" that is not a plain identifier is not shown either.
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
_PLAIN_CODE = re.compile(r"[a-z][a-z0-9_]{0,39}")
_MAX_NAMES = 20
_COMBINATIONS_SAID = {
    True: "switched on (see the service_combinations row for the branches configured)",
    False: "switched off (the tenant refused the combination listing)",
    None: "unknown (see the service_combinations row)",
}
_WRITE_WARNING = (
    f"--write-check reserves one free time slot and releases it at once (it never confirms). If the "
    f"release fails, the slot stays held for up to {HOLD_MINUTES} minutes, and nobody can book that "
    "place meanwhile; the probe then prints the reservation id so that a person can release it."
)


# -- the shapes of Part B, second edition ----------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """The fields Part B gives an answer object: ``required`` ones a client needs, ``optional``
    ones it may carry, and the objects inside it whose own fields Part B spells out (``nested``)."""

    required: frozenset[str] = frozenset()
    optional: frozenset[str] = frozenset()
    nested: Mapping[str, Shape] = field(default_factory=dict)


def _shape(required: str = "", optional: str = "", **nested: Shape) -> Shape:
    return Shape(frozenset(required.split()), frozenset(optional.split()) | set(nested), nested)


_BRANCH_REF = _shape("id name", "address location")
_SERVICE_REF = _shape("id name", "config")
_TIME_SLOT = _shape("startTime endTime")
# An appointment: only appointmentId is required (Part B: every other field may be missing), and
# the customer's fields are never looked at.
APPOINTMENT = _shape(
    "appointmentId",
    "customer services numberOfReservations status notes supportNotes expiresAt",
    timeSlot=_TIME_SLOT,
    branch=_BRANCH_REF,
    service=_SERVICE_REF,
)
SHAPES: dict[str, Shape] = {
    "branches": _shape("id name", "timeZone address location"),
    "services": _shape(
        "id name branch",
        "durationMinutes",
        branch=_shape("id name"),
        config=_shape("", "maxNumberOfReservations"),
    ),
    # No page and no Part B row shows this answer: only its container can contradict anything.
    "service_groups": _shape("", "id name"),
    "timeslots": _shape("startTime endTime", "available"),
    "service_combinations": _shape("branchId serviceCombinations"),
    "combination_timeslots": _shape("startTime endTime", "available"),
    "get": APPOINTMENT,
    "search": APPOINTMENT,
    "reserve": APPOINTMENT,
}


@dataclass
class ShapeReport:
    """How an answer compares with its shape: field names only, never a value."""

    items: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    problem: str = ""

    @property
    def contradicts(self) -> bool:
        """A field the client needs is absent, or the answer is not the container Part B says.
        Unexpected fields alone contradict nothing: the client ignores them."""
        return bool(self.missing or self.problem)

    @property
    def summary(self) -> str:
        if self.contradicts:
            return "differs"
        if self.unexpected:
            return "extra fields"
        return "matches" if self.items else "no items"

    def detail(self) -> str:
        parts = [self.problem] if self.problem else []
        if self.missing:
            parts.append("missing " + ", ".join(self.missing))
        if self.unexpected:
            parts.append("unexpected " + ", ".join(self.unexpected))
        return "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {"result": self.summary, **asdict(self)}


def _field_name(key: object) -> str:
    text = str(key)
    return text if _PLAIN_NAME.fullmatch(text) else "<a field with an unusual name>"


def _names(found: set[str]) -> list[str]:
    names = sorted(found)
    if len(names) > _MAX_NAMES:
        return [*names[:_MAX_NAMES], f"and {len(names) - _MAX_NAMES} more"]
    return names


def _kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return "null" if value is None else "a " + type(value).__name__


def _compare(
    obj: Mapping[str, Any], shape: Shape, prefix: str, missing: set[str], unexpected: set[str], odd: set[str]
) -> None:
    for name in shape.required:
        if obj.get(name) is None:
            missing.add(prefix + name)
    for key in obj:
        if key not in shape.required and key not in shape.optional:
            unexpected.add(prefix + _field_name(key))
    for name, inner in shape.nested.items():
        value = obj.get(name)
        if isinstance(value, dict):
            _compare(value, inner, f"{prefix}{name}.", missing, unexpected, odd)
        elif value is not None:
            odd.add(f"{prefix}{name} is {_kind(value)}, not an object")


def check_shape(data: Any, shape: Shape, *, many: bool, single_allowed: bool = False) -> ShapeReport:
    """Compare an answer with ``shape``: a list of such objects when ``many`` (or one object too,
    when ``single_allowed``: Part B's search), else one object. Only names reach the report."""
    if many and isinstance(data, list):
        items: list[Any] = data
    elif isinstance(data, dict) and (not many or single_allowed):
        items = [data]
    else:
        want = "a list" if many else "an object"
        problem = f"{_kind(data)} where Part B has {want}"
        if isinstance(data, dict):
            problem += " (its fields: " + ", ".join(_names({_field_name(k) for k in data})) + ")"
        return ShapeReport(problem=problem)
    missing: set[str] = set()
    unexpected: set[str] = set()
    odd: set[str] = set()
    not_objects = 0
    for item in items:
        if isinstance(item, dict):
            _compare(item, shape, "", missing, unexpected, odd)
        else:
            not_objects += 1
    problems = sorted(odd)
    if not_objects:
        problems.insert(0, f"{not_objects} of {len(items)} items are not objects")
    return ShapeReport(
        items=len(items), missing=_names(missing), unexpected=_names(unexpected), problem="; ".join(problems)
    )


def _free_slot(slots: list[Any]) -> dict[str, Any] | None:
    """The first slot that is not marked full and starts at least an hour from now (a slot about to
    begin may be refused for its time, which would say nothing about the reserve path)."""
    soon = datetime.now(timezone.utc) + timedelta(hours=1)
    for slot in slots:
        if not isinstance(slot, dict) or slot.get("available") in (False, 0):
            continue
        start, end = slot.get("startTime"), slot.get("endTime")
        if not isinstance(start, str) or not isinstance(end, str):
            continue
        try:
            begins = datetime.fromisoformat(start[:-1] + "+00:00" if start.endswith("Z") else start)
        except ValueError:
            continue
        if begins.tzinfo is not None and begins >= soon:
            return slot
    return None


# -- one row per operation -------------------------------------------------------------------------


@dataclass
class Row:
    """What the probe learnt of one operation. Every text in it is the probe's own, a status, a
    field name or an error code: nothing the server said about a customer."""

    operation: str
    method: str
    path: str
    source: str
    overridden: bool
    status: int | None = None
    shape: ShapeReport | None = None
    verdict: Verdict = "unknown"
    note: str = ""
    fix: str = ""

    @property
    def source_label(self) -> str:
        return f"{self.source}, endpoints" if self.overridden else self.source

    def add(self, note: str, *, first: bool = False) -> None:
        """Add ``note`` after the row's note (``first``: before it), joined by "; "."""
        self.note = "; ".join(filter(None, (note, self.note) if first else (self.note, note)))

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "shape": self.shape.as_dict() if self.shape is not None else None,
            "fix": {"extra": "endpoints", "key": self.operation, "how": self.fix} if self.fix else None,
        }


@dataclass
class Answer:
    """One call's outcome: the decoded body, or the error; the status of the last answer seen."""

    status: int | None
    data: Any = None
    error: QmaticError | None = None


def _path_fix(op: Operation, default: Operation) -> str:
    """How to correct ``op``'s path with the ``endpoints`` extra, with a candidate to try when the
    path carries Part B's prefix (the public pages write most paths without it)."""
    text = (
        f'add "{op.name}" to the connection\'s `endpoints` extra: '
        f'{{"{op.name}": "<the path your tenant serves>"}}'
    )
    if op.path.startswith(_API_PREFIX + "/"):
        text += f'; the public pages write paths without {_API_PREFIX}: try "{op.path[len(_API_PREFIX) :]}"'
    elif op.path != default.path:
        text += f" (now {op.path}; Part B's default is {default.path})"
    return text


def _status_text(answer: Answer) -> str:
    """The status and, if it is a plain code, the error code: the server's words go no further."""
    if answer.status is None:
        return "no answer"
    code = (answer.error.code or "") if answer.error is not None else ""
    return f"HTTP {answer.status} {code}" if _PLAIN_CODE.fullmatch(code) else f"HTTP {answer.status}"


class Probe:
    """Runs the operations in order on one client, each once, and collects a :class:`Row` each.

    :param client: the hook's client (its table, pacing and token cache).
    :param days: how many days of time slots to ask for, from today.
    :param today: the first of those days (the local date unless a test fixes it).
    """

    def __init__(self, client: QmaticClient, *, days: int = DEFAULT_DAYS, today: date | None = None) -> None:
        self.client = client
        self.operations: Mapping[str, Operation] = client.operations
        self.days = days
        self.today = today or date.today()
        self.rows: list[Row] = []
        self.scopes: frozenset[Scope] = BOOK_SCOPES
        self.held_reservation: str | None = None
        # Whether the tenant has service combinations switched on: None while unknown.
        self.combinations_on: bool | None = None
        self.hold_unknown = False
        self._last_status: int | None = None
        client.session.hooks["response"].append(self._on_response)

    def _on_response(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        # The token request is the one sent with Basic credentials; its status is not an API row's.
        if not str(response.request.headers.get("Authorization", "")).startswith("Basic"):
            self._last_status = response.status_code

    # -- plumbing ------------------------------------------------------------------------------

    def choose_scopes(self) -> None:
        """Reads accept any scope (Part B): use the first one the client is granted.

        Raises the token error when no scope is granted for another reason than the scope (bad
        credentials, unknown tenant, an unreachable host): the connection is unusable.
        """
        for scopes in (BOOK_SCOPES, RESCHEDULE_SCOPES, CANCEL_SCOPES):
            try:
                self.client.tokens.token(scopes)
            except QmaticError as exc:
                refused = exc.code in ("invalid_scope", "insufficient_scope", "unauthorized_client")
                if refused and scopes is not CANCEL_SCOPES:
                    continue  # the last one's refusal is raised
                raise
            self.scopes = scopes
            return

    def _row(self, name: str) -> Row:
        op = self.operations[name]
        row = Row(name, op.method, op.path, op.source, overridden=op.path != OPERATIONS[name].path)
        self.rows.append(row)
        return row

    def _ask(self, row: Row, scopes: frozenset[Scope], **kwargs: Any) -> Answer:
        self._last_status = None
        try:
            data = self.client.call(row.operation, scopes, **kwargs)
        except (QmaticAuthError, QmaticConfigError):
            raise  # the credentials stopped working, or the connection lacks a field: not this row
        except QmaticError as exc:
            if isinstance(exc, QmaticForbiddenError) and exc.code == "forbidden_tenant":
                raise  # the system id is not this tenant's: no row can be judged
            answer = Answer(self._last_status if self._last_status is not None else exc.status, error=exc)
        else:
            answer = Answer(self._last_status, data=data)
        row.status = answer.status
        return answer

    def _refused(self, row: Row, answer: Answer, *, path_must_exist: bool) -> None:
        """Judge an answer that was an error. A 404 where the path must exist, or a 405, means the
        path (or its method) is not the tenant's: the row differs and names the override."""
        status = answer.status
        op = self.operations[row.operation]
        if status == 405 or (status == 404 and path_must_exist):
            row.verdict = "differs"
            said = f"the tenant does not serve this {'method' if status == 405 else 'path'}"
            if row.operation == "timeslots" and status == 404:
                said += " (or does not know the branch and service the services listing gave)"
            if status == 405:
                said += f" with {op.method} (the method is fixed in the contract: report it)"
            row.fix = _path_fix(op, OPERATIONS[row.operation])
        elif isinstance(answer.error, QmaticRedirectError):
            row.verdict = "differs"
            said = "a redirect, never followed; check base_url or region"
        elif status == 403:
            said = "the token's scope may not call it (Part B's scopes are a guess)"
        elif status is None or status >= 500 or status in (408, 429):
            said = "no clear answer after the client's retries; run the probe again later"
        else:
            row.verdict = "differs"
            said = "Part B does not expect this answer here"
        row.note = f"{_status_text(answer)}: {said}"

    def _judge_answer(
        self, row: Row, answer: Answer, shape_name: str, *, many: bool, single_allowed: bool = False
    ) -> None:
        report = check_shape(answer.data, SHAPES[shape_name], many=many, single_allowed=single_allowed)
        row.shape = report
        if report.contradicts:
            row.verdict = "differs"
            row.note = "the answer's shape differs from Part B: " + report.detail()
        else:
            row.verdict = "confirmed"
            row.note = "" if report.items else "no items, so no fields to check"
            if report.unexpected:
                row.add(
                    "fields Part B does not name (harmless, the client ignores them): "
                    + ", ".join(report.unexpected)
                )

    def _listing(self, name: str, **kwargs: Any) -> list[Any]:
        row = self._row(name)
        answer = self._ask(row, self.scopes, **kwargs)
        if answer.error is not None:
            self._refused(row, answer, path_must_exist=True)
            return []
        self._judge_answer(row, answer, name, many=True)
        return answer.data if isinstance(answer.data, list) else []

    # -- the steps -----------------------------------------------------------------------------

    def run(self, *, write_check: bool = False, warn: IO[str] | None = None) -> list[Row]:
        """Every step in order (after :meth:`choose_scopes`); ``write_check`` adds the reserve and
        release."""
        self._listing("branches")
        services = self._listing("services")
        self._listing("service_groups")
        slots = self.timeslots(services)
        self.get_unknown()
        self.search_unknown()
        self.combination_timeslots(self.service_combinations())
        if write_check:
            self.write_check(slots, warn=warn)
        return self.rows

    def timeslots(self, services: list[Any]) -> tuple[str, str, list[Any]] | None:
        """Time slots of the first service at its own branch for the next ``days`` days."""
        pair = next(
            (
                (svc["branch"]["id"], svc["id"])
                for svc in services
                if isinstance(svc, dict)
                and isinstance(svc.get("id"), str)
                and isinstance(svc.get("branch"), dict)
                and isinstance(svc["branch"].get("id"), str)
            ),
            None,
        )
        if pair is None:
            row = self._row("timeslots")
            row.note = "not called: the services step gave no service with its branch id to ask for"
            return None
        branch_id, service_id = pair
        slots = self._slots(
            "timeslots", "of the first service", {"branch_id": branch_id, "service_id": service_id}
        )
        row = self.rows[-1]
        if row.status == 400:
            row.note += f" (the from/to query, {self.today.isoformat()} style dates, may be what differs)"
        return branch_id, service_id, slots

    def _slots(self, name: str, what: str, path_params: dict[str, str], **params: Any) -> list[Any]:
        """A time-slot listing of the next ``days`` days; a confirmed row says how many came."""
        last_day = self.today + timedelta(days=self.days - 1)
        params.update({"from": self.today.isoformat(), "to": last_day.isoformat()})
        slots = self._listing(name, path_params=path_params, params=params)
        if self.rows[-1].verdict == "confirmed":
            self.rows[-1].add(f"{len(slots)} slots {what} in {self.days} days")
        return slots

    def get_unknown(self) -> None:
        """A get of a random GUID: Part B answers 404 for an appointment that does not exist."""
        row = self._row("get")
        answer = self._ask(row, self.scopes, path_params={"appointment_id": str(uuid.uuid4())})
        if answer.error is None:
            self._judge_answer(row, answer, "get", many=False)
            row.verdict = "differs"
            row.note = f"a random id answered {_status_text(answer)}, not 404"
            if row.shape and row.shape.detail():
                row.add(f"shape: {row.shape.detail()}")
        elif answer.status == 404:
            row.verdict = "confirmed"
            row.note = "404 for a random id, as Part B says (a moved path would answer 404 too)"
        else:
            self._refused(row, answer, path_must_exist=False)

    def search_unknown(self) -> None:
        """A search for a random valid personal identifier: nothing can be found. Part B answers an
        empty list; a tenant may answer 404 or an empty object instead, and all mean "nothing"."""
        row = self._row("search")
        identifier = secrets.token_hex(16)  # 32 letters and digits: within Qmatic's 10 to 48
        answer = self._ask(row, self.scopes, json={"customer": {"personalIdentifier": identifier}})
        if answer.error is not None:
            if answer.status == 404:
                row.verdict = "confirmed"
                row.note = "nothing found, answered as 404 (tolerated; Part B expects an empty list)"
                return
            self._refused(row, answer, path_must_exist=False)
            return
        data = answer.data
        if data is None or data == [] or data == {}:
            row.verdict = "confirmed"
            row.shape = ShapeReport()
            how = {type(None): "no body", list: "an empty list", dict: "an empty object"}[type(data)]
            row.note = f"nothing found, answered as {how}"
            return
        self._judge_answer(row, answer, "search", many=True, single_allowed=True)
        found = row.shape.items if row.shape else 0
        row.add(f"{found} appointment(s) found for a random identifier (nothing of them printed)", first=True)

    def service_combinations(self) -> list[Any]:
        """The combinations of every branch: a read that also says whether the tenant has
        combinations switched on. Part B: a tenant without them refuses the call (the public page
        gives no code), so a 400 or 409 reads as "off"; a 404 may be "off" or a moved path."""
        row = self._row("service_combinations")
        answer = self._ask(row, self.scopes)
        if answer.error is None:
            self._judge_answer(row, answer, "service_combinations", many=True)
            data = answer.data if isinstance(answer.data, list) else []
            if row.verdict == "confirmed":
                self.combinations_on = True
                configured = sum(1 for b in data if isinstance(b, dict) and b.get("serviceCombinations"))
                row.add(f"combinations switched on; {configured} branch(es) configured", first=True)
            return data
        if answer.status in (400, 409):
            self.combinations_on = False
            row.verdict = "confirmed"
            row.note = (
                f"{_status_text(answer)}: service combinations are switched off for this tenant (Part B: "
                "such a tenant refuses the call; the status is a guess)"
            )
        elif answer.status == 404:
            row.note = (
                f"{_status_text(answer)}: combinations switched off, or the tenant serves this call "
                "elsewhere; if the tenant has combinations, "
                + _path_fix(self.operations[row.operation], OPERATIONS[row.operation])
            )
        else:
            self._refused(row, answer, path_must_exist=False)
        return []

    def combination_timeslots(self, combinations: list[Any]) -> None:
        """Time slots for the first two combinable services of the first configured branch."""
        if self.combinations_on is not True:
            self._row(
                "combination_timeslots"
            ).note = "not called: service combinations are not known to be switched on"
            return
        pick = next(
            (
                (branch["branchId"], ids[:2])
                for branch in combinations
                if isinstance(branch, dict) and isinstance(branch.get("branchId"), str)
                for combination in branch.get("serviceCombinations") or ()
                if isinstance(combination, dict)
                for ids in [[i for i in combination.get("combinableServices") or () if isinstance(i, str)]]
                if len(ids) >= 2
            ),
            None,
        )
        if pick is None:
            self._row("combination_timeslots").note = "not called: no branch lists two combinable services"
            return
        branch_id, service_ids = pick
        self._slots(
            "combination_timeslots",
            "for two combinable services",
            {"branch_id": branch_id},
            serviceId=service_ids,
            numberOfReservations=str(len(service_ids)),
        )

    def write_check(self, found: tuple[str, str, list[Any]] | None, *, warn: IO[str] | None) -> None:
        """Reserve one free slot of the timeslot step and release it at once; never confirm."""
        reserve = self._row("reserve")
        slot = _free_slot(found[2]) if found is not None else None
        release = self._row("release")
        if Scope.BOOK not in self.scopes and not self._book_granted():
            reserve.note = release.note = "not called: the client is not granted the book scope"
            return
        if found is None or slot is None:
            reserve.note = release.note = (
                "not called: the timeslot step found no free slot starting an hour or more from now"
            )
            return
        if warn is not None:
            print(f"WARNING: {_WRITE_WARNING}", file=warn, flush=True)
        branch_id, service_id, _ = found
        body = {
            "branchId": branch_id,
            "serviceId": service_id,
            "timeSlot": {"startTime": slot["startTime"], "endTime": slot["endTime"]},
            "numberOfReservations": 1,
        }
        answer = self._ask(reserve, BOOK_SCOPES, json=body)
        if answer.error is not None:
            release.note = "not called: nothing was reserved"
            if isinstance(answer.error, QmaticUnknownOutcomeError):
                self.hold_unknown = True
                reserve.note = (
                    f"{_status_text(answer)}: the answer was lost, so a reservation may be held for up to "
                    f"{HOLD_MINUTES} minutes without an id to release it (branch {branch_id}, service "
                    f"{service_id}, the first free slot from {self.today.isoformat()})"
                )
                release.note = "not called: no reservation id came back"
            elif answer.status == 409:
                reserve.note = f"{_status_text(answer)}: the slot was taken meanwhile; run the probe again"
            else:
                self._refused(reserve, answer, path_must_exist=True)
            return
        data = answer.data
        reservation_id = data.get("appointmentId") if isinstance(data, dict) else None
        if isinstance(reservation_id, str) and reservation_id:
            self.held_reservation = reservation_id
            self._release(release, reservation_id)
        else:
            self.hold_unknown = True
            release.note = "not called: the reserve answer carries no appointmentId to release"
        self._judge_answer(reserve, answer, "reserve", many=False)
        if answer.status is not None and answer.status != OPERATIONS["reserve"].success:
            reserve.add(f"answered {answer.status}, Part B says {OPERATIONS['reserve'].success}", first=True)
        if self.hold_unknown and not self.held_reservation:
            reserve.add(f"the reservation may stay held for up to {HOLD_MINUTES} minutes", first=True)

    def _book_granted(self) -> bool:
        try:
            self.client.tokens.token(BOOK_SCOPES)
        except QmaticError:
            return False
        return True

    def _release(self, row: Row, reservation_id: str) -> None:
        answer = self._ask(row, BOOK_SCOPES, path_params={"appointment_id": reservation_id})
        if answer.error is None:
            self.held_reservation = None
            row.verdict = "confirmed"
            row.note = "released at once"
            if answer.status is not None and answer.status != OPERATIONS["release"].success:
                row.add(f"answered {answer.status}, Part B says {OPERATIONS['release'].success}")
            return
        self._refused(row, answer, path_must_exist=True)
        row.note = f"RELEASE FAILED, reservation {reservation_id} is held: {row.note}"

    # -- results -------------------------------------------------------------------------------

    @property
    def exit_code(self) -> int:
        held = self.held_reservation is not None or self.hold_unknown
        return EXIT_DIFFERS if held or any(r.verdict == "differs" for r in self.rows) else EXIT_OK


# -- output ----------------------------------------------------------------------------------------


def render_table(rows: Sequence[Row]) -> str:
    """The rows as a fixed-width table, then each row's note and fix."""
    header = ("operation", "method", "path used", "status", "shape", "source", "verdict")
    cells = [
        (
            r.operation,
            r.method,
            r.path,
            str(r.status) if r.status is not None else "-",
            r.shape.summary if r.shape is not None else "-",
            r.source_label,
            r.verdict,
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in (header, *cells)) for i in range(len(header))]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in (header, *cells)
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {r.operation}: {r.note}" for r in rows if r.note]
    if notes:
        lines += ["", "Notes:", *notes]
    fixes = [f"  {r.operation}: {r.fix}" for r in rows if r.fix]
    if fixes:
        lines += [
            "",
            "To fix a moved path (see docs: First hour with a real tenant):",
            *fixes,
            "  The `endpoints` extra is a JSON object of operation name to path template, e.g.",
            '  "endpoints": {"services": "/services"} inside the connection\'s Extra (or the Endpoints',
            '  field of the connection form; inside "extra" of an AIRFLOW_CONN_* JSON). Placeholders',
            "  stay as in the default path. Then run qmatic-probe again.",
        ]
    return "\n".join(lines)


def _report(probe: Probe, conn_id: str, write_check: bool) -> dict[str, Any]:
    config = probe.client.config
    return {
        "probe": "qmatic-probe",
        "version": __version__,
        "connection": conn_id,
        "base_url": config.base_url,
        "tenant": config.tenant,
        "days": probe.days,
        "write_check": write_check,
        "rows": [row.as_dict() for row in probe.rows],
        "requests": {"api": probe.client.api_requests, "token": probe.client.token_requests},
        "service_combinations": probe.combinations_on,
        "held_reservation_id": probe.held_reservation,
        "reservation_may_be_held": probe.hold_unknown or probe.held_reservation is not None,
        "exit_code": probe.exit_code,
    }


def _loud_hold(probe: Probe, conn_id: str, err: IO[str]) -> None:
    if probe.held_reservation is not None:
        rid = probe.held_reservation
        op = probe.operations["release"]
        print(
            "\n!!! THE RELEASE FAILED: reservation "
            f"{rid} stays held for up to {HOLD_MINUTES} minutes.\n"
            f"!!! Release it now: {op.method} {op.path.format(appointment_id=rid)}, e.g.\n"
            '!!!   python -c "from airflow_provider_qmatic.hooks.qmatic import QmaticHook; '
            f"QmaticHook('{conn_id}').client.release_reservation('{rid}')\"\n"
            "!!! or let it expire.",
            file=err,
            flush=True,
        )
    elif probe.hold_unknown:
        print(
            f"\n!!! A reservation may be held for up to {HOLD_MINUTES} minutes and no id came back to "
            "release it (see the reserve row); it expires by itself.",
            file=err,
            flush=True,
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qmatic-probe",
        description=(
            "Check which of the contract's guesses your Qmatic tenant confirms: each read-only "
            "operation once, through the Airflow connection, within the tenant's request budget."
        ),
    )
    parser.add_argument(
        "--conn-id", default=DEFAULT_CONN_ID, help="the Airflow connection (default %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    parser.add_argument(
        "--days", type=_days, default=DEFAULT_DAYS, help=f"days of time slots to ask for, 1 to {MAX_DAYS}"
    )
    parser.add_argument(
        "--write-check",
        action="store_true",
        help=f"also reserve one free slot and release it at once (a {HOLD_MINUTES}-minute hold if the "
        "release fails; never confirms)",
    )
    return parser


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--days must be a whole number, got {text[:20]!r}") from None
    if not 1 <= value <= MAX_DAYS:
        raise argparse.ArgumentTypeError(f"--days must be from 1 to {MAX_DAYS}, got {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """The ``qmatic-probe`` command. Everything but the result goes to stderr, so ``--json`` output
    is one JSON document on stdout even when Airflow logs to stdout."""
    args = _parser().parse_args(argv)
    out, err = sys.stdout, sys.stderr
    with contextlib.redirect_stdout(err):
        probe = _run(args, err)
        if probe is None:
            return EXIT_USAGE
        _loud_hold(probe, args.conn_id, err)
    if args.json:
        print(json.dumps(_report(probe, args.conn_id, args.write_check), indent=2), file=out)
        return probe.exit_code
    client = probe.client
    print(
        f"qmatic-probe {__version__}: connection {args.conn_id}, {client.config.base_url}, "
        f"tenant {client.config.tenant}\n",
        file=out,
    )
    print(render_table(probe.rows), file=out)
    print(f"\nService combinations: {_COMBINATIONS_SAID[probe.combinations_on]}", file=out)
    verdict = (
        "Nothing contradicts the contract."
        if probe.exit_code == EXIT_OK
        else "Exit status 1: something differs, see the notes."
    )
    print(
        f"\n{client.api_requests} API requests, {client.token_requests} token request(s). {verdict}", file=out
    )
    return probe.exit_code


def _run(args: argparse.Namespace, err: IO[str]) -> Probe | None:
    """Read the connection through the hook and run the probe; None (after saying why on ``err``)
    when the connection is unusable: missing, invalid, or refused by Qmatic."""
    from airflow.exceptions import AirflowNotFoundException

    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    conn = f"qmatic-probe: connection {args.conn_id!r}"
    try:
        probe = Probe(QmaticHook(qmatic_conn_id=args.conn_id).get_conn(), days=args.days)
    except AirflowNotFoundException:
        print(
            f"{conn} not found: create it (the UI, `airflow connections add`, or the variable "
            f"AIRFLOW_CONN_{args.conn_id.upper()}) or pass --conn-id",
            file=err,
        )
        return None
    except QmaticConfigError as exc:
        print(f"{conn}: {exc}", file=err)
        return None
    try:
        probe.choose_scopes()
    except QmaticError as exc:
        print(f"{conn}: no token: {exc}. Check it with `airflow connections test {args.conn_id}`", file=err)
        return None
    try:
        probe.run(write_check=args.write_check, warn=err)
    except (QmaticConfigError, QmaticAuthError, QmaticForbiddenError) as exc:
        print(f"{conn} is refused: {exc}. Check it with `airflow connections test {args.conn_id}`", file=err)
        return None
    return probe
