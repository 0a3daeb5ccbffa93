"""The client's HTTP behaviour against a scripted loopback server: exact bytes, retries, odd replies.

The sandbox is the ground truth for Qmatic's behaviour; these cases are the ones it does not
produce on purpose (HTML error pages, broken token responses) or that need the exact request as a
server received it.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs

import pytest

from airflow_provider_qmatic.api.contract import Scope
from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.exceptions import (
    QmaticAuthError,
    QmaticConflictError,
    QmaticForbiddenError,
    QmaticNotFoundError,
    QmaticNotSentError,
    QmaticRateLimitError,
    QmaticServerError,
    QmaticUnknownOutcomeError,
    QmaticValidationError,
)
from airflow_provider_qmatic.state.tokens import FileTokenCache, MemoryTokenCache
from tests.scripted_server import Reply, ScriptedServer, scripted, token_reply

CLIENT_ID = "5lm7djk7jevsfgaqddalpfu06v"
SECRET = "2a6f2cbhtre8mt5tbicf46su5fdsodom24q35f6ds9qu0p6fs016z"
BASIC = "NWxtN2RqazdqZXZzZmdhcWRkYWxwZnUwNnY6MmE2ZjJjYmh0cmU4bXQ1dGJpY2Y0NnN1NWZkc29kb20yNHEzNWY2ZHM5cXUwcDZmczAxNno="
APPOINTMENT_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    yield from scripted()


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_client(
    server: ScriptedServer, sleeps: Callable[[float], None] | None = None, **config: object
) -> QmaticClient:
    values: dict[str, object] = {
        "client_id": CLIENT_ID,
        "client_secret": SECRET,
        "tenant": "ISB",
        "base_url": server.base_url,
        "system_id": "sys-1",
        "credential_cache": "memory",
    }
    values.update(config)
    return QmaticClient(
        ClientConfig.from_values(**values),  # type: ignore[arg-type]
        token_cache=MemoryTokenCache(),
        sleep=sleeps if sleeps is not None else Sleeps(),
    )


def appointment(status: str = "CONFIRMED") -> dict[str, object]:
    return {
        "appointmentId": APPOINTMENT_ID,
        "status": status,
        "timeSlot": {"startTime": "2026-12-01T09:00:00+01:00", "endTime": "2026-12-01T09:30:00+01:00"},
        "branch": {"id": "b1", "name": "Central"},
        "service": {"id": "s1", "name": "Passport"},
        "numberOfReservations": 1,
    }


def test_token_request_is_exactly_the_documented_one(server: ScriptedServer) -> None:
    server.script("/oauth2/token", token_reply())
    server.script("/external/v1/appointments/", Reply(200, appointment()))
    client = make_client(server)
    client.get_appointment(APPOINTMENT_ID, scopes=frozenset({Scope.BOOK, Scope.CANCEL}))
    token_request = server.requests[0]
    assert token_request.method == "POST"
    assert token_request.path == "/oauth2/token"
    assert token_request.headers["Authorization"] == f"Basic {BASIC}"
    assert "\n" not in token_request.headers["Authorization"]
    assert token_request.headers["X-ACCOUNT"] == "isb"
    assert token_request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = parse_qs(token_request.body.decode())
    assert form == {
        "grant_type": ["client_credentials"],
        "scope": [
            "com.qmatic.saas.appointments/external.appointment.book "
            "com.qmatic.saas.appointments/external.appointment.cancel"
        ],
    }
    api_request = server.requests[1]
    assert api_request.headers["Authorization"] == "Bearer tok-1"
    assert api_request.headers["X-TENANT-ID"] == "sys-1"
    assert api_request.headers["User-Agent"].startswith("airflow-provider-qmatic")


def test_basic_header_matches_the_seed_page_example() -> None:
    from airflow_provider_qmatic.client.auth import basic_credentials

    assert basic_credentials(CLIENT_ID, SECRET) == BASIC
    assert base64.b64decode(BASIC).decode() == f"{CLIENT_ID}:{SECRET}"


def test_tokens_cached_per_scope_set(server: ScriptedServer) -> None:
    server.script("/oauth2/token", token_reply("tok-a"), token_reply("tok-b"))
    server.script("/external/v1/appointments/", Reply(200, appointment()))
    client = make_client(server)
    for _ in range(5):
        client.get_appointment(APPOINTMENT_ID)
    client.get_appointment(APPOINTMENT_ID, scopes=frozenset({Scope.CANCEL}))
    client.get_appointment(APPOINTMENT_ID)
    assert server.paths().count("/oauth2/token") == 2
    bearer = [r.headers["Authorization"] for r in server.requests if r.path.startswith("/external")]
    assert bearer == ["Bearer tok-a"] * 5 + ["Bearer tok-b", "Bearer tok-a"]
    assert client.token_requests == 2


def test_next_token_request_waits_a_full_second_after_the_last_answer(server: ScriptedServer) -> None:
    # A busy server (or network) may take a request in late: the server's one-a-second count then
    # starts when it took it, not when the client sent it. Spacing from the send alone let two
    # requests 1.1 s apart reach a loaded sandbox 0.9 s apart (a 429 in CI); spacing from the answer
    # cannot.
    import time

    server.script("/oauth2/token", Reply(200, token_reply("tok-a").body, delay=0.6), token_reply("tok-b"))
    server.script("/external/v1/appointments/", Reply(200, appointment()))
    client = make_client(server, sleeps=time.sleep)
    client.get_appointment(APPOINTMENT_ID)
    client.get_appointment(APPOINTMENT_ID, scopes=frozenset({Scope.CANCEL}))
    first, second = (r for r in server.requests if r.path == "/oauth2/token")
    assert second.at - (first.at + 0.6) >= 1.0
    assert client.token_requests == 2


def test_short_lived_token_is_renewed_before_it_runs_out(server: ScriptedServer) -> None:
    # expires_in=1: usable for half its life, so a second call a little later fetches a new one.
    import time

    server.script("/oauth2/token", token_reply("tok-a", expires_in=1), token_reply("tok-b", expires_in=1))
    server.script("/external/v1/appointments/", Reply(200, appointment()))
    client = make_client(server)
    client.get_appointment(APPOINTMENT_ID)
    time.sleep(0.6)
    client.get_appointment(APPOINTMENT_ID)
    assert server.paths().count("/oauth2/token") == 2


def test_401_refreshes_token_once_and_repeats(server: ScriptedServer) -> None:
    server.script("/oauth2/token", token_reply("tok-old"), token_reply("tok-new"))
    server.script(
        "/external/v1/appointments/",
        Reply(401, {"error": "invalid_token", "message": "expired"}),
        Reply(200, appointment()),
    )
    client = make_client(server)
    result = client.get_appointment(APPOINTMENT_ID)
    assert result.appointment_id == APPOINTMENT_ID
    assert server.paths().count("/oauth2/token") == 2
    assert server.requests[-1].headers["Authorization"] == "Bearer tok-new"


def test_second_401_is_auth_error_naming_tenant_and_region(server: ScriptedServer) -> None:
    server.script("/oauth2/token", token_reply("tok-1"), token_reply("tok-2"))
    server.script("/external/v1/appointments/", Reply(401, {"error": "invalid_token", "message": "no"}))
    client = make_client(server)
    with pytest.raises(QmaticAuthError) as info:
        client.get_appointment(APPOINTMENT_ID)
    assert "isb" in str(info.value)
    assert server.base_url in str(info.value)
    assert SECRET not in str(info.value)
    assert "tok-" not in str(info.value)
    assert server.paths().count(f"/external/v1/appointments/{APPOINTMENT_ID}") == 2


def test_token_endpoint_429_waits_and_retries(server: ScriptedServer) -> None:
    server.script(
        "/oauth2/token",
        Reply(429, {"error": "rate_limited", "message": "slow down"}, {"Retry-After": "2"}),
        Reply(429, {"error": "rate_limited", "message": "slow down"}),
        token_reply(),
    )
    server.script("/external/v1/branches", Reply(200, []))
    sleeps = Sleeps()
    client = make_client(server, sleeps)
    assert client.list_branches() == []
    assert server.paths().count("/oauth2/token") == 3
    assert 2.0 in sleeps
    # Without Retry-After, at least the token endpoint's one second.
    assert any(s >= 1.0 for s in sleeps if s != 2.0)


def test_token_endpoint_429_gives_up_after_bounded_attempts(server: ScriptedServer) -> None:
    server.script("/oauth2/token", Reply(429, {"error": "rate_limited", "message": "slow down"}))
    client = make_client(server)
    with pytest.raises(QmaticRateLimitError):
        client.list_branches()
    assert 2 <= server.paths().count("/oauth2/token") <= 10


@pytest.mark.parametrize(
    ("reply", "fragment"),
    [
        (Reply(200, {"expires_in": 3600, "token_type": "Bearer"}), "no access_token"),
        (Reply(200, {"access_token": "leak-me", "expires_in": 3600, "token_type": "mac"}), "token_type"),
        (Reply(200, {"access_token": "leak-me", "expires_in": "soon", "token_type": "Bearer"}), "expires_in"),
        (Reply(200, ["leak-me"]), "not a JSON object"),
        (Reply(200, "<html>login</html>"), "text/html"),
        (Reply(200, b""), "empty body"),
        (Reply(401, {"error": "invalid_client", "message": "bad credentials"}), "Client Secret"),
        (Reply(401, "<html>denied</html>"), "text/html"),
        (Reply(400, {"error": "invalid_scope", "message": "unknown scope"}), "unknown scope"),
    ],
)
def test_bad_token_responses_are_clear_and_leak_nothing(
    server: ScriptedServer, reply: Reply, fragment: str
) -> None:
    server.script("/oauth2/token", reply)
    client = make_client(server)
    with pytest.raises(
        (QmaticAuthError, QmaticForbiddenError, QmaticServerError, QmaticValidationError)
    ) as info:
        client.list_branches()
    message = str(info.value)
    assert fragment in message
    assert "leak-me" not in message
    assert SECRET not in message
    assert BASIC not in message
    assert "/external" not in "".join(server.paths())


def test_api_429_retry_after_http_date_and_limit(server: ScriptedServer) -> None:
    server.script("/oauth2/token", token_reply())
    server.script(
        "/external/v1/branches",
        Reply(
            429, {"error": "rate_limited", "message": "x"}, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
        ),
        Reply(429, {"error": "rate_limited", "message": "x"}, {"Retry-After": "3"}),
        Reply(200, []),
    )
    sleeps = Sleeps()
    make_client(server, sleeps).list_branches()
    assert sleeps[0] == 0.0  # a date in the past means "now"
    assert sleeps[1] == 3.0


def test_503_on_a_post_is_retried_but_500_is_an_unknown_outcome(server: ScriptedServer) -> None:
    server.script("/oauth2/token", token_reply())
    server.script(
        "/external/v1/reservations",
        Reply(503, b""),
        Reply(500, "<html>oops</html>"),
    )
    client = make_client(server)
    with pytest.raises(QmaticUnknownOutcomeError) as info:
        client.reserve({"branchId": "b"})
    assert "may or may not" in str(info.value)
    assert server.paths().count("/external/v1/reservations") == 2


def test_5xx_on_get_is_retried_until_success(server: ScriptedServer) -> None:
    server.script("/oauth2/token", token_reply())
    server.script(
        "/external/v1/appointments/",
        Reply(500, b""),
        Reply(502, "<html>bad gateway</html>"),
        Reply(200, appointment()),
    )
    assert make_client(server).get_appointment(APPOINTMENT_ID).status == "CONFIRMED"
    assert server.paths().count(f"/external/v1/appointments/{APPOINTMENT_ID}") == 3


@pytest.mark.parametrize(
    ("status", "error", "cls"),
    [
        (400, "invalid_request", QmaticValidationError),
        (404, "not_found", QmaticNotFoundError),
        (409, "slot_unavailable", QmaticConflictError),
    ],
)
def test_client_errors_are_not_retried(server: ScriptedServer, status: int, error: str, cls: type) -> None:
    server.script("/oauth2/token", token_reply())
    server.script(
        "/external/v1/appointments/", Reply(status, {"error": error, "message": "field customer.email"})
    )
    with pytest.raises(cls) as info:
        make_client(server).get_appointment(APPOINTMENT_ID)
    assert info.value.code == error
    assert info.value.status == status
    assert "customer.email" in str(info.value)
    assert server.paths().count(f"/external/v1/appointments/{APPOINTMENT_ID}") == 1


def test_connection_refused_is_not_sent_and_retried_even_for_post(server: ScriptedServer) -> None:
    """A reserve (a POST, never repeated after a lost answer) that cannot connect is repeated: it
    cannot have reached Qmatic. The token comes first, so the refusal really meets the POST."""
    server.script("/oauth2/token", token_reply())
    sleeps = Sleeps()
    client = QmaticClient(
        ClientConfig.from_values(
            client_id=CLIENT_ID, client_secret=SECRET, tenant="isb", base_url=server.base_url, system_id="s"
        ),
        token_cache=MemoryTokenCache(),
        sleep=sleeps,
        max_attempts=3,
    )
    client.tokens.token(frozenset({Scope.BOOK}))  # cached: the reserve needs no token request
    server.stop()  # nothing listens on the port any more: every connection is refused
    with pytest.raises(QmaticNotSentError, match="Qmatic reserve could not be sent") as info:
        client.reserve({"branchId": "b"})
    assert len(sleeps) == 2  # three attempts of the POST in all
    assert client.api_requests == 0  # none reached the server
    assert client.token_requests == 1
    assert server.paths() == ["/oauth2/token"]
    assert SECRET not in str(info.value)


def test_path_ids_cannot_escape_the_path(server: ScriptedServer) -> None:
    from airflow_provider_qmatic.exceptions import QmaticConfigError

    client = make_client(server)
    for bad in ("../branches", "a/b", "x?y=1", "", "a#b"):
        with pytest.raises(QmaticConfigError):
            client.get_appointment(bad)
    assert server.requests == []


def test_missing_system_id_fails_before_any_request(server: ScriptedServer) -> None:
    from airflow_provider_qmatic.exceptions import QmaticConfigError

    client = make_client(server, system_id=None)
    with pytest.raises(QmaticConfigError) as info:
        client.list_branches()
    assert info.value.field == "system_id"
    assert server.requests == []


def test_secrets_never_in_logs(server: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server.script("/oauth2/token", token_reply("tok-secret-value"))
    server.script("/external/v1/branches", Reply(503, b""), Reply(200, []))
    client = make_client(server)
    client.list_branches()
    text = caplog.text + repr(client) + repr(client.tokens) + repr(client.config)
    for secret in (SECRET, BASIC, "tok-secret-value"):
        assert secret not in text


def test_file_token_cache_shared_between_clients(server: ScriptedServer, tmp_path: object) -> None:
    import os

    cache_dir = os.path.join(str(tmp_path), "cache")
    server.script("/oauth2/token", token_reply("tok-shared"))
    server.script("/external/v1/branches", Reply(200, []))
    config = ClientConfig.from_values(
        client_id=CLIENT_ID, client_secret=SECRET, tenant="isb", base_url=server.base_url, system_id="s"
    )
    for _ in range(3):
        QmaticClient(config, token_cache=FileTokenCache(cache_dir)).list_branches()
    assert server.paths().count("/oauth2/token") == 1
    from pathlib import Path

    stored = "".join(p.read_text(errors="ignore") for p in Path(cache_dir).iterdir())
    assert "tok-shared" in stored  # it is cached, in a 0600 file, not in its name
    assert all("tok-shared" not in name for name in os.listdir(cache_dir))


def test_attempts_that_never_connect_are_retried_but_not_counted(server: ScriptedServer) -> None:
    server.script("/oauth2/token", token_reply())
    server.script("/external/v1/branches", Reply(200, []))
    sleeps = Sleeps()
    client = make_client(server, sleeps)
    client.list_branches()
    assert client.api_requests == 1
    server.stop()  # the cached token stays valid; the host now refuses connections
    with pytest.raises(QmaticNotSentError):
        client.list_branches()
    assert len(sleeps) == 5  # six attempts in all, as for any request that was not processed
    assert client.api_requests == 1
