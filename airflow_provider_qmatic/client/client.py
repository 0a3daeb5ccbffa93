"""QmaticClient: the Qmatic Cloud Appointments API as plain Python methods.

No Airflow import lives here, so the client serves the hook, the bulk runner's threads, the
benchmarks and users' own scripts alike. One ``requests.Session`` carries every call (connection
pooling, TLS verification always on); tokens come from a :class:`TokenProvider`; an optional
:class:`RateLimiter` paces every request, token requests included; every retry decision is
:func:`airflow_provider_qmatic.client.retry.is_retryable`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import requests

from airflow_provider_qmatic import state
from airflow_provider_qmatic.api import contract
from airflow_provider_qmatic.api.contract import (
    BOOK_SCOPES,
    CANCEL_SCOPES,
    RESCHEDULE_SCOPES,
    Operation,
    Scope,
)
from airflow_provider_qmatic.client import transport
from airflow_provider_qmatic.client.auth import SecretSink, TokenProvider
from airflow_provider_qmatic.client.responses import error_from_response, json_body
from airflow_provider_qmatic.client.retry import NOT_PROCESSED_STATUSES, retrying
from airflow_provider_qmatic.exceptions import (
    QmaticConfigError,
    QmaticConflictError,
    QmaticError,
    QmaticNotFoundError,
    QmaticNotSentError,
    QmaticRateLimitError,
    QmaticServerError,
    QmaticUnknownOutcomeError,
    TokenRequestFailed,
)
from airflow_provider_qmatic.metrics import MetricSink, count_responses
from airflow_provider_qmatic.state.tokens import TokenCache

if TYPE_CHECKING:
    from datetime import date

    from airflow_provider_qmatic.api.models import (
        Appointment,
        Branch,
        BranchCombinations,
        Service,
        ServiceGroup,
        Slot,
    )
    from airflow_provider_qmatic.config import ClientConfig
    from airflow_provider_qmatic.state.budget import RateLimiter

log = logging.getLogger(__name__)

# Query parameters: a list value is sent as the name repeated (``serviceId=a&serviceId=b``).
Params = Mapping[str, "str | list[str]"]

DEFAULT_ATTEMPTS = 6
# Connections kept per host: two per bulk worker thread at the most (32 threads).
POOL_SIZE = 64


def build_client(
    config: ClientConfig,
    *,
    on_secret: SecretSink | None = None,
    limiter: RateLimiter | None = None,
    **kwargs: Any,
) -> QmaticClient:
    """The one way the provider builds a client: the connection's token cache, the tenant's shared
    request budget (:func:`~airflow_provider_qmatic.state.request_budget`), and a pool big enough
    for the bulk runner's threads.

    The hook builds its client here; scripts and ``@task`` code without a hook do the same.
    """
    kwargs.setdefault("pool_size", POOL_SIZE)
    return QmaticClient(
        config,
        limiter=limiter if limiter is not None else state.request_budget(config),
        on_secret=on_secret,
        **kwargs,
    )


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached the server (connection refused, connect timeout)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        text = repr(exc.args[0]) if exc.args else ""
        return "NewConnectionError" in text or "NameResolutionError" in text
    return False


class QmaticClient:
    """Typed access to every operation of the contract (the flows composed of them: ``flows.py``).

    :param config: validated settings (see :class:`~airflow_provider_qmatic.config.ClientConfig`).
    :param limiter: paces requests; the bulk runner shares one between its threads.
    :param on_secret: called with every secret the moment it exists (the hook passes Airflow's
        ``mask_secret``), so logs never show it.
    :param on_metric: called with ``(name, count)`` for every answer received (API or token
        request, 429s); the hook passes Airflow's ``Stats`` (see ``metrics.py``).
    """

    def __init__(
        self,
        config: ClientConfig,
        *,
        session: requests.Session | None = None,
        token_cache: TokenCache | None = None,
        limiter: RateLimiter | None = None,
        on_secret: SecretSink | None = None,
        on_metric: MetricSink | None = None,
        max_attempts: int = DEFAULT_ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
        pool_size: int = 16,
    ) -> None:
        self.config = config
        # The contract table with the deployment's corrected paths (already checked in config).
        self.operations = contract.resolve(config.endpoints)
        self.limiter = limiter
        self._sleep = sleep
        self._max_attempts = max(1, max_attempts)
        # Built once, reused by every call and thread (tenacity keeps each run's state per thread):
        # building the retry machinery per call cost more CPU than the rest of the client.
        self._retrying = {
            idempotent: retrying(
                what="API call", idempotent=idempotent, attempts=self._max_attempts, sleep=sleep
            )
            for idempotent in (True, False)
        }
        self.session = session or requests.Session()
        transport.prepare_session(self.session, pool_size=pool_size)
        self.session.headers["User-Agent"] = config.user_agent
        if on_metric is not None:
            count_responses(self.session, on_metric)
        if token_cache is None:
            token_cache = state.token_cache(config)
        self.tokens = TokenProvider(
            config, self.session, cache=token_cache, limiter=limiter, on_secret=on_secret, sleep=sleep
        )
        self._counts_lock = threading.Lock()
        self.request_counts: Counter[str] = Counter()
        self._reads_only = False

    def __repr__(self) -> str:
        return f"QmaticClient(tenant={self.config.tenant!r}, base_url={self.config.base_url!r})"

    # -- counters ------------------------------------------------------------------------------

    @property
    def api_requests(self) -> int:
        """API requests this client sent (every attempt that left this machine counts; token requests
        and attempts that could not connect do not)."""
        return sum(self.request_counts.values())

    @property
    def token_requests(self) -> int:
        """Token requests this client sent itself (tokens found in a shared cache cost none)."""
        return self.tokens.token_requests

    @contextlib.contextmanager
    def reads_only(self) -> Iterator[QmaticClient]:
        """Refuse every operation that writes (the contract's ``writes``: reserve, release, confirm,
        reschedule, cancel, update customer) while inside, before its request is sent.

        A bulk dry run runs inside it: its promise to change nothing in Qmatic is kept where every
        request passes, not only by the code that plans the rows. A refused write is a
        :class:`QmaticConfigError`, which stops a bulk run.
        """
        before, self._reads_only = self._reads_only, True
        try:
            yield self
        finally:
            self._reads_only = before

    # -- the request core ----------------------------------------------------------------------

    def call(
        self,
        operation: str,
        scopes: frozenset[Scope],
        *,
        path_params: Mapping[str, str] | None = None,
        json: Any = None,
        params: Params | None = None,
    ) -> Any:
        """Send one operation of :mod:`~airflow_provider_qmatic.api.contract` with retries; the decoded
        JSON body, or None for 204.

        ``scopes`` are used if the contract lets a token with them call the operation; otherwise
        the operation's own scope is, so a token the endpoint would refuse is never sent.
        """
        op = self.operations[operation]
        if op.writes and self._reads_only:
            raise QmaticConfigError(
                f"Qmatic {op.name} not sent: this client reads only (a dry run sends no write)",
                field="dry_run",
            )
        if not self.config.system_id:
            raise QmaticConfigError(
                "system_id is missing: API calls send it as X-TENANT-ID; set the `system_id` extra "
                "of the connection to the tenant's system id",
                field="system_id",
            )
        scopes = op.token_scopes(scopes)
        path = op.path.format(**{k: _path_segment(k, v) for k, v in (path_params or {}).items()})
        unclear = False  # an attempt was sent and got no clear answer: it may have taken effect
        try:
            for attempt in self._retrying[op.idempotent]:
                with attempt:
                    try:
                        return self._attempt(op, scopes, path, json=json, params=params)
                    except QmaticServerError as exc:
                        unclear = unclear or not (
                            isinstance(exc, QmaticNotSentError) or exc.status in NOT_PROCESSED_STATUSES
                        )
                        raise
        except TokenRequestFailed as failure:
            # The token provider has already waited and retried as the token endpoint allows;
            # repeating that here would multiply the attempts.
            failure.error.after_unclear_attempt = unclear
            raise failure.error from None
        except (QmaticConflictError, QmaticNotFoundError, QmaticNotSentError) as exc:
            exc.after_unclear_attempt = unclear
            raise
        raise AssertionError("unreachable: tenacity returns or re-raises")  # pragma: no cover

    def _attempt(
        self,
        op: Operation,
        scopes: frozenset[Scope],
        path: str,
        *,
        json: Any,
        params: Params | None,
    ) -> Any:
        """One try: send, and turn the answer into data or the matching QmaticError."""
        response = self._send_authorised(op, scopes, path, json=json, params=params)
        if 200 <= response.status_code < 300:
            if self.limiter is not None:
                self.limiter.on_success()
            if response.status_code == 204:
                return None
            return json_body(response, operation=f"the {op.name} request")
        error = error_from_response(
            response, operation=f"the {op.name} request", idempotent=op.idempotent, redact=self.tokens.redact
        )
        if isinstance(error, QmaticRateLimitError) and self.limiter is not None:
            self.limiter.on_rate_limited(error.retry_after)
        raise error

    def _send_authorised(
        self,
        op: Operation,
        scopes: frozenset[Scope],
        path: str,
        *,
        json: Any,
        params: Params | None,
    ) -> requests.Response:
        """Send with a bearer token; on 401 drop the token, get one new token, and repeat once."""
        token = self._token(scopes)
        response = self._send(op, path, token, json=json, params=params)
        if response.status_code != 401:
            return response
        self.tokens.invalidate(scopes, token)
        token = self._token(scopes)
        response = self._send(op, path, token, json=json, params=params)
        if response.status_code == 401:
            raise self.tokens.auth_failure(scopes)
        return response

    def _token(self, scopes: frozenset[Scope]) -> str:
        try:
            return self.tokens.token(scopes)
        except QmaticError as exc:
            raise TokenRequestFailed(exc) from None

    def _send(
        self, op: Operation, path: str, token: str, *, json: Any, params: Params | None
    ) -> requests.Response:
        if self.limiter is not None:
            self.limiter.acquire()
        headers = {
            "Authorization": f"Bearer {token}",
            "X-TENANT-ID": str(self.config.system_id),
            "Accept": "application/json",
        }
        if op.localised:
            headers["Accept-Language"] = self.config.language
        url = self.config.base_url + path
        try:
            response = transport.send(
                self.session,
                op.method,
                url,
                what=op.name,
                timeout=self.config.timeout,
                headers=headers,
                json=json,
                params=params,
            )
        except requests.RequestException as exc:
            kind = transport.failure_kind(exc)
            if _never_sent(exc) and not transport.answer_too_large(exc):
                raise QmaticNotSentError(f"Qmatic {op.name} could not be sent: {kind}") from None
            self._count(op)
            if op.idempotent:
                raise QmaticServerError(f"Qmatic {op.name} failed before an answer came: {kind}") from None
            raise QmaticUnknownOutcomeError(
                f"Qmatic {op.name} got no answer ({kind}); the request may or may not have taken effect"
            ) from None
        self._count(op)
        return response

    def _count(self, op: Operation) -> None:
        """Count a request that reached the server (answered or not); one never sent is not counted."""
        with self._counts_lock:
            self.request_counts[op.name] += 1

    # -- one method per operation --------------------------------------------------------------

    def list_branches(self, *, scopes: frozenset[Scope] = BOOK_SCOPES) -> list[Branch]:
        """Every branch of the tenant."""
        from airflow_provider_qmatic.api.models import Branch

        return Branch.parse_list(self.call("branches", scopes))

    def list_services(
        self, branch_id: str | None = None, *, scopes: frozenset[Scope] = BOOK_SCOPES
    ) -> list[Service]:
        """The tenant's active services (Part B: one tenant-wide list, one item per service and
        branch), only those of ``branch_id`` when given (filtered here by ``branch.id``)."""
        from airflow_provider_qmatic.api.models import Service

        services = Service.parse_list(self.call("services", scopes))
        if branch_id is None:
            return services
        return [s for s in services if s.branch is not None and s.branch.id == branch_id]

    def list_service_groups(self, *, scopes: frozenset[Scope] = BOOK_SCOPES) -> list[ServiceGroup]:
        """The tenant's service groups (a guessed path: no public page shows it or its answer)."""
        from airflow_provider_qmatic.api.models import ServiceGroup

        return ServiceGroup.parse_list(self.call("service_groups", scopes))

    def find_timeslots(
        self,
        branch_id: str,
        service_id: str,
        date_from: date,
        date_to: date,
        *,
        scopes: frozenset[Scope] = BOOK_SCOPES,
    ) -> list[Slot]:
        """Time slots of a service at a branch between two dates (inclusive)."""
        from airflow_provider_qmatic.api.models import Slot

        data = self.call(
            "timeslots",
            scopes,
            path_params={"branch_id": branch_id, "service_id": service_id},
            params={"from": date_from.isoformat(), "to": date_to.isoformat()},
        )
        return Slot.parse_list(data)

    def list_service_combinations(
        self, branch_id: str | None = None, *, scopes: frozenset[Scope] = BOOK_SCOPES
    ) -> list[BranchCombinations]:
        """Which services may share one appointment, per branch (``branch_id`` given: that branch's
        item only, filtered here, since no public page shows a one-branch call). An empty list
        means no branch is configured; a tenant without combinations refuses the call."""
        from airflow_provider_qmatic.api.models import BranchCombinations

        found = BranchCombinations.parse_list(self.call("service_combinations", scopes))
        if branch_id is None:
            return found
        return [b for b in found if b.branch_id == branch_id]

    def find_combination_timeslots(
        self,
        branch_id: str,
        service_ids: Sequence[str],
        date_from: date,
        date_to: date,
        *,
        number_of_reservations: int = 1,
        resource_id: str | None = None,
        scopes: frozenset[Scope] = BOOK_SCOPES,
    ) -> list[Slot]:
        """Time slots long enough for all of ``service_ids`` in one appointment at a branch, between
        two dates (inclusive).

        ``number_of_reservations`` is per service (the people to serve); Qmatic's page asks for the
        sum over the services, so ``number_of_reservations * len(service_ids)`` is sent.
        """
        from airflow_provider_qmatic.api.models import Slot

        ids = combination_service_ids(service_ids)
        if (
            isinstance(number_of_reservations, bool)
            or not isinstance(number_of_reservations, int)
            or (number_of_reservations < 1)
        ):
            raise QmaticConfigError(
                "number_of_reservations must be a whole number of at least 1 (people per service)",
                field="number_of_reservations",
            )
        params: dict[str, str | list[str]] = {
            "serviceId": ids,
            "numberOfReservations": str(number_of_reservations * len(ids)),
            "from": date_from.isoformat(),
            "to": date_to.isoformat(),
        }
        if resource_id:
            params["requestedResourceId"] = resource_id
        data = self.call("combination_timeslots", scopes, path_params={"branch_id": branch_id}, params=params)
        return Slot.parse_list(data)

    def reserve(
        self, body: Mapping[str, Any], *, scopes: frozenset[Scope] = BOOK_SCOPES, combination: bool = False
    ) -> Appointment:
        """Hold a slot for 15 minutes (``body`` as :meth:`BookingRequest.reservation_body`).

        Not idempotent: a lost answer raises QmaticUnknownOutcomeError and is never repeated here.
        ``combination``: this and the methods below send the ``/serviceCombination/`` twin of
        their call (an appointment of several services; release, cancel and update are shared).
        """
        from airflow_provider_qmatic.api.models import Appointment

        return Appointment.parse(self.call(_kind("reserve", combination), scopes, json=dict(body)))

    def release_reservation(self, appointment_id: str, *, scopes: frozenset[Scope] = BOOK_SCOPES) -> None:
        """Free a reservation that will not be confirmed."""
        self.call("release", scopes, path_params={"appointment_id": appointment_id})

    def confirm(
        self,
        appointment_id: str,
        body: Mapping[str, Any],
        *,
        scopes: frozenset[Scope] = BOOK_SCOPES,
        combination: bool = False,
    ) -> Appointment:
        """Confirm a reservation with the customer (``body`` as :meth:`BookingRequest.confirmation_body`)."""
        from airflow_provider_qmatic.api.models import Appointment

        data = self.call(
            _kind("confirm", combination),
            scopes,
            path_params={"appointment_id": appointment_id},
            json=dict(body),
        )
        return Appointment.parse(data)

    def get_appointment(
        self, appointment_id: str, *, scopes: frozenset[Scope] = BOOK_SCOPES, combination: bool = False
    ) -> Appointment:
        """One appointment (or reservation) by id."""
        from airflow_provider_qmatic.api.models import Appointment

        data = self.call(_kind("get", combination), scopes, path_params={"appointment_id": appointment_id})
        return Appointment.parse(data)

    def search_appointments(
        self, personal_identifier: str, *, scopes: frozenset[Scope] = BOOK_SCOPES, combination: bool = False
    ) -> list[Appointment]:
        """A customer's appointments, found by their personal identifier."""
        from airflow_provider_qmatic.api.models import Appointment

        body = {"customer": {"personalIdentifier": personal_identifier}}
        data = self.call(_kind("search", combination), scopes, json=body)
        return Appointment.parse_list(data, one_object_ok=True)

    def reschedule(
        self,
        appointment_id: str,
        reservation_id: str,
        *,
        scopes: frozenset[Scope] = RESCHEDULE_SCOPES,
        combination: bool = False,
    ) -> Appointment:
        """Move a confirmed appointment onto a reservation's slot (the reservation is consumed)."""
        from airflow_provider_qmatic.api.models import Appointment

        data = self.call(
            _kind("reschedule", combination),
            scopes,
            path_params={"appointment_id": appointment_id},
            json={"reservationId": reservation_id},
        )
        return Appointment.parse(data)

    def update_customer(
        self, appointment_id: str, body: Mapping[str, Any], *, scopes: frozenset[Scope] = BOOK_SCOPES
    ) -> None:
        """Replace the customer details of an appointment (``body`` as
        :meth:`CustomerUpdate.to_wire`); 204, so nothing comes back. A PUT: repeated after a lost
        answer, it sets the same details again."""
        self.call("update_customer", scopes, path_params={"appointment_id": appointment_id}, json=dict(body))

    def cancel(self, appointment_id: str, *, scopes: frozenset[Scope] = CANCEL_SCOPES) -> None:
        """Cancel a confirmed appointment (raises QmaticConflictError if it is not cancellable)."""
        self.call("cancel", scopes, path_params={"appointment_id": appointment_id})

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()

    def __enter__(self) -> QmaticClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def combination_service_ids(service_ids: Sequence[str]) -> list[str]:
    """The service ids of one combined appointment, checked before any request: two or more,
    distinct, each a usable id."""
    if isinstance(service_ids, str) or not isinstance(service_ids, Sequence):
        raise QmaticConfigError(
            'service_ids must be a list of two or more service ids, e.g. ["<id>", "<id>"]',
            field="service_ids",
        )
    ids = [_path_segment("service_ids", value) for value in service_ids]
    if len(ids) < 2 or len(set(ids)) != len(ids):
        raise QmaticConfigError(
            f"service_ids must name two or more different services, got {len(ids)} id(s) with "
            f"{len(ids) - len(set(ids))} repeated; for one service use find_timeslots",
            field="service_ids",
        )
    return ids


def _kind(operation: str, combination: bool) -> str:
    """The contract row of ``operation``, or of its ``/serviceCombination/`` twin."""
    return f"combination_{operation}" if combination else operation


def _path_segment(name: str, value: str) -> str:
    """Ids go into paths; refuse anything that would change the path instead of naming a resource."""
    text = str(value).strip()
    if not text or any(ch in text for ch in "/?#%\\") or text in (".", "..") or not text.isprintable():
        raise QmaticConfigError(
            f"{name} {text[:60]!r} is not a valid id: ids are GUIDs such as "
            "3fa85f64-5717-4562-b3fc-2c963f66afa6",
            field=name,
        )
    return text
