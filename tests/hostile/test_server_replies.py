"""Hostile server replies, from a scripted loopback server (tests/scripted_server.py): bodies that
are not JSON, empty, HTML error pages (one echoing the request's Authorization header), token
responses without ``access_token`` or with another token type. The connection is read by the hook
from ``AIRFLOW_CONN_QMATIC_DEFAULT``; the client is built from the hook's config with a recorded
``sleep`` so that retried cases take no wall time. Each error must say what came back, and no
message or log line may carry the secret, the Basic value or any token the server sent."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.exceptions import (
    QmaticAuthError,
    QmaticError,
    QmaticNotFoundError,
    QmaticServerError,
    QmaticValidationError,
)
from tests.scripted_server import Reply, ScriptedServer, scripted, token_reply

pytestmark = pytest.mark.airflow

CLIENT_ID = "scripted-client"
SECRET = "scripted-SECRET-4f9a1c2e7b"
BASIC = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
TOKEN = "TOKEN-VALUE-9d8c7b6a5f4e3d2c1b0a"
HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>"
)
ECHO_PAGE = (
    "<html><body><h1>400 Bad Request</h1><pre>POST /oauth2/token\n"
    f"Authorization: Basic {BASIC}\nX-ACCOUNT: demo</pre></body></html>"
)


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def scripted_server() -> Iterator[ScriptedServer]:
    yield from scripted()


@pytest.fixture
def client(scripted_server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> QmaticClient:
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    conn = {
        "conn_type": "qmatic",
        "login": CLIENT_ID,
        "password": SECRET,
        "extra": {
            "tenant": "demo",
            "system_id": "sys-1",
            "base_url": scripted_server.base_url,
            "credential_cache": "memory",
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_QMATIC_DEFAULT", json.dumps(conn))
    return QmaticClient(QmaticHook().config, sleep=Sleeps())


@dataclass(frozen=True)
class Case:
    id: str
    token: Reply
    error: type[QmaticError]
    says: tuple[str, ...]
    attempts: int = 1  # token requests the client makes before giving up
    api: Reply | None = None  # the reply to GET /external/v1/branches
    hidden: tuple[str, ...] = field(default_factory=tuple)


def _json(status: int, body: Any) -> Reply:
    return Reply(status, body)


CASES = [
    Case(
        "token-200-html",
        Reply(200, "<html><body>Please sign in to the corporate proxy</body></html>"),
        QmaticServerError,
        ("token request", "HTTP 200", "text/html body", "instead of JSON"),
        attempts=6,
    ),
    Case(
        "token-200-empty",
        Reply(200, b""),
        QmaticServerError,
        ("token request", "an empty body", "instead of JSON"),
        attempts=6,
    ),
    Case(
        "token-502-html-page",
        Reply(502, HTML_PAGE),
        QmaticServerError,
        ("HTTP 502", "text/html body"),
        attempts=6,
    ),
    Case(
        "token-400-page-echoing-basic",
        Reply(400, ECHO_PAGE),
        QmaticValidationError,
        ("HTTP 400", "text/html body"),
    ),
    Case("token-401-html", Reply(401, HTML_PAGE), QmaticAuthError, ("Client Secret", "tenant 'demo'")),
    Case(
        "token-401-json-echoing-basic",
        _json(401, {"error": "invalid_client", "message": f"bad credentials: Basic {BASIC}"}),
        QmaticAuthError,
        ("Client Secret",),
    ),
    Case(
        "token-lacks-access-token",
        _json(200, {"accessToken": TOKEN, "expires_in": 3600, "token_type": "Bearer"}),
        QmaticAuthError,
        ("no access_token", "accessToken, expires_in, token_type"),
    ),
    Case(
        "token-access-token-a-number",
        _json(200, {"access_token": 123456789, "expires_in": 3600, "token_type": "Bearer"}),
        QmaticAuthError,
        ("no access_token",),
        hidden=("123456789",),
    ),
    Case(
        "token-type-mac",
        _json(200, {"access_token": TOKEN, "expires_in": 3600, "token_type": "mac"}),
        QmaticAuthError,
        ("token_type 'mac'", "expected 'Bearer'"),
    ),
    Case(
        "token-type-missing",
        _json(200, {"access_token": TOKEN, "expires_in": 3600}),
        QmaticAuthError,
        ("token_type", "expected 'Bearer'"),
    ),
    Case(
        "token-type-is-the-token",
        _json(200, {"access_token": TOKEN, "expires_in": 3600, "token_type": TOKEN}),
        QmaticAuthError,
        ("expected 'Bearer'",),
    ),
    Case(
        "token-a-json-array",
        _json(200, [TOKEN]),
        QmaticAuthError,
        ("not a JSON object",),
    ),
    Case(
        "token-expires-in-text",
        _json(200, {"access_token": TOKEN, "expires_in": "soon", "token_type": "Bearer"}),
        QmaticAuthError,
        ("non-numeric expires_in",),
    ),
    Case(
        "api-200-html",
        token_reply(TOKEN),
        QmaticServerError,
        ("the branches request", "HTTP 200", "text/html body", "instead of JSON"),
        api=Reply(200, HTML_PAGE),
    ),
    Case(
        "api-404-html-page",
        token_reply(TOKEN),
        QmaticNotFoundError,
        ("the branches request", "HTTP 404", "text/html body"),
        api=Reply(404, HTML_PAGE),
    ),
    Case(
        "api-200-not-a-list",
        token_reply(TOKEN),
        QmaticError,
        ("expected a JSON array",),
        api=_json(200, {"branches": []}),
    ),
    Case(
        "api-400-echoing-the-bearer-token",
        token_reply(TOKEN),
        QmaticValidationError,
        ("the branches request", "HTTP 400"),
        api=_json(
            400, {"error": "invalid_request", "message": f"header Authorization: Bearer {TOKEN} rejected"}
        ),
    ),
]


PARAMS = [pytest.param(c, id=c.id) for c in CASES]


@pytest.mark.parametrize("case", PARAMS)
def test_hostile_reply_gives_a_clear_error_without_secrets(
    scripted_server: ScriptedServer,
    client: QmaticClient,
    case: Case,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    scripted_server.script("/oauth2/token", case.token)
    if case.api is not None:
        scripted_server.script("/external/v1/branches", case.api)

    with pytest.raises(QmaticError) as info:
        client.list_branches()

    error = info.value
    message = str(error)
    assert isinstance(error, case.error), repr(error)
    for phrase in case.says:
        assert phrase in message, message
    paths = scripted_server.paths()
    assert paths.count("/oauth2/token") == case.attempts, paths
    if case.api is None:
        assert "/external/v1/branches" not in paths  # no API call without a usable token
    seen = message + repr(error) + caplog.text
    for value in (SECRET, BASIC, TOKEN, *case.hidden):
        assert value not in seen, f"{value[:12]}... leaked: {seen[:400]!r}"
