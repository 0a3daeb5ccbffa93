"""The FastAPI app: Part B's endpoints and the ``/_sandbox/`` introspection endpoints.

Handlers are thin: check the bearer token (401/403), parse the body (400), call the store (404,
409) and shape the answer. Bodies are parsed by :mod:`validation`, not by FastAPI models, so that
error messages follow the contract. The gateway concerns (413, 429, faults, counting) live in
:mod:`middleware`, which :class:`SandboxAPI` puts outside every framework layer.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from datetime import date, timedelta
from enum import Enum
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from airflow_provider_qmatic import __version__
from airflow_provider_qmatic.api.contract import Operation
from airflow_provider_qmatic.sandbox import validation
from airflow_provider_qmatic.sandbox.auth import authenticate_bearer, issue_token
from airflow_provider_qmatic.sandbox.errors import SandboxError, bad_request
from airflow_provider_qmatic.sandbox.middleware import SandboxMiddleware
from airflow_provider_qmatic.sandbox.records import STATUSES, Token
from airflow_provider_qmatic.sandbox.runtime import Sandbox
from airflow_provider_qmatic.sandbox.settings import SandboxSettings

# A query without ``to`` lists this many days from ``from``.
_DEFAULT_SPAN_DAYS = 7


class SandboxAPI(FastAPI):
    """FastAPI with the sandbox's gateway middleware as the OUTERMOST layer.

    ``add_middleware`` would put it inside Starlette's error middleware, whose ``send`` wrapper
    hides the server's connection, which dropping a connection needs.
    """

    sandbox: Sandbox
    allowed_hosts: frozenset[str] = frozenset()

    def build_middleware_stack(self) -> ASGIApp:
        return SandboxMiddleware(super().build_middleware_stack(), self.sandbox, self.allowed_hosts)  # type: ignore[arg-type]


def create_app(
    settings: SandboxSettings | None = None,
    *,
    sandbox: Sandbox | None = None,
    allowed_hosts: Iterable[str] = (),
) -> FastAPI:
    """A new sandbox app with its own state (from ``settings``, or an existing ``sandbox``).

    It answers requests for loopback names only, and for ``allowed_hosts`` (see :mod:`middleware`).
    """
    sb = sandbox or Sandbox(settings)
    app = SandboxAPI(
        title="Qmatic Cloud Appointments sandbox",
        version=__version__,
        description="Local emulator of the Qmatic Cloud Appointments API (airflow-provider-qmatic).",
        docs_url="/_sandbox/docs",
        redoc_url=None,
        openapi_url="/_sandbox/openapi.json",
    )
    app.sandbox = sb
    app.allowed_hosts = frozenset(allowed_hosts)
    app.state.sandbox = sb
    _add_error_handlers(app, sb)
    _add_api_routes(app, sb)
    _add_admin_routes(app, sb)
    return app


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(content, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI, sb: Sandbox) -> None:
    async def sandbox_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, SandboxError)
        return _json(exc.body(), exc.status, exc.headers or None)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        # A moved operation's old path is gone, even where another method still answers there.
        vacated = exc.status_code == 405 and sb.routes.vacated(request.method, request.url.path)
        if exc.status_code == 404 or vacated:
            return _json({"error": "not_found", "message": "no such endpoint"}, 404)
        if exc.status_code == 405:
            return _json({"error": "method_not_allowed", "message": "method not allowed here"}, 405)
        return _json({"error": "http_error", "message": str(exc.detail)}, exc.status_code)

    app.add_exception_handler(SandboxError, sandbox_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


def _add_api_routes(app: FastAPI, sb: Sandbox) -> None:
    """One route per row of the sandbox's table (the contract's, with any moved paths): its method,
    path and success status come from the row, and a bearer token passes only with one of the
    row's scopes."""

    async def body_object(request: Request) -> dict[str, Any]:
        return validation.json_object(await request.body())

    async def token(request: Request) -> Response:
        answer = issue_token(sb.settings, sb.store, request.headers, await request.body())
        return _json(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def branches(request: Request, _token: Token) -> Any:
        return sb.store.branches()

    async def services(request: Request, token: Token) -> Any:
        return sb.store.services(token.tenant)

    async def service_groups(request: Request, token: Token) -> Any:
        return sb.store.service_groups(token.tenant)

    def date_range(request: Request, branch_id: str) -> tuple[date, date]:
        """``from`` (default: today at the branch) and ``to`` (default: a week on) of a slot query."""
        query = request.query_params
        branch = next((b for b in sb.store.seed.branches if b.id == branch_id), None)
        today = sb.clock.now().astimezone(ZoneInfo(branch.time_zone)).date() if branch else date.today()
        first = validation.parse_date("from", query["from"]) if query.get("from") else today
        last = (
            validation.parse_date("to", query["to"])
            if query.get("to")
            else first + timedelta(days=_DEFAULT_SPAN_DAYS - 1)
        )
        if last < first:
            raise bad_request("to", "must not be before from")
        return first, last

    async def timeslots(request: Request, token: Token) -> Any:
        branch_id, service_id = request.path_params["branch_id"], request.path_params["service_id"]
        number = validation.parse_timeslot_filters(request.query_params)
        first, last = date_range(request, branch_id)
        return sb.store.timeslots(token.tenant, branch_id, service_id, first, last, number)

    async def service_combinations(request: Request, token: Token) -> Any:
        return sb.store.service_combinations(token.tenant)

    async def combination_timeslots(request: Request, token: Token) -> Any:
        branch_id = request.path_params["branch_id"]
        service_ids = validation.parse_service_ids(request.query_params.getlist("serviceId"))
        number = validation.parse_timeslot_filters(request.query_params)
        first, last = date_range(request, branch_id)
        return sb.store.combination_timeslots(token.tenant, branch_id, service_ids, first, last, number)

    async def reserve(request: Request, token: Token, *, combination: bool = False) -> Any:
        req = validation.parse_reserve(await body_object(request), combination=combination)
        return sb.store.reserve(
            tenant=token.tenant,
            client_id=token.client_id,
            branch_id=req.branch_id,
            service_ids=req.service_ids,
            start=req.start,
            end=req.end,
            number=req.number,
            notes=req.notes,
            resource_id=req.resource_id,
            combination=combination,
        )

    async def release(request: Request, token: Token) -> Any:
        sb.store.release(token.tenant, request.path_params["appointment_id"])

    async def confirm(request: Request, token: Token) -> Any:
        customer, questions = validation.parse_confirm(await body_object(request))
        # Refused before the store is touched: the reservation stays held for the client to release.
        validation.require_tenant_fields(sb.settings.tenant(token.tenant), customer, questions)
        return sb.store.confirm(token.tenant, request.path_params["appointment_id"], customer, questions)

    async def update_customer(request: Request, token: Token) -> Any:
        customer = validation.parse_update_customer(await body_object(request))
        validation.require_tenant_fields(sb.settings.tenant(token.tenant), customer, None, prefix="")
        sb.store.update_customer(token.tenant, request.path_params["appointment_id"], customer)

    async def get(request: Request, token: Token) -> Any:
        return sb.store.get(token.tenant, request.path_params["appointment_id"])

    async def search(request: Request, token: Token) -> Any:
        personal_identifier = validation.parse_search(await body_object(request))
        found = sb.store.search(token.tenant, personal_identifier)
        # The public example answers one object; "object" mode does so when exactly one matches.
        return found[0] if len(found) == 1 and sb.settings.search_answer == "object" else found

    async def reschedule(request: Request, token: Token) -> Any:
        reservation_id = validation.parse_reschedule(await body_object(request))
        return sb.store.reschedule(token.tenant, request.path_params["appointment_id"], reservation_id)

    async def cancel(request: Request, token: Token) -> Any:
        sb.store.cancel(token.tenant, request.path_params["appointment_id"])

    def combined(
        handler: Callable[[Request, Token], Awaitable[Any]],
    ) -> Callable[[Request, Token], Awaitable[Any]]:
        """The ``/serviceCombination/`` twin of a single-service call: refused while the tenant has
        combinations switched off, else the same handler (a reserve reads ``serviceIds``). The
        appointments it reads and writes are shared: get and search find both kinds."""

        async def answer(request: Request, token: Token) -> Any:
            sb.store.combinations_on(token.tenant)
            if handler is reserve:
                return await reserve(request, token, combination=True)
            return await handler(request, token)

        return answer

    handlers: dict[str, Callable[[Request, Token], Awaitable[Any]]] = {
        "branches": branches,
        "services": services,
        "service_groups": service_groups,
        "timeslots": timeslots,
        "reserve": reserve,
        "release": release,
        "confirm": confirm,
        "get": get,
        "search": search,
        "reschedule": reschedule,
        "cancel": cancel,
        "update_customer": update_customer,
        "service_combinations": service_combinations,
        "combination_timeslots": combination_timeslots,
        "combination_search": combined(search),
        "combination_reserve": combined(reserve),
        "combination_confirm": combined(confirm),
        "combination_get": combined(get),
        "combination_reschedule": combined(reschedule),
    }

    def endpoint(op: Operation, handler: Callable[[Request, Token], Awaitable[Any]]) -> Callable[..., Any]:
        async def answer(request: Request) -> Response:
            headers = request.headers
            caller = authenticate_bearer(
                sb.store, sb.clock, headers.get("authorization"), headers.get("x-tenant-id"), op
            )
            content = await handler(request, caller)
            return Response(status_code=op.success) if op.success == 204 else _json(content, op.success)

        return answer

    token_op = sb.routes.operations["token"]
    app.add_api_route(token_op.path, token, methods=[token_op.method], tags=["oauth2"])
    for op in sb.routes.api_operations:
        app.add_api_route(
            op.path, endpoint(op, handlers[op.name]), methods=[op.method], name=op.name, tags=["api"]
        )


def _int_query(request: Request, name: str, default: int, low: int = 0) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(name, "must be an integer") from None
    if value < low:
        raise bad_request(name, f"must be at least {low}")
    return value


def _add_admin_routes(app: FastAPI, sb: Sandbox) -> None:
    admin: list[str | Enum] = ["sandbox introspection"]

    async def optional_object(request: Request) -> dict[str, Any]:
        body = await request.body()
        return validation.json_object(body) if body.strip() else {}

    @app.get("/_sandbox/health", tags=admin)
    async def health() -> Response:
        return _json({"status": "ok"})

    @app.get("/_sandbox/stats", tags=admin)
    async def stats() -> Response:
        data = sb.stats.snapshot()
        data["appointments"] = sb.store.counts()
        data["tokens_issued"] = len(sb.store.tokens())
        data["clock_offset"] = sb.clock.offset
        return _json(data)

    @app.get("/_sandbox/tokens", tags=admin)
    async def tokens() -> Response:
        return _json(sb.store.tokens())

    @app.get("/_sandbox/appointments", tags=admin)
    async def appointments(request: Request) -> Response:
        status = request.query_params.get("status") or None
        if status is not None and status not in STATUSES:
            raise bad_request("status", f"must be one of {', '.join(STATUSES)}")
        return _json(sb.store.appointments(status=status, tenant=request.query_params.get("tenant") or None))

    @app.post("/_sandbox/appointments/{appointment_id}/finalize", tags=admin)
    async def finalize(appointment_id: str) -> Response:
        return _json(sb.store.finalize(appointment_id))

    @app.get("/_sandbox/seed", tags=admin)
    async def seed() -> Response:
        return _json(sb.seed_summary())

    @app.get("/_sandbox/slots", tags=admin)
    async def slots(request: Request) -> Response:
        query = request.query_params
        found = sb.store.free_slots(
            branch_id=query.get("branchId") or None,
            service_id=query.get("serviceId") or None,
            limit=_int_query(request, "limit", 10),
            min_available=_int_query(request, "minAvailable", 1, low=1),
        )
        return _json(found)

    @app.get("/_sandbox/requests", tags=admin)
    async def recent(request: Request) -> Response:
        return _json(sb.stats.recent(_int_query(request, "limit", 100)))

    @app.get("/_sandbox/config", tags=admin)
    async def get_config() -> Response:
        return _json(sb.settings.to_dict())

    @app.post("/_sandbox/config", tags=admin)
    async def set_config(request: Request) -> Response:
        changes = await optional_object(request)
        try:
            new = sb.configure(changes)
        except (ValueError, TypeError) as exc:
            raise SandboxError(400, "invalid_request", str(exc)) from None
        return _json(new.to_dict())

    @app.post("/_sandbox/reset", tags=admin)
    async def reset(request: Request) -> Response:
        options = await optional_object(request)
        sb.reset(keep_tokens=bool(options.get("keepTokens", False)))
        return _json({"status": "reset"})

    @app.get("/_sandbox/clock", tags=admin)
    async def get_clock() -> Response:
        return _json({"offset": sb.clock.offset, "now": sb.clock.now().isoformat()})

    @app.post("/_sandbox/clock", tags=admin)
    async def advance_clock(request: Request) -> Response:
        data = await optional_object(request)
        seconds = data.get("advance", 0)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise bad_request("advance", "must be a number of seconds")
        if seconds < 0:
            raise bad_request("advance", "the clock only moves forward")
        sb.advance_clock(float(seconds))
        return _json({"offset": sb.clock.offset, "now": sb.clock.now().isoformat()})
