"""The sandbox as a local network service: what a web page in the user's browser can NOT do to it.

A page can make the browser send requests to 127.0.0.1 (a cross-site form post), or re-point its
own DNS name at 127.0.0.1 (DNS rebinding) and then read the answers. Every case goes through the
real server over loopback.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from sandbox_helpers import Api

from airflow_provider_qmatic.sandbox import SandboxServer, SandboxSettings
from airflow_provider_qmatic.sandbox.runtime import Sandbox
from airflow_provider_qmatic.sandbox.settings import ENDPOINTS, MAX_BRANCHES, MAX_SLOTS

# Part B's paths, spelled out: this module tests the server's edge, not the contract table.
TOKEN = "/oauth2/token"
BRANCHES = "/external/v1/branches"


def _session() -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    return session


# ------------------------------------------------------------------------------ Host header
FOREIGN_HOSTS = [
    "evil.example",
    "evil.example:{port}",
    "localhost.evil.example:{port}",
    "127.0.0.1.nip.io:{port}",
    "127.1:{port}",  # not an address ipaddress accepts; a resolver might
    "[::2]:{port}",
    "10.0.0.1:{port}",
    "",
]


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
@pytest.mark.parametrize("method_path", [("GET", "/_sandbox/tokens"), ("GET", BRANCHES)])
def test_a_foreign_host_name_is_refused(
    sandbox: SandboxServer, host: str, method_path: tuple[str, str]
) -> None:
    """DNS rebinding: the page's own name comes in the Host header; nothing is answered for it."""
    sandbox.get_token()  # something worth stealing
    method, path = method_path
    headers = {"Host": host.format(port=sandbox.port)}
    response = _session().request(method, sandbox.base_url + path, headers=headers, timeout=10)
    assert response.status_code == 421, response.text
    body = response.json()
    assert body["error"] == "misdirected_request"
    assert "access_token" not in response.text
    assert sandbox.stats()["api_requests"] == 0  # refused before the API counted it


def test_a_foreign_host_cannot_get_a_token_or_change_settings(sandbox: SandboxServer) -> None:
    session = _session()
    token = session.post(
        sandbox.base_url + TOKEN,
        headers={"Host": "evil.example", "Authorization": "Basic x", "X-ACCOUNT": "demo"},
        data={"grant_type": "client_credentials"},
        timeout=10,
    )
    assert token.status_code == 421
    change = session.post(
        sandbox.base_url + "/_sandbox/config",
        headers={"Host": f"evil.example:{sandbox.port}"},
        json={"fail_rate": 1.0},
        timeout=10,
    )
    assert change.status_code == 421
    assert sandbox.settings.fail_rate == 0.0
    assert sandbox.stats()["token_requests"] == 0


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:{port}", "LOCALHOST.:{port}", "127.0.0.1:{port}", "127.9.8.7", "[::1]:{port}"],
)
def test_loopback_names_are_answered(sandbox: SandboxServer, host: str) -> None:
    headers = {"Host": host.format(port=sandbox.port)}
    response = _session().get(sandbox.base_url + "/_sandbox/health", headers=headers, timeout=10)
    assert response.status_code == 200, response.text


def test_an_explicitly_allowed_host_is_answered() -> None:
    with SandboxServer(allowed_hosts=("sandbox.test",)) as server:
        session = _session()
        ok = session.get(
            server.base_url + "/_sandbox/health", headers={"Host": f"Sandbox.Test:{server.port}"}, timeout=10
        )
        assert ok.status_code == 200
        other = session.get(server.base_url + "/_sandbox/health", headers={"Host": "other.test"}, timeout=10)
        assert other.status_code == 421


def test_the_listening_address_is_answered_unless_it_is_a_wildcard() -> None:
    # Not started: binding a real non-loopback interface is not something a test may do.
    assert "192.0.2.10" in SandboxServer(host="192.0.2.10", allow_remote=True).allowed_hosts
    assert SandboxServer(host="0.0.0.0", allow_remote=True).allowed_hosts == frozenset()
    assert SandboxServer(host="::", allow_remote=True, allowed_hosts=["box.lan"]).allowed_hosts == {"box.lan"}


# ------------------------------------------------------------------------------ /_sandbox/ changes
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", '{"fail_rate": 1.0}'),  # what a cross-site form with enctype=text/plain sends
        ("application/x-www-form-urlencoded", "fail_rate=1.0"),
        (
            "multipart/form-data; boundary=x",
            '--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--x--',
        ),
        (None, '{"fail_rate": 1.0}'),
    ],
    ids=["text-plain", "urlencoded", "multipart", "none"],
)
def test_admin_changes_need_a_json_content_type(
    sandbox: SandboxServer, content_type: str | None, body: str
) -> None:
    Api(sandbox).get(BRANCHES)
    counted = sandbox.stats()
    offset = sandbox.advance_clock(0)
    headers = {"Content-Type": content_type} if content_type else {}
    session = _session()
    for path, data in (("config", body), ("reset", ""), ("clock", '{"advance": 900}')):
        response = session.post(f"{sandbox.base_url}/_sandbox/{path}", data=data, headers=headers, timeout=10)
        if content_type is None and data:
            assert "content-type" not in {k.lower() for k in response.request.headers}
        assert response.status_code == 415, (path, response.text)
        assert response.json()["error"] == "unsupported_media_type"
    assert sandbox.settings.fail_rate == 0.0  # config unchanged
    after = sandbox.stats()  # not reset: the counters still hold the token request and the API call
    assert (after["api_requests"], after["token_requests"]) == (
        counted["api_requests"],
        counted["token_requests"],
    )
    assert after["api_requests"] >= 1
    assert sandbox.advance_clock(0) == offset  # clock unchanged


def test_admin_changes_with_json_work_as_before(sandbox: SandboxServer) -> None:
    session = _session()
    response = session.post(
        sandbox.base_url + "/_sandbox/config",
        data='{"slot_capacity": 7}',
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["slot_capacity"] == 7
    # The documented curl form: an empty object resets.
    reset = session.post(sandbox.base_url + "/_sandbox/reset", json={}, timeout=10)
    assert reset.status_code == 200
    assert sandbox.settings.slot_capacity == SandboxSettings().slot_capacity


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "http://evil.example:{port}",
        "null",
        "https://127.0.0.1.nip.io",
        "http://127.0.0.1:1",  # a page of another local service is another origin
        "http://localhost:{port}",  # another name for the same socket is another origin too
    ],
)
def test_admin_changes_from_another_origin_are_refused(sandbox: SandboxServer, origin: str) -> None:
    response = _session().post(
        sandbox.base_url + "/_sandbox/config",
        json={"fail_rate": 1.0},
        headers={"Origin": origin.format(port=sandbox.port)},
        timeout=10,
    )
    assert response.status_code == 403, response.text
    assert response.json()["error"] == "forbidden_origin"
    assert sandbox.settings.fail_rate == 0.0


def test_admin_changes_from_the_sandbox_own_pages_work(sandbox: SandboxServer) -> None:
    """The OpenAPI page at /_sandbox/docs is served by the sandbox: its origin is allowed."""
    response = _session().post(
        sandbox.base_url + "/_sandbox/clock",
        json={"advance": 60},
        headers={"Origin": sandbox.base_url},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def test_no_page_of_another_origin_may_read_or_preflight(sandbox: SandboxServer) -> None:
    """Reads are answered, but with no CORS header a browser keeps them from another origin's page;
    the preflight a cross-site JSON post needs is never granted."""
    session = _session()
    evil = {"Origin": "http://evil.example"}
    read = session.get(sandbox.base_url + "/_sandbox/tokens", headers=evil, timeout=10)
    assert read.status_code == 200
    assert "access-control-allow-origin" not in {k.lower() for k in read.headers}
    preflight = session.options(
        sandbox.base_url + "/_sandbox/config",
        headers={
            **evil,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
        timeout=10,
    )
    assert not 200 <= preflight.status_code < 300
    assert "access-control-allow-origin" not in {k.lower() for k in preflight.headers}


def test_an_admin_body_over_64_kib_is_refused(sandbox: SandboxServer) -> None:
    big = '{"fault_endpoints": [' + ",".join(['"confirm"'] * 20_000) + "]}"
    response = _session().post(
        sandbox.base_url + "/_sandbox/config",
        data=big,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert sandbox.settings.fault_endpoints == ()


def test_deeply_nested_json_is_a_400_not_a_crash(sandbox: SandboxServer) -> None:
    response = _session().post(
        sandbox.base_url + "/_sandbox/config",
        data="[" * 30_000 + "]" * 30_000,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith("body")


# ------------------------------------------------------------------------------ bounds
BIG = 2**70
OUT_OF_BOUNDS: list[tuple[dict[str, Any], str]] = [
    ({"weeks": 520, "branch_count": MAX_BRANCHES}, "weeks"),
    ({"weeks": 60, "branch_count": MAX_BRANCHES}, "branch_count, weeks"),  # each in range, together too many
    ({"open_hour": 0, "close_hour": 24, "weeks": 40}, "branch_count, weeks"),
    ({"branch_count": 13}, "branch_count"),
    ({"slot_capacity": 10**7}, "slot_capacity"),
    ({"max_body_bytes": 2**40}, "max_body_bytes"),
    ({"latency_ms": 600_000}, "latency_ms"),
    ({"latency_jitter_ms": 1e300}, "latency_jitter_ms"),
    ({"token_lifetime": 1e12}, "token_lifetime"),
    ({"reservation_hold": 1e12}, "reservation_hold"),
    ({"requests_per_minute": 1e300}, "requests_per_minute"),
    ({"api_burst": BIG}, "api_burst"),
    ({"token_burst": BIG}, "token_burst"),
    ({"token_requests_per_second": 1e300}, "token_requests_per_second"),
    ({"seed": BIG}, "seed"),
    ({"fault_seed": -BIG}, "fault_seed"),
    ({"weeks": True}, "weeks"),
    ({"fail_rate": "0.5"}, "fail_rate"),
    ({"fault_endpoints": ["confirm"] * (len(ENDPOINTS) + 1)}, "fault_endpoints"),
    ({"answer_shape": "full"}, "answer_shape"),
    ({"search_answer": "list"}, "search_answer"),
    ({"required_questions": [""]}, "required_questions"),
    ({"max_reservations": {"*": -1}}, "max_reservations"),
    ({"tenant_config": {"demo": {"seed": 1}}}, "tenant_config"),
    ({"tenant_config": {"nobody": {}}}, "tenant_config"),
    ({"moved_paths": {"reserve": "/external/v2/reservations"}}, "moved_paths"),  # fixed at start
]


@pytest.mark.parametrize(("changes", "field"), OUT_OF_BOUNDS, ids=[f for _, f in OUT_OF_BOUNDS])
def test_a_setting_out_of_bounds_is_refused_naming_it(
    sandbox: SandboxServer, changes: dict[str, Any], field: str
) -> None:
    before = sandbox.admin.config()
    response = _session().post(sandbox.base_url + "/_sandbox/config", json=changes, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(field), response.json()
    assert sandbox.admin.config() == before


@pytest.mark.parametrize("seed", range(8))
def test_the_slot_bound_holds_for_the_largest_allowed_seed(seed: int) -> None:
    """``estimated_slots`` is an upper bound of what the seed really builds (else the cap lies)."""
    settings = SandboxSettings(seed=seed, branch_count=MAX_BRANCHES, weeks=2, open_hour=0, close_hour=24)
    assert settings.estimated_slots() <= MAX_SLOTS
    assert Sandbox(settings).store.slot_count() <= settings.estimated_slots()
