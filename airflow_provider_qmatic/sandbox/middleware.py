"""The gateway in front of the API: host check, admin guard, body size, rate limits, faults and
counting, as raw ASGI.

It sits outside every framework layer on purpose: a dropped connection needs the server's own
``send`` (to reach the socket), and a request refused here (421, 413, 429, an injected 500/503)
should cost no routing or validation.

Every request must name this sandbox in its ``Host`` header: a loopback name (``localhost``,
127.0.0.0/8, ``[::1]``, any port) or a host the server was explicitly told to answer for. A web page
that re-points its own DNS name at 127.0.0.1 (DNS rebinding) still sends its own name, and gets 421.

``/_sandbox/`` requests skip the gateway, but a request that changes state there (anything but
GET/HEAD/OPTIONS) must carry ``Content-Type: application/json``, which a browser sends cross-site
only after a CORS preflight the sandbox never grants, must not come from a page of another origin
(an ``Origin`` other than the sandbox's own host and port), and has a 64 KiB body limit.

Order for an API or token request: read the body (413 if over ``max_body_bytes``; a refused body
is read to the end first so the client sees the answer rather than a broken pipe), then the rate
limit (429, consuming nothing), then faults (latency, 500, 503, drop), then the API itself, then
"commit then fail" for a successful write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_qmatic.config import is_loopback
from airflow_provider_qmatic.sandbox.auth import basic_credentials
from airflow_provider_qmatic.sandbox.faults import DROP, ERROR_500, ERROR_503
from airflow_provider_qmatic.sandbox.runtime import Sandbox

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Methods that change nothing on /_sandbox/; every other one is a change and is guarded.
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ADMIN_BODY_LIMIT = 64 * 1024
# A body over the limit is still read (not stored) up to this size, so the client gets the 413.
_DRAIN_LIMIT = 64 * 1024 * 1024
_GATEWAY_HTML = (
    b"<html><head><title>502 Bad Gateway</title></head>"
    b"<body><center><h1>502 Bad Gateway</h1></center></body></html>"
)


class SandboxMiddleware:
    """Wraps the API app; see the module docstring for what it does to each request."""

    def __init__(self, app: ASGIApp, sandbox: Sandbox, allowed_hosts: Iterable[str] = ()) -> None:
        """``allowed_hosts``: names or addresses answered besides loopback ones (``--allow-host``)."""
        self.app = app
        self.sandbox = sandbox
        self.allowed_hosts = frozenset(_normal_host(h) for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        host = _host_name(headers.get("host", ""))
        if not self._answers_for(host):
            message = (
                f"this sandbox does not answer for host {host[:100]!r}: only for localhost, "
                "127.0.0.0/8, [::1] and hosts allowed with --allow-host (DNS-rebinding protection)"
            )
            await _send_json(send, 421, {"error": "misdirected_request", "message": message})
            return
        if scope["path"].startswith("/_sandbox"):
            await self._admin(scope, receive, send, headers)
            return
        method: str = scope["method"]
        endpoint = self.sandbox.routes.classify(method, scope["path"]) or "unknown"
        sandbox = self.sandbox
        settings = sandbox.settings
        entry = {
            "time": time.time(),
            "method": method,
            "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "endpoint": endpoint,
            "headers": _redacted(headers),
        }
        stats = sandbox.stats

        app_receive = receive
        if method in _BODY_METHODS:
            body, too_large = await _read_body(
                receive, settings.max_body_bytes, headers.get("content-length")
            )
            if too_large:
                limit = settings.max_body_bytes
                await _send_json(
                    send, 413, {"error": "payload_too_large", "message": f"the body is over {limit} bytes"}
                )
                stats.record(endpoint, 413, entry)
                return
            app_receive = _replay(body, receive)

        if endpoint != "unknown":
            if endpoint == "token":
                credentials = basic_credentials(headers.get("authorization"))
                wait = sandbox.token_limiter.acquire(credentials[0] if credentials else "-")
            else:
                wait = sandbox.api_limiter.acquire(self._tenant_key(headers))
            if wait is not None:
                extra = {"Retry-After": str(max(1, math.ceil(wait)))} if settings.retry_after_header else {}
                kind = "token endpoint" if endpoint == "token" else "API"
                await _send_json(
                    send, 429, {"error": "rate_limited", "message": f"{kind} rate limit exceeded"}, extra
                )
                stats.record(endpoint, 429, entry)
                return

        decision = sandbox.faults.decide(settings, endpoint) if endpoint != "unknown" else None
        if decision is not None:
            if decision.latency_s > 0:
                stats.fault("latency")
                await asyncio.sleep(decision.latency_s)
            if decision.before in (ERROR_500, ERROR_503):
                status = 500 if decision.before == ERROR_500 else 503
                stats.fault(decision.before)
                await _send_fault(send, status, settings.fault_body)
                stats.record(endpoint, status, entry)
                return
            if decision.before == DROP:
                stats.fault("drop")
                stats.record(endpoint, "dropped", entry)
                await _drop(send, receive)
                return

        after = decision.after_commit if decision is not None else None
        status_box: list[int] = [0]
        swallowed: list[bool] = [False]

        async def tracking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                if after is not None and 200 <= message["status"] < 300:
                    swallowed[0] = True
                    return
            elif swallowed[0]:
                return
            await send(message)

        try:
            await self.app(scope, app_receive, tracking_send)
        finally:
            if not swallowed[0]:
                stats.record(endpoint, status_box[0] or 500, entry)
        if swallowed[0]:
            stats.fault(f"commit_then_fail_{after}")
            if after == "drop":
                stats.record(endpoint, "dropped", entry)
                await _drop(send, receive)
            else:
                stats.record(endpoint, 500, entry)
                await _send_fault(send, 500, settings.fault_body)

    def _answers_for(self, host: str) -> bool:
        return bool(host) and (is_loopback(host) or host in self.allowed_hosts)

    async def _admin(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        """``/_sandbox/``: reads pass; a change must be JSON, from no page or a page of this very
        origin (scheme aside: the sandbox serves plain http only)."""
        if scope["method"] in _SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc.lower() != headers.get("host", "").lower():
            message = f"/_sandbox/ changes are refused from pages of another origin ({origin[:100]!r})"
            await _send_json(send, 403, {"error": "forbidden_origin", "message": message})
            return
        if headers.get("content-type", "").partition(";")[0].strip().lower() != "application/json":
            message = (
                "/_sandbox/ changes need Content-Type: application/json (e.g. curl -H "
                "'Content-Type: application/json' -d '{}'); other types are refused so that no web "
                "page can post a form here"
            )
            await _send_json(send, 415, {"error": "unsupported_media_type", "message": message})
            return
        body, too_large = await _read_body(receive, _ADMIN_BODY_LIMIT, headers.get("content-length"))
        if too_large:
            message = f"the body is over {_ADMIN_BODY_LIMIT} bytes"
            await _send_json(send, 413, {"error": "payload_too_large", "message": message})
            return
        await self.app(scope, _replay(body, receive), send)

    def _tenant_key(self, headers: dict[str, str]) -> str:
        """The API limit is per tenant: the token's tenant, else the X-TENANT-ID the caller sent."""
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            token = self.sandbox.store.find_token(value.strip())
            if token is not None:
                return token.tenant
        return "system:" + headers.get("x-tenant-id", "-")


def _host_name(header: str) -> str:
    """The host of a ``Host`` header, without the port: ``[::1]:8765`` -> ``::1``."""
    value = header.strip()
    if value.startswith("["):
        return _normal_host(value[1 : value.find("]")] if "]" in value else "")
    return _normal_host(value.rpartition(":")[0] if value.count(":") == 1 else value)


def _normal_host(name: str) -> str:
    return name.strip().strip("[]").lower().rstrip(".")


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _redacted(headers: dict[str, str]) -> dict[str, str]:
    out = dict(headers)
    if "authorization" in out:
        out["authorization"] = out["authorization"].partition(" ")[0] + " <redacted>"
    return out


async def _read_body(receive: Receive, limit: int, content_length: str | None) -> tuple[bytes, bool]:
    """The whole body, or ``(b"", True)`` once it is known to be over ``limit`` (then drained)."""
    declared = int(content_length) if content_length and content_length.isdigit() else None
    too_large = declared is not None and declared > limit
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        more = bool(message.get("more_body", False))
        if size > limit:
            too_large = True
        if too_large:
            chunks = []
            if size > _DRAIN_LIMIT:
                break
        else:
            chunks.append(chunk)
    return (b"", True) if too_large else (b"".join(chunks), False)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body to the app once, then defers to the server."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    data = json.dumps(body).encode()
    await _send_raw(send, status, data, "application/json", headers)


async def _send_raw(
    send: Send, status: int, data: bytes, content_type: str | None, headers: dict[str, str] | None = None
) -> None:
    raw = [(b"content-length", str(len(data)).encode())]
    if content_type:
        raw.append((b"content-type", content_type.encode()))
    raw.extend((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data, "more_body": False})


async def _send_fault(send: Send, status: int, style: str) -> None:
    """An injected server fault, with the kind of body a gateway might send."""
    if style == "empty":
        await _send_raw(send, status, b"", None)
    elif style == "html":
        await _send_raw(send, status, _GATEWAY_HTML, "text/html")
    else:
        code = "internal_error" if status == 500 else "service_unavailable"
        await _send_json(send, status, {"error": code, "message": "injected fault (sandbox)"})


async def _drop(send: Send, receive: Receive) -> None:
    """Close the connection without any response, so the client sees a connection error.

    ASGI has no message for this. uvicorn's ``send`` is a bound method of its request cycle, which
    holds the connection's transport: aborting it drops the socket; waiting for the disconnect
    event then tells uvicorn not to answer with a 500 of its own. On another server (no transport
    found) the fault degrades to an empty 500.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        await _send_raw(send, 500, b"", None)
        return
    transport.abort()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(_until_disconnect(receive), timeout=5.0)


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
