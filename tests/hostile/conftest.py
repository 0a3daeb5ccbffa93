"""Shared pieces of the hostile-input suite.

Every case checks three things: the error is clear and names the field at fault; nothing reached
the sandbox (its own counters: zero API requests, zero token requests) unless the case is one only
the server can judge, and then exactly the expected requests; and no secret is in the message.

One sandbox serves the whole suite (reset before each test). Its clients have secrets that are
random per session and include the awkward ones: a secret with colons and a secret in unicode,
both valid and both expected to work.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.client.auth import basic_credentials
from airflow_provider_qmatic.sandbox import SandboxClient, SandboxServer, SandboxSettings

TENANT = "demo"
_RUN = uuid.uuid4().hex
PLAIN = SandboxClient("hostile-plain", f"plain-{_RUN}", TENANT)
COLON = SandboxClient("hostile-colon", f"co:lon:{_RUN}:", TENANT)
UNICODE = SandboxClient("hostile-unicode", f"sëcrét-密码-✓-{_RUN}", TENANT)
CLIENTS = (PLAIN, COLON, UNICODE)

# The seeded catalogue (seed 0): Stockholm City and its passport service.
STOCKHOLM = "e3e70682-c209-4cac-a29f-6fbed82c07cd"
PASSPORT = "c8a70639-eb11-47b3-a7a9-c3787c65c1e5"
UNKNOWN_GUID = "0b6a1c4e-9d1f-4e7a-8f3c-2a5b6c7d8e9f"

# Client-side pacing is tested elsewhere; here it would only add waiting.
FAST = {"requests_per_minute": 600000}


def secrets_of(client: SandboxClient = PLAIN) -> list[str]:
    """The values no message may contain: the secret and the Basic header value encoding it."""
    return [client.client_secret, basic_credentials(client.client_id, client.client_secret)]


def assert_no_secret(text: str, *extra: str, server: SandboxServer | None = None) -> None:
    """No client secret, Basic value, issued token (if ``server``) or ``extra`` value in ``text``."""
    values = [v for c in CLIENTS for v in secrets_of(c)] + list(extra)
    if server is not None:
        values += [t["access_token"] for t in server.tokens()]
    for value in values:
        assert value not in text, f"a secret value leaked into: {text[:300]!r}"


def assert_untouched(server: SandboxServer) -> None:
    """Nothing reached the sandbox: not one API request, not one token request."""
    stats = server.stats()
    assert stats["api_requests"] == 0, stats["requests"]
    assert stats["token_requests"] == 0, stats["requests"]


def requests_made(server: SandboxServer) -> dict[str, dict[str, int]]:
    """``{endpoint: {status: count}}`` of every request the sandbox received since the reset."""
    return dict(server.stats()["requests"])


def conn_json(
    server: SandboxServer,
    client: SandboxClient = PLAIN,
    *,
    extra: Any = None,
    replace_extra: bool = False,
    drop: tuple[str, ...] = (),
    **fields: Any,
) -> str:
    """The sandbox connection of ``client`` as Airflow reads it from ``AIRFLOW_CONN_...`` (JSON),
    with fields changed, extras merged (or replaced, or dropped) and keys removed."""
    conn: dict[str, Any] = json.loads(server.connection_env("x", client=client)["AIRFLOW_CONN_X"])
    conn["extra"].update(FAST)
    if extra is not None:
        conn["extra"] = extra if replace_extra else {**conn["extra"], **extra}
    conn.update(fields)
    for key in drop:
        conn.pop(key, None)
    return json.dumps(conn)


@pytest.fixture(scope="session")
def hostile_server() -> Iterator[SandboxServer]:
    settings = SandboxSettings(clients=CLIENTS, requests_per_minute=0, token_requests_per_second=0)
    server = SandboxServer(settings).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def server(hostile_server: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SandboxServer:
    """The suite's sandbox, reset; a private token cache (and rate-limit state) for this test only,
    so every token request a test causes is one the sandbox counts."""
    hostile_server.reset()
    cache = tmp_path / "token-cache"
    cache.mkdir(mode=0o700)
    monkeypatch.setenv("QMATIC_TOKEN_CACHE_DIR", str(cache))
    return hostile_server


@pytest.fixture
def use_conn(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``use_conn(json_text, conn_id="qmatic_default")``: put a connection in the environment."""

    def setter(value: str, conn_id: str = "qmatic_default") -> None:
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)

    return setter
