"""Run the sandbox in a background thread, and talk to its ``/_sandbox/`` endpoints.

``SandboxServer`` is what the demo, the benchmarks and the pytest fixture use::

    with SandboxServer(slot_capacity=10_000) as sandbox:
        os.environ.update(sandbox.connection_env())
        ...
        print(sandbox.stats())

FastAPI and uvicorn are imported only by :meth:`SandboxServer.start`, so this module (and the
settings) can be imported where the ``sandbox`` extra is not installed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import requests

from airflow_provider_qmatic import DEFAULT_CONN_ID
from airflow_provider_qmatic.api.contract import Scope, scope_string
from airflow_provider_qmatic.config import is_loopback
from airflow_provider_qmatic.sandbox.connection import (
    connection_env,
    connection_json,
    connection_uri,
)
from airflow_provider_qmatic.sandbox.runtime import Sandbox
from airflow_provider_qmatic.sandbox.settings import SandboxClient, SandboxSettings


class SandboxAdmin:
    """A small client of the introspection endpoints of a sandbox at ``base_url`` (any process)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        self._session.trust_env = False  # never send loopback admin calls through a proxy
        # A connection per call: a kept-alive one that sat idle as long as the server's keep-alive
        # timeout is closed by the server just as it is reused, and the call is lost unanswered.
        self._session.headers["Connection"] = "close"

    @property
    def session(self) -> requests.Session:
        """The admin's HTTP session (proxies from the environment ignored)."""
        return self._session

    def close(self) -> None:
        self._session.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._session.request(
            method, f"{self.base_url}/_sandbox/{path}", timeout=self.timeout, **kwargs
        )
        if response.status_code == 400:
            raise ValueError(response.json().get("message", response.text))
        response.raise_for_status()
        return response.json()

    def health(self) -> bool:
        try:
            return bool(self._call("GET", "health").get("status") == "ok")
        except requests.RequestException:
            return False

    def stats(self) -> dict[str, Any]:
        """Requests by endpoint and status, token requests, 429s, faults, appointment counts."""
        return dict(self._call("GET", "stats"))

    def tokens(self) -> list[dict[str, Any]]:
        """Every access token issued since the last reset (to search logs for leaks)."""
        return list(self._call("GET", "tokens"))

    def appointments(self, status: str | None = None, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every appointment and reservation in the store, any status (admin view)."""
        params = {k: v for k, v in (("status", status), ("tenant", tenant)) if v}
        return list(self._call("GET", "appointments", params=params))

    def finalize(self, appointment_id: str) -> dict[str, Any]:
        """Mark a booked appointment FINALIZED (no public call does); returns its admin view.

        :raises requests.HTTPError: 404 unknown or cancelled, 409 not CONFIRMED.
        """
        return dict(self._call("POST", f"appointments/{appointment_id}/finalize", json={}))

    def seed(self) -> dict[str, Any]:
        """Branches, services, slot counts and clients (without secrets)."""
        return dict(self._call("GET", "seed"))

    def free_slots(
        self,
        branch_id: str | None = None,
        service_id: str | None = None,
        limit: int = 10,
        min_available: int = 1,
    ) -> list[dict[str, Any]]:
        """Future slots with room: ``[{branchId, serviceId, startTime, endTime, available}]``."""
        params: dict[str, Any] = {"limit": limit, "minAvailable": min_available}
        if branch_id:
            params["branchId"] = branch_id
        if service_id:
            params["serviceId"] = service_id
        return list(self._call("GET", "slots", params=params))

    def recent_requests(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last requests (method, path, endpoint, headers with Authorization redacted, status)."""
        return list(self._call("GET", "requests", params={"limit": limit}))

    def config(self) -> dict[str, Any]:
        return dict(self._call("GET", "config"))

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Change settings at run time (see ``SandboxSettings``); returns the whole configuration.

        :raises ValueError: a knob is unknown or out of range.
        """
        return dict(self._call("POST", "config", json=knobs))

    def reset(self, keep_tokens: bool = False) -> None:
        """Seed state, initial settings, clock offset 0, counters zero, tokens cleared (unless kept)."""
        self._call("POST", "reset", json={"keepTokens": keep_tokens})

    def advance_clock(self, seconds: float) -> float:
        """Move the sandbox's clock forward; returns the total offset in seconds."""
        return float(self._call("POST", "clock", json={"advance": seconds})["offset"])


class SandboxServer:
    """A sandbox on a loopback port, served by uvicorn in a daemon thread.

    :param settings: the sandbox's settings; keyword ``overrides`` replace single fields of it
        (e.g. ``SandboxServer(slot_capacity=5000, requests_per_minute=0)``).
    :param host: the address to listen on; anything but loopback needs ``allow_remote=True``.
    :param port: 0 picks a free port (read it from :attr:`port` / :attr:`base_url` after start).
    :param allowed_hosts: ``Host`` names answered besides loopback ones. A specific non-loopback
        ``host`` is answered too; behind a wildcard (``0.0.0.0``, ``::``) the names clients use must
        be listed here, since any other name may be a DNS-rebinding page.
    """

    def __init__(
        self,
        settings: SandboxSettings | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        allow_remote: bool = False,
        allowed_hosts: Iterable[str] = (),
        startup_timeout: float = 20.0,
        **overrides: Any,
    ) -> None:
        base = settings or SandboxSettings()
        if overrides:
            base = base.with_changes(overrides)
        if not allow_remote and not is_loopback(host):
            raise ValueError(
                f"refusing to listen on {host!r}: the sandbox has no real security; pass allow_remote=True"
            )
        self.sandbox = Sandbox(base)
        self.host = host
        named = not _is_wildcard(host) and not is_loopback(host)
        self.allowed_hosts = frozenset(allowed_hosts) | ({host} if named else frozenset())
        self._requested_port = port
        self._startup_timeout = startup_timeout
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self._admin: SandboxAdmin | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> SandboxServer:
        """Start serving; returns once the port accepts connections."""
        if self._thread is not None:
            return self
        import uvicorn

        from airflow_provider_qmatic.sandbox.app import create_app

        config = uvicorn.Config(
            create_app(sandbox=self.sandbox, allowed_hosts=self.allowed_hosts),
            host=self.host,
            port=self._requested_port,
            # Plain asyncio: uvloop's policy would be installed process-wide by some uvicorn versions.
            loop="asyncio",
            lifespan="off",
            log_level="warning",
            log_config=None,  # leave the host process's logging configuration alone
            access_log=False,
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=1,
        )
        server = uvicorn.Server(config)
        # uvicorn installs signal handlers only in the main thread; this is never the main thread.
        thread = threading.Thread(
            target=lambda: asyncio.run(server.serve()), name="qmatic-sandbox", daemon=True
        )
        self._server = server
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True
                self._thread = None
                raise RuntimeError(
                    f"the Qmatic sandbox did not start on {self.host}:{self._requested_port} "
                    "(port in use? see the log above)"
                )
            time.sleep(0.01)
        self._port = int(server.servers[0].sockets[0].getsockname()[1])
        self._admin = SandboxAdmin(self.base_url)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving (open keep-alive connections are closed); safe to call twice."""
        thread, server = self._thread, self._server
        if thread is None or server is None:
            return
        server.should_exit = True
        thread.join(timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout)
        self._thread = None
        if self._admin is not None:
            self._admin.close()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # ------------------------------------------------------------------ where and who
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the sandbox is not started: call start() or use it as a context manager")
        return self._port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``: the connection's ``base_url`` extra."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def settings(self) -> SandboxSettings:
        """The current settings (changed by :meth:`configure`, restored by :meth:`reset`)."""
        return self.sandbox.settings

    @property
    def client(self) -> SandboxClient:
        """The primary (first) client, the one the connection helpers describe."""
        return self.sandbox.settings.client

    @property
    def clients(self) -> tuple[SandboxClient, ...]:
        return self.sandbox.settings.clients

    @property
    def client_id(self) -> str:
        return self.client.client_id

    @property
    def client_secret(self) -> str:
        return self.client.client_secret

    @property
    def tenant(self) -> str:
        return self.client.tenant

    @property
    def system_id(self) -> str:
        return self.client.system_id

    @property
    def conn_json(self) -> str:
        """The primary client's Airflow connection as JSON (with ``endpoints`` for moved paths)."""
        return connection_json(self.client, self.base_url, self.settings.moved_paths)

    @property
    def conn_uri(self) -> str:
        """The primary client's Airflow connection as a URI (with ``endpoints`` for moved paths)."""
        return connection_uri(self.client, self.base_url, self.settings.moved_paths)

    def connection_env(
        self,
        conn_id: str = DEFAULT_CONN_ID,
        client: SandboxClient | None = None,
        *,
        endpoints: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """``{"AIRFLOW_CONN_<CONN_ID>": <json>}`` for this sandbox (primary client by default).

        The connection's ``endpoints`` extra is the sandbox's ``moved_paths`` unless ``endpoints``
        is given (``{}``: none, to see a client that does not know of a moved path fail).
        """
        chosen = self.settings.moved_paths if endpoints is None else endpoints
        return connection_env(client or self.client, self.base_url, conn_id, chosen)

    # ------------------------------------------------------------------ shortcuts for tests
    def get_token(
        self, scopes: Iterable[Scope | str] | None = None, client: SandboxClient | None = None
    ) -> str:
        """A fresh access token, fetched over HTTP exactly as a client would (counts as a request)."""
        import base64

        who = client or self.client
        wanted = (
            frozenset(Scope.parse(s) if isinstance(s, str) else s for s in scopes) if scopes else who.scopes
        )
        basic = base64.b64encode(f"{who.client_id}:{who.client_secret}".encode()).decode()
        response = self.admin.session.post(
            self.base_url + self.sandbox.routes.operations["token"].path,
            headers={"Authorization": f"Basic {basic}", "X-ACCOUNT": who.tenant},
            data={"grant_type": "client_credentials", "scope": scope_string(wanted)},
            timeout=10,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def api_headers(self, token: str, client: SandboxClient | None = None) -> dict[str, str]:
        """``Authorization`` and ``X-TENANT-ID`` for an API call with ``token``."""
        return {"Authorization": f"Bearer {token}", "X-TENANT-ID": (client or self.client).system_id}

    @property
    def admin(self) -> SandboxAdmin:
        if self._admin is None:
            raise RuntimeError("the sandbox is not started")
        return self._admin

    def stats(self) -> dict[str, Any]:
        return self.admin.stats()

    def tokens(self) -> list[dict[str, Any]]:
        return self.admin.tokens()

    def appointments(self, status: str | None = None, tenant: str | None = None) -> list[dict[str, Any]]:
        return self.admin.appointments(status=status, tenant=tenant)

    def seed(self) -> dict[str, Any]:
        return self.admin.seed()

    def finalize(self, appointment_id: str) -> dict[str, Any]:
        return self.admin.finalize(appointment_id)

    def path(self, operation: str, **fields: str) -> str:
        """The path this sandbox serves ``operation`` at (moved or not), its fields filled in."""
        return self.sandbox.routes.operations[operation].path.format(**fields)

    def free_slots(
        self,
        branch_id: str | None = None,
        service_id: str | None = None,
        limit: int = 10,
        min_available: int = 1,
    ) -> list[dict[str, Any]]:
        return self.admin.free_slots(branch_id, service_id, limit, min_available)

    def recent_requests(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.admin.recent_requests(limit)

    def configure(self, **knobs: Any) -> dict[str, Any]:
        return self.admin.configure(**knobs)

    def advance_clock(self, seconds: float) -> float:
        return self.admin.advance_clock(seconds)

    def reset(self, keep_tokens: bool = False) -> None:
        self.admin.reset(keep_tokens=keep_tokens)

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None else "not started"
        return f"SandboxServer({where}, tenant={self.tenant!r})"


def _is_wildcard(host: str) -> bool:
    """True for "every interface" (``0.0.0.0``, ``::``): no single name that clients would use."""
    try:
        return not host or ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False
