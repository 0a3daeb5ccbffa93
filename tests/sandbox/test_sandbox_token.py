"""The token endpoint, exactly as Qmatic's OAuth2 page documents it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import requests
from sandbox_helpers import BOOK_ONLY, DEMO, EXAMPLE_ID, EXAMPLE_SECRET, ISB, basic, error_of

from airflow_provider_qmatic.api import contract
from airflow_provider_qmatic.api.contract import Scope
from airflow_provider_qmatic.sandbox import SandboxServer

BOOK = Scope.BOOK.value
FORM = "application/x-www-form-urlencoded"
# The value printed on Qmatic's OAuth2 page for the example client (one line, newline removed).
EXAMPLE_BASIC = (
    "NWxtN2RqazdqZXZzZmdhcWRkYWxwZnUwNnY6MmE2ZjJjYmh0cmU4bXQ1dGJpY2Y0NnN1NWZkc29k"
    "b20yNHEzNWY2ZHM5cXUwcDZmczAxNno="
)


def post_token(sandbox: SandboxServer, headers: dict[str, str], data: object) -> requests.Response:
    return requests.post(sandbox.base_url + contract.TOKEN.path, headers=headers, data=data, timeout=10)


def good_headers(client=DEMO) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": basic(client.client_id, client.client_secret), "X-ACCOUNT": client.tenant}


def test_example_base64_matches_the_documented_value() -> None:
    assert basic(EXAMPLE_ID, EXAMPLE_SECRET) == "Basic " + EXAMPLE_BASIC


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_documented_curl_request_gets_a_token(sandbox: SandboxServer) -> None:
    # Qmatic's example, byte for byte, with the host changed and REDACTED filled in.
    command = [
        "curl", "--silent", "--show-error",
        "--location", f"{sandbox.base_url}/oauth2/token",
        "--header", f"Authorization: Basic {EXAMPLE_BASIC}",
        "--header", "X-ACCOUNT: isb",
        "--header", "Content-Type: application/x-www-form-urlencoded",
        "--header", "Cookie: XSRF-TOKEN=27a92aa6-e204-4aea-b77a-2e3a3772de41",
        "--data-urlencode", "grant_type=client_credentials",
        "--data-urlencode", "scope=com.qmatic.saas.appointments/external.appointment.book",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    result = subprocess.run(command, capture_output=True, text=True, timeout=30, env=env, check=False)
    assert result.returncode == 0, result.stderr
    import json

    body = json.loads(result.stdout)
    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert body["expires_in"] == 3600
    assert body["token_type"] == "Bearer"
    issued = [t for t in sandbox.tokens() if t["access_token"] == body["access_token"]]
    assert issued
    assert issued[0]["tenant"] == "isb"
    assert issued[0]["scopes"] == [BOOK]


def test_the_documented_request_through_requests(sandbox: SandboxServer) -> None:
    # The same bytes without curl (form encoding of the scope's '/' as curl does it).
    response = requests.post(
        sandbox.base_url + "/oauth2/token",
        headers={
            "Authorization": f"Basic {EXAMPLE_BASIC}",
            "X-ACCOUNT": "isb",
            "Content-Type": FORM,
            "Cookie": "XSRF-TOKEN=27a92aa6-e204-4aea-b77a-2e3a3772de41",
        },
        data="grant_type=client_credentials&scope=com.qmatic.saas.appointments%2Fexternal.appointment.book",
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    token = response.json()["access_token"]
    # The book-only token reads and reserves, but cannot cancel.
    headers = {"Authorization": f"Bearer {token}", "X-TENANT-ID": ISB.system_id}
    assert (
        requests.get(sandbox.base_url + contract.BRANCHES.path, headers=headers, timeout=10).status_code
        == 200
    )
    cancel = requests.delete(
        sandbox.base_url + contract.GET.path.format(appointment_id="x"), headers=headers, timeout=10
    )
    assert error_of(cancel)[:2] == (403, "insufficient_scope")


def test_tokens_are_random_opaque_strings(sandbox: SandboxServer) -> None:
    first = post_token(sandbox, good_headers(), {"grant_type": "client_credentials", "scope": BOOK}).json()
    second = post_token(sandbox, good_headers(), {"grant_type": "client_credentials", "scope": BOOK}).json()
    assert first["access_token"] != second["access_token"]
    assert len(first["access_token"]) >= 32
    assert DEMO.client_secret not in first["access_token"]


def test_all_three_scopes_separated_by_spaces(sandbox: SandboxServer) -> None:
    scope = " ".join(s.value for s in Scope)
    response = post_token(sandbox, good_headers(), {"grant_type": "client_credentials", "scope": scope})
    assert response.status_code == 200
    (issued,) = sandbox.tokens()
    assert issued["scopes"] == sorted(s.value for s in Scope)


def test_without_scope_the_client_gets_all_its_scopes(sandbox: SandboxServer) -> None:
    response = post_token(sandbox, good_headers(BOOK_ONLY), {"grant_type": "client_credentials"})
    assert response.status_code == 200
    assert sandbox.tokens()[0]["scopes"] == [BOOK]


def test_token_lifetime_is_configurable(sandbox: SandboxServer) -> None:
    sandbox.configure(token_lifetime=5)
    body = post_token(sandbox, good_headers(), {"grant_type": "client_credentials"}).json()
    assert body["expires_in"] == 5


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({"X-ACCOUNT": "demo"}, "no Authorization"),
        ({"Authorization": basic("demo-client", "wrong"), "X-ACCOUNT": "demo"}, "wrong secret"),
        ({"Authorization": basic("nobody", "demo-secret-0123456789"), "X-ACCOUNT": "demo"}, "unknown client"),
        ({"Authorization": "Basic not-base64!!", "X-ACCOUNT": "demo"}, "malformed base64"),
        ({"Authorization": "Bearer abc", "X-ACCOUNT": "demo"}, "wrong scheme"),
        ({"Authorization": basic(DEMO.client_id, DEMO.client_secret)}, "no X-ACCOUNT"),
        ({"Authorization": basic(DEMO.client_id, DEMO.client_secret), "X-ACCOUNT": "isb"}, "wrong X-ACCOUNT"),
    ],
)
def test_bad_client_credentials_are_401_invalid_client(
    sandbox: SandboxServer, headers: dict[str, str], why: str
) -> None:
    response = post_token(sandbox, headers, {"grant_type": "client_credentials", "scope": BOOK})
    status, code, message = error_of(response)
    assert (status, code) == (401, "invalid_client"), why
    assert DEMO.client_secret not in message
    assert DEMO.client_id not in message


def test_wrong_content_type_is_400_invalid_request(sandbox: SandboxServer) -> None:
    response = requests.post(
        sandbox.base_url + contract.TOKEN.path,
        headers=good_headers(),
        json={"grant_type": "client_credentials", "scope": BOOK},
        timeout=10,
    )
    status, code, message = error_of(response)
    assert (status, code) == (400, "invalid_request")
    assert "Content-Type" in message


def test_unsupported_grant_type(sandbox: SandboxServer) -> None:
    response = post_token(sandbox, good_headers(), {"grant_type": "password", "scope": BOOK})
    assert error_of(response)[:2] == (400, "unsupported_grant_type")
    missing = post_token(sandbox, good_headers(), {"scope": BOOK})
    assert error_of(missing)[:2] == (400, "invalid_request")


def test_unknown_scope_is_invalid_scope(sandbox: SandboxServer) -> None:
    response = post_token(sandbox, good_headers(), {"grant_type": "client_credentials", "scope": "book"})
    assert error_of(response)[:2] == (400, "invalid_scope")


def test_scope_the_client_may_not_have_is_invalid_scope(sandbox: SandboxServer) -> None:
    response = post_token(
        sandbox, good_headers(BOOK_ONLY), {"grant_type": "client_credentials", "scope": Scope.CANCEL.value}
    )
    assert error_of(response)[:2] == (400, "invalid_scope")
    assert sandbox.tokens() == []
