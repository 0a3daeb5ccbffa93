"""Hostile networks: redirects, echoing gateways, poisoned token answers, dripping servers.

Every case runs the real client against scripted loopback servers (tests/scripted_server.py):
real sockets, real ``requests``, nothing in the client patched. A second server stands for "the
other origin" a redirect points to and records whether anything reached it.
"""

from __future__ import annotations

import base64
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from airflow_provider_qmatic.api.contract import scope_string
from airflow_provider_qmatic.client.client import BOOK_SCOPES, QmaticClient
from airflow_provider_qmatic.client.transport import MAX_ANSWER_BYTES
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.exceptions import (
    QmaticAuthError,
    QmaticConfigError,
    QmaticError,
    QmaticRedirectError,
    QmaticServerError,
    QmaticUnknownOutcomeError,
    QmaticValidationError,
)
from airflow_provider_qmatic.state.tokens import CachedToken, FileTokenCache, make_cache_key
from tests.scripted_server import Reply, ScriptedServer, scripted, token_reply

CLIENT_ID = "net-client"
SECRET = "net-SECRET-7c1e94ab2f0d5e36"
BASIC = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
TOKEN = "TOKEN-net-3a9f0c7d1e5b2864af"
APPOINTMENT = "6f1c2a9e-4b7d-4e21-9a3c-5d8e7f601234"
TOKEN_PATH = "/oauth2/token"
BRANCHES = "/external/v1/branches"
RESERVE = "/external/v1/reservations"
CONFIRM = f"/external/v1/appointments/{APPOINTMENT}/confirm"
RESERVATION = {
    "appointmentId": APPOINTMENT,
    "status": "RESERVED",
    "timeSlot": {"startTime": "2030-01-07T09:00:00+01:00", "endTime": "2030-01-07T09:20:00+01:00"},
}
CONFIRMED = {**RESERVATION, "status": "CONFIRMED"}
CUSTOMER = {
    "personalIdentifier": "PNR19850312X7",
    "firstName": "Ingrid",
    "lastName": "Bergström-Okafor",
    "email": "ingrid.bergstrom@example.org",
    "phoneNumber": "+46701234567",
    "dateOfBirth": "1985-03-12",
}


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def origin() -> Iterator[ScriptedServer]:
    yield from scripted()


@pytest.fixture
def elsewhere() -> Iterator[ScriptedServer]:
    """The other origin a redirect points to. It would answer every request with success."""
    for server in scripted():
        server.script(TOKEN_PATH, token_reply("TOKEN-at-the-other-origin"))
        server.script(RESERVE, Reply(201, RESERVATION))
        server.script("/external/v1/appointments", Reply(201, CONFIRMED))
        server.script(BRANCHES, Reply(200, []))
        yield server


def make_client(
    server: ScriptedServer, *, attempts: int = 6, session: requests.Session | None = None, **values: Any
) -> QmaticClient:
    config = ClientConfig.from_values(
        client_id=CLIENT_ID,
        client_secret=SECRET,
        tenant="demo",
        system_id="sys-1",
        base_url=server.base_url,
        requests_per_minute=600000,
        **{"credential_cache": "memory", **values},
    )
    return QmaticClient(config, sleep=Sleeps(), max_attempts=attempts, session=session)


def other_origin(server: ScriptedServer, path: str = "/collect") -> str:
    """A Location on another host name (localhost, not 127.0.0.1) with a query that echoes secrets."""
    port = server.base_url.rsplit(":", 1)[1]
    return f"http://localhost:{port}{path}?access_token={TOKEN}&basic={BASIC}"


def assert_clean(text: str, *extra: str) -> None:
    for value in (SECRET, BASIC, TOKEN, *extra):
        assert value not in text, f"{value[:12]}... leaked into: {text[:300]!r}"


# -- 1. no redirects -----------------------------------------------------------------------------------

REDIRECTS = (301, 302, 303, 307, 308)


def _call(client: QmaticClient, operation: str) -> Any:
    if operation == "reserve":
        return client.reserve({"branchId": "b", "serviceId": "s"})
    if operation == "confirm":
        return client.confirm(APPOINTMENT, {"customer": CUSTOMER})
    return client.list_branches()


@pytest.mark.parametrize("status", REDIRECTS)
@pytest.mark.parametrize("operation", ["list_branches", "reserve", "confirm"])
def test_an_api_redirect_is_an_error_and_nothing_reaches_the_other_origin(
    origin: ScriptedServer, elsewhere: ScriptedServer, status: int, operation: str
) -> None:
    """A 307/308 would resend the confirm body (the customer) and X-TENANT-ID to another origin; a
    302/303 would turn reserve and confirm into GETs answered 200 and reported as booked."""
    origin.script(TOKEN_PATH, token_reply(TOKEN))
    origin.script("/external/v1", Reply(status, b"", headers={"Location": other_origin(elsewhere)}))
    client = make_client(origin)
    with pytest.raises(QmaticRedirectError) as info:
        _call(client, operation)
    message = str(info.value)
    assert f"HTTP {status}" in message, message
    assert "'localhost'" in message, message
    for hidden in ("collect", "access_token", "basic="):
        assert hidden not in message, message
    assert_clean(message + repr(info.value))
    assert elsewhere.requests == [], "a request reached the origin the redirect pointed to"
    # Not repeated either: a redirect is a deployment fault, not a passing one.
    assert [r.method for r in origin.requests] == ["POST", "POST" if operation != "list_branches" else "GET"]
    assert info.value.retryable is False


@pytest.mark.parametrize("status", REDIRECTS)
def test_a_token_request_redirect_is_an_error_and_sends_no_credentials_elsewhere(
    origin: ScriptedServer, elsewhere: ScriptedServer, status: int
) -> None:
    origin.script(TOKEN_PATH, Reply(status, b"", headers={"Location": other_origin(elsewhere, TOKEN_PATH)}))
    client = make_client(origin)
    with pytest.raises(QmaticRedirectError) as info:
        client.list_branches()
    assert f"HTTP {status}" in str(info.value)
    assert "'localhost'" in str(info.value)
    assert_clean(str(info.value))
    assert elsewhere.requests == []
    assert len(origin.requests) == 1


def test_a_redirect_to_the_same_host_is_not_followed_either(origin: ScriptedServer) -> None:
    origin.script(TOKEN_PATH, token_reply(TOKEN))
    origin.script(RESERVE, Reply(302, b"", headers={"Location": "/external/v1/appointments/x"}))
    origin.script("/external/v1/appointments", Reply(200, CONFIRMED))
    with pytest.raises(QmaticRedirectError, match="same host"):
        make_client(origin).reserve({"branchId": "b"})
    assert origin.paths() == [TOKEN_PATH, RESERVE]


def test_the_clients_session_cannot_be_made_to_follow(
    origin: ScriptedServer, elsewhere: ScriptedServer
) -> None:
    """Even a call through the session that forgets ``allow_redirects=False`` does not follow."""
    origin.script("/", Reply(307, b"", headers={"Location": other_origin(elsewhere)}))
    client = make_client(origin)
    client.session.max_redirects = 30
    response = client.session.post(origin.base_url + "/anything", json={"customer": CUSTOMER})
    assert response.status_code == 307
    assert response.history == []
    assert elsewhere.requests == []


# -- 2. no partial or encoded echoes of secrets ------------------------------------------------------


def _echoes() -> list[Any]:
    encoded_secret = quote(SECRET, safe="")
    every_byte = "".join(f"%{byte:02x}" for byte in SECRET[4:16].encode())
    return [
        pytest.param(f"Authorization: Basic {BASIC[:10]}… rejected", BASIC[:10], id="basic-cut-short"),
        pytest.param(f"bad header basic {BASIC[:5]}", BASIC[:5], id="basic-very-short"),
        pytest.param(f"credentials {BASIC[:14]}", BASIC[:14], id="basic-prefix-without-scheme"),
        pytest.param(f"client_secret={SECRET[3:15]} is wrong", SECRET[3:15], id="secret-run"),
        pytest.param(f"body: client_secret%3D{encoded_secret}", encoded_secret, id="secret-percent-encoded"),
        pytest.param(f"form: secret={every_byte}&x=1", every_byte, id="secret-every-byte-escaped"),
        pytest.param(f"got {SECRET.upper()[:12]}", SECRET.upper()[:12], id="secret-other-case"),
        pytest.param(
            "Authorization: Basic "
            + base64.b64encode(f"{CLIENT_ID}:{SECRET[:6]}".encode()).decode()
            + " (truncated)",
            base64.b64encode(f"{CLIENT_ID}:{SECRET[:6]}".encode()).decode(),
            id="base64-of-a-prefix",
        ),
        pytest.param(
            "raw " + base64.b64encode(f"{CLIENT_ID}:{SECRET[:9]}".encode()).decode(),
            base64.b64encode(f"{CLIENT_ID}:{SECRET[:9]}".encode()).decode()[-6:],
            id="base64-of-a-prefix-without-scheme",
        ),
    ]


@pytest.mark.parametrize("planted_by", ["netrc", "session-auth"])
def test_the_authorization_sent_is_ours_whatever_netrc_or_the_session_says(
    origin: ScriptedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planted_by: str
) -> None:
    """requests would put ~/.netrc's entry for the host (trust_env) or a session's auth over our
    Authorization header: the Basic value would go to the API, or a stranger's to the token URL."""
    origin.script(TOKEN_PATH, token_reply(TOKEN))
    origin.script(BRANCHES, Reply(200, []))
    session = requests.Session()
    if planted_by == "netrc":
        netrc = tmp_path / ".netrc"
        netrc.write_text("machine 127.0.0.1 login planted password planted-secret\n")
        netrc.chmod(0o600)
        monkeypatch.delenv("NETRC", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))
        assert requests.utils.get_netrc_auth(origin.base_url) == ("planted", "planted-secret")
    else:
        session.auth = ("planted", "planted-secret")
    assert make_client(origin, session=session).list_branches() == []
    sent = [(r.path.split("?")[0], r.headers.get("Authorization")) for r in origin.requests]
    assert sent == [(TOKEN_PATH, f"Basic {BASIC}"), (BRANCHES, f"Bearer {TOKEN}")]


@pytest.mark.parametrize(("message", "fragment"), _echoes())
def test_a_token_error_quoting_part_of_the_credentials_is_redacted(
    origin: ScriptedServer, message: str, fragment: str
) -> None:
    origin.script(TOKEN_PATH, Reply(401, {"error": "invalid_client", "message": message}))
    with pytest.raises(QmaticAuthError) as info:
        make_client(origin).list_branches()
    text = str(info.value) + repr(info.value)
    assert fragment not in text, text
    assert "HTTP 401" in text


@pytest.mark.parametrize(
    "echo",
    [
        pytest.param(f"Authorization: Bearer {TOKEN[:9]}", id="bearer-cut-short"),
        pytest.param(f"bearer {TOKEN[:3]}", id="bearer-three-chars"),
        pytest.param(f"token …{TOKEN[5:17]}… expired", id="token-run"),
        pytest.param(f"Authorization=Bearer%20{quote(TOKEN[:12])}", id="bearer-percent-encoded"),
    ],
)
def test_an_api_error_quoting_part_of_the_token_is_redacted(origin: ScriptedServer, echo: str) -> None:
    origin.script(TOKEN_PATH, token_reply(TOKEN))
    origin.script(BRANCHES, Reply(400, {"error": "invalid_request", "message": echo}))
    with pytest.raises(QmaticValidationError) as info:
        make_client(origin).list_branches()
    text = str(info.value)
    for cut in (TOKEN[:9], TOKEN[:3], TOKEN[5:17], quote(TOKEN[:12])):
        if cut in echo:
            assert cut not in text, text


def test_a_confirm_error_drops_the_customers_data_quoted_back(origin: ScriptedServer) -> None:
    """docs/security.md promises no personal data in error messages; a server that quotes the
    customer back (name, e-mail, phone, identifier, date of birth) must not break that promise."""
    quoted = (
        f"customer.email: {CUSTOMER['email'].upper()} is not deliverable for {CUSTOMER['firstName']} "
        f"{CUSTOMER['lastName']} ({CUSTOMER['personalIdentifier']}, born {CUSTOMER['dateOfBirth']}, "
        f"phone {CUSTOMER['phoneNumber']})"
    )
    origin.script(TOKEN_PATH, token_reply(TOKEN))
    origin.script(CONFIRM, Reply(400, {"error": "invalid_request", "message": quoted}))
    with pytest.raises(QmaticValidationError) as info:
        make_client(origin).confirm(APPOINTMENT, {"customer": CUSTOMER})
    text = str(info.value) + repr(info.value)
    for value in CUSTOMER.values():
        assert value.lower() not in text.lower(), text
    assert "customer.email" in text, "the field name is what the user needs: it stays"


def test_a_search_error_drops_the_personal_identifier(origin: ScriptedServer) -> None:
    origin.script(TOKEN_PATH, token_reply(TOKEN))
    origin.script(
        "/external/v1/appointments/search",
        Reply(404, {"error": "not_found", "message": f"no customer {CUSTOMER['personalIdentifier']}"}),
    )
    with pytest.raises(QmaticError) as info:
        make_client(origin).search_appointments(CUSTOMER["personalIdentifier"])
    assert CUSTOMER["personalIdentifier"] not in str(info.value)


@pytest.mark.airflow
def test_the_connection_test_message_redacts_partial_echoes(
    origin: ScriptedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Test button shows this text in the UI: the same redaction applies."""
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    echo = f"rejected Authorization: Basic {BASIC[:12]}… for client secret {quote(SECRET[:10], safe='')}"
    origin.script(TOKEN_PATH, Reply(401, {"error": "invalid_client", "message": echo}))
    conn = {
        "conn_type": "qmatic",
        "login": CLIENT_ID,
        "password": SECRET,
        "extra": {
            "tenant": "demo",
            "system_id": "sys-1",
            "base_url": origin.base_url,
            "credential_cache": "memory",
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_QMATIC_DEFAULT", json.dumps(conn))
    ok, message = QmaticHook().test_connection()
    assert not ok
    assert BASIC[:12] not in message, message
    assert quote(SECRET[:10], safe="") not in message, message
    assert "HTTP 401" in message


# -- 3. poisoned token answers are refused and never cached ----------------------------------------


def _token_body(token: Any = TOKEN, expires_in: Any = 3600) -> bytes:
    return json.dumps({"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}).encode()


POISONED = [
    pytest.param(_token_body("tok\r\nX-Injected: 1"), id="token-crlf"),
    pytest.param(_token_body("tök-ünicode"), id="token-non-ascii"),
    pytest.param(_token_body("two words"), id="token-space"),
    pytest.param(_token_body('tok"quote'), id="token-quote"),
    pytest.param(_token_body(expires_in=float("nan")), id="expires-nan"),
    pytest.param(_token_body(expires_in=float("inf")), id="expires-infinity"),
    pytest.param(_token_body(expires_in=-5), id="expires-negative"),
    pytest.param(_token_body(expires_in=0), id="expires-zero"),
    pytest.param(_token_body(expires_in=True), id="expires-true"),
    pytest.param(_token_body(expires_in="soon"), id="expires-text"),
    pytest.param(_token_body(expires_in="1e400"), id="expires-text-overflow"),
    pytest.param(_token_body(expires_in=[3600]), id="expires-a-list"),
    pytest.param(
        b'{"access_token": "' + TOKEN.encode() + b'", "expires_in": 1e400, "token_type": "Bearer"}',
        id="expires-1e400",
    ),
]


@pytest.mark.parametrize("body", POISONED)
def test_a_poisoned_token_answer_is_refused_and_cached_nowhere(
    origin: ScriptedServer, tmp_path: Path, body: bytes
) -> None:
    origin.script(TOKEN_PATH, Reply(200, body, headers={"Content-Type": "application/json"}))
    origin.script(BRANCHES, Reply(200, []))
    cache_dir = tmp_path / "tokens"
    client = make_client(origin, credential_cache="file", credential_cache_dir=str(cache_dir))
    for _ in range(2):
        with pytest.raises(QmaticAuthError) as info:
            client.list_branches()
        assert "token" in str(info.value)
        assert_clean(str(info.value), "X-Injected")
    # Refused twice means asked twice: nothing was kept in memory or in the file cache.
    assert origin.paths() == [TOKEN_PATH, TOKEN_PATH]
    assert list(cache_dir.glob("*.json")) == []


def test_a_long_lifetime_is_capped_at_a_day(origin: ScriptedServer, tmp_path: Path) -> None:
    origin.script(TOKEN_PATH, Reply(200, _token_body(expires_in=10**12)))
    origin.script(BRANCHES, Reply(200, []))
    cache_dir = tmp_path / "tokens"
    client = make_client(origin, credential_cache="file", credential_cache_dir=str(cache_dir))
    client.list_branches()
    (stored,) = [json.loads(p.read_text()) for p in cache_dir.glob("*.json")]
    assert stored["access_token"] == TOKEN
    assert stored["expires_at"] <= time.time() + 24 * 3600 + 60


@pytest.mark.parametrize(
    "planted",
    [
        pytest.param(CachedToken("evil\r\nX-Injected: 1", time.time() + 3000), id="crlf"),
        pytest.param(CachedToken("évil-token", time.time() + 3000), id="non-ascii"),
        pytest.param(CachedToken("planted-token", time.time() + 10 * 365 * 86400), id="ten-years"),
    ],
)
def test_a_planted_cached_token_is_dropped_and_replaced(
    origin: ScriptedServer, tmp_path: Path, planted: CachedToken
) -> None:
    """Someone with write access to the cache directory (or a corrupted file) must not get a
    header injected or a token pinned: the entry is dropped and a real token fetched."""
    origin.script(TOKEN_PATH, token_reply(TOKEN))
    origin.script(BRANCHES, Reply(200, []))
    cache_dir = tmp_path / "tokens"
    client = make_client(origin, credential_cache="file", credential_cache_dir=str(cache_dir))
    config = client.config
    key = make_cache_key(
        base_url=config.base_url,
        tenant=config.tenant,
        client_id=config.client_id,
        scopes=scope_string(BOOK_SCOPES),
        secret_fingerprint=config.secret_fingerprint,
    )
    FileTokenCache(cache_dir).get_or_fetch(key, lambda: planted, min_ttl=0.0)
    assert client.list_branches() == []
    assert origin.paths() == [TOKEN_PATH, BRANCHES]
    assert origin.requests[1].headers["Authorization"] == f"Bearer {TOKEN}"
    (stored,) = [json.loads(p.read_text()) for p in cache_dir.glob("*.json")]
    assert stored["access_token"] == TOKEN


@pytest.mark.parametrize("value", ["NaN", "nan", "inf", "-Infinity", "-5", "1e400"])
def test_a_retry_after_that_is_not_a_wait_counts_as_absent(origin: ScriptedServer, value: str) -> None:
    """Today NaN reaches time.sleep and crashes the retry loop with ValueError."""
    origin.script(TOKEN_PATH, token_reply(TOKEN))
    origin.script(
        BRANCHES,
        Reply(429, {"error": "rate_limited"}, headers={"Retry-After": value}),
        Reply(200, []),
    )
    client = make_client(origin)
    assert client.list_branches() == []
    sleeps = client._sleep
    assert isinstance(sleeps, Sleeps)
    assert len(sleeps) == 1
    assert math.isfinite(sleeps[0])
    assert 0 <= sleeps[0] <= 30


def test_a_nan_retry_after_does_not_crash_a_real_sleep(origin: ScriptedServer) -> None:
    origin.script(TOKEN_PATH, token_reply(TOKEN))
    origin.script(
        BRANCHES, Reply(503, {"error": "unavailable"}, headers={"Retry-After": "NaN"}), Reply(200, [])
    )
    config = make_client(origin).config
    client = QmaticClient(config, max_attempts=2)  # the real time.sleep
    assert client.list_branches() == []


# -- 4. bounded time -------------------------------------------------------------------------------

DRIP = 0.2  # seconds between bytes; the dripped answers below would take about a minute each


def _slow(status: int, body: Any, *, body_only: bool = False) -> Reply:
    return Reply(status, json.dumps(body).encode() + b" " * 300, drip=DRIP, drip_body_only=body_only)


@pytest.mark.parametrize(
    ("path", "operation", "error", "attempts", "body_only"),
    [
        pytest.param(BRANCHES, "list_branches", QmaticServerError, 2, False, id="read-retried"),
        pytest.param(BRANCHES, "list_branches", QmaticServerError, 2, True, id="read-body-dripped"),
        pytest.param(RESERVE, "reserve", QmaticUnknownOutcomeError, 1, False, id="write-not-repeated"),
        pytest.param(RESERVE, "reserve", QmaticUnknownOutcomeError, 1, True, id="write-body-dripped"),
    ],
)
def test_a_dripping_server_cannot_hold_an_attempt_past_the_timeout(
    origin: ScriptedServer,
    path: str,
    operation: str,
    error: type[QmaticError],
    attempts: int,
    body_only: bool,
) -> None:
    origin.script(TOKEN_PATH, token_reply(TOKEN))
    origin.script(path, _slow(200, RESERVATION if operation == "reserve" else [], body_only=body_only))
    client = make_client(origin, attempts=2, timeout=1)
    started = time.monotonic()
    with pytest.raises(error):
        _call(client, operation)
    elapsed = time.monotonic() - started
    # Two attempts of one second each; the drip alone would need about a minute per attempt.
    assert elapsed < 2 * 1 + 8, elapsed
    assert origin.paths().count(path) == attempts


def test_a_dripping_token_endpoint_cannot_hold_a_task(origin: ScriptedServer) -> None:
    origin.script(TOKEN_PATH, Reply(200, _token_body() + b" " * 300, drip=DRIP))
    client = make_client(origin, timeout=1)
    started = time.monotonic()
    with pytest.raises(QmaticServerError):
        client.list_branches()
    elapsed = time.monotonic() - started
    # Six token attempts of one second each at most (their waits are recorded, not slept).
    assert elapsed < 6 * 1 + 10, elapsed
    assert origin.paths() == [TOKEN_PATH] * 6


def test_an_answer_in_time_still_works_through_the_deadline(origin: ScriptedServer) -> None:
    """The deadline reader must not break ordinary answers: keep-alive reuse, chunk-free bodies."""
    origin.script(TOKEN_PATH, token_reply(TOKEN))
    origin.script(BRANCHES, Reply(200, [{"id": APPOINTMENT, "name": "x" * 50_000}]))
    client = make_client(origin, timeout=5)
    for _ in range(3):
        assert len(client.list_branches()) == 1


@pytest.mark.parametrize(
    ("path", "operation", "error", "attempts"),
    [
        pytest.param(BRANCHES, "list_branches", QmaticServerError, 2, id="read-retried"),
        pytest.param(RESERVE, "reserve", QmaticUnknownOutcomeError, 1, id="write-not-repeated"),
    ],
)
def test_an_answer_too_large_is_cut_off_not_held_in_memory(
    origin: ScriptedServer, path: str, operation: str, error: type[QmaticError], attempts: int
) -> None:
    """A server answering without end (or with gigabytes) cannot fill the worker's memory."""
    origin.script(TOKEN_PATH, token_reply(TOKEN))
    origin.script(path, Reply(200, b"[" + b" " * (MAX_ANSWER_BYTES + 1024) + b"]"))
    client = make_client(origin, attempts=2, timeout=30)
    with pytest.raises(error, match="cut off at 16 MiB"):
        _call(client, operation)
    assert origin.paths().count(path) == attempts


# -- 6b. errors raised while building a request ------------------------------------------------------


def test_a_body_json_cannot_carry_is_a_config_error_and_nothing_is_sent(origin: ScriptedServer) -> None:
    """requests refuses NaN in a JSON body (InvalidJSONError); it used to be reported as a write of
    unknown outcome, though nothing had left the machine."""
    origin.script(TOKEN_PATH, token_reply(TOKEN))
    with pytest.raises(QmaticConfigError) as info:
        make_client(origin).reserve({"branchId": "b", "numberOfReservations": float("nan")})
    assert "nothing was sent" in str(info.value)
    assert origin.paths() == [TOKEN_PATH]


@pytest.mark.parametrize(
    ("headers", "kind"),
    [
        pytest.param({"X-Echo": f"{SECRET}\r\nX-Injected: 1"}, "InvalidHeader", id="header-crlf"),
        pytest.param({"X-Echo": f"{SECRET}-✓"}, "UnicodeEncodeError", id="header-not-latin-1"),
    ],
)
def test_a_request_requests_cannot_build_is_a_qmatic_error_without_the_value(
    origin: ScriptedServer, headers: dict[str, str], kind: str
) -> None:
    from airflow_provider_qmatic.client import transport

    client = make_client(origin)
    with pytest.raises(QmaticConfigError) as info:
        transport.send(
            client.session,
            "GET",
            origin.base_url + BRANCHES,
            what="probe",
            timeout=(5, 5),
            headers=headers,
        )
    assert kind in str(info.value)
    assert_clean(str(info.value) + repr(info.value))
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__
    assert origin.requests == []


def test_a_client_id_with_a_colon_is_refused() -> None:
    with pytest.raises(QmaticConfigError) as info:
        ClientConfig.from_values(
            client_id="net:client", client_secret=SECRET, tenant="demo", region="eu-west-1"
        )
    assert info.value.field == "client_id"
    assert "':'" in str(info.value)
