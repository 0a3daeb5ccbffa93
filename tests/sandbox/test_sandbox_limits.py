"""Rate limits: the API's requests per minute per tenant and the token endpoint's 1 per second."""

from __future__ import annotations

import time

import requests
from sandbox_helpers import ACME, DEMO, Api, basic, error_of

from airflow_provider_qmatic.api import contract
from airflow_provider_qmatic.sandbox import SandboxServer


def token_request(sandbox: SandboxServer, client=DEMO) -> requests.Response:  # type: ignore[no-untyped-def]
    return requests.post(
        sandbox.base_url + contract.TOKEN.path,
        headers={"Authorization": basic(client.client_id, client.client_secret), "X-ACCOUNT": client.tenant},
        data={"grant_type": "client_credentials"},
        timeout=10,
    )


def test_burst_over_the_limit_gets_429_with_retry_after(sandbox: SandboxServer, api: Api) -> None:
    sandbox.configure(requests_per_minute=60, api_burst=5)
    statuses = [api.get(contract.BRANCHES.path).status_code for _ in range(8)]
    assert statuses == [200] * 5 + [429] * 3
    response = api.get(contract.BRANCHES.path)
    status, code, _ = error_of(response)
    assert (status, code) == (429, "rate_limited")
    assert response.headers["Retry-After"] == "1"  # one request per second refills
    stats = sandbox.stats()
    assert stats["rate_limited"] == {"api": 4, "token": 0}
    assert stats["requests"]["branches"] == {"200": 5, "429": 4}


def test_retry_after_can_be_switched_off(sandbox: SandboxServer, api: Api) -> None:
    sandbox.configure(requests_per_minute=6, api_burst=1, retry_after_header=False)
    assert api.get(contract.BRANCHES.path).status_code == 200
    response = api.get(contract.BRANCHES.path)
    assert response.status_code == 429
    assert "Retry-After" not in response.headers


def test_retry_after_is_the_ceiling_of_the_wait(sandbox: SandboxServer, api: Api) -> None:
    sandbox.configure(requests_per_minute=6, api_burst=1)  # one every 10 s
    assert api.get(contract.BRANCHES.path).status_code == 200
    assert api.get(contract.BRANCHES.path).headers["Retry-After"] in ("10", "9")


def test_refused_requests_consume_nothing(sandbox: SandboxServer, api: Api) -> None:
    sandbox.configure(requests_per_minute=6, api_burst=1)
    assert api.get(contract.BRANCHES.path).status_code == 200
    for _ in range(20):
        assert api.get(contract.BRANCHES.path).status_code == 429
    sandbox.advance_clock(10)  # exactly one request's worth
    assert api.get(contract.BRANCHES.path).status_code == 200
    assert api.get(contract.BRANCHES.path).status_code == 429


def test_a_client_pacing_at_the_limit_is_never_refused(sandbox: SandboxServer, api: Api) -> None:
    sandbox.configure(requests_per_minute=600, api_burst=2)  # 10 per second
    # One request first, not two: the bucket keeps one of slack, so two requests that reach the
    # server closer than 0.1 s apart (one delayed in transit on a busy machine) still pass.
    assert api.get(contract.BRANCHES.path).status_code == 200
    for _ in range(15):
        time.sleep(0.1)
        assert api.get(contract.BRANCHES.path).status_code == 200
    assert sandbox.stats()["rate_limited"]["api"] == 0


def test_under_the_limit_no_429(sandbox: SandboxServer, api: Api) -> None:
    sandbox.configure(requests_per_minute=100)  # the documented default, burst 10
    for _ in range(10):
        assert api.get(contract.BRANCHES.path).status_code == 200
    assert sandbox.stats()["rate_limited"] == {"api": 0, "token": 0}


def test_the_limit_is_per_tenant(sandbox: SandboxServer, api: Api) -> None:
    other = Api(sandbox, client=ACME)
    sandbox.configure(requests_per_minute=6, api_burst=2)
    assert [api.get(contract.BRANCHES.path).status_code for _ in range(3)] == [200, 200, 429]
    assert [other.get(contract.BRANCHES.path).status_code for _ in range(3)] == [200, 200, 429]


def test_sliding_window(sandbox: SandboxServer, api: Api) -> None:
    sandbox.configure(requests_per_minute=5, rate_limit_algorithm="sliding_window")
    assert [api.get(contract.BRANCHES.path).status_code for _ in range(7)] == [200] * 5 + [429] * 2
    retry = int(api.get(contract.BRANCHES.path).headers["Retry-After"])
    assert 59 <= retry <= 60
    sandbox.advance_clock(60)
    assert api.get(contract.BRANCHES.path).status_code == 200


def test_token_endpoint_one_per_second(sandbox: SandboxServer) -> None:
    sandbox.configure(token_requests_per_second=1)
    first, second = token_request(sandbox), token_request(sandbox)
    assert first.status_code == 200
    status, code, _ = error_of(second)
    assert (status, code) == (429, "rate_limited")
    assert second.headers["Retry-After"] == "1"
    assert token_request(sandbox, ACME).status_code == 200  # per client
    sandbox.advance_clock(1)
    assert token_request(sandbox).status_code == 200
    stats = sandbox.stats()
    assert stats["rate_limited"] == {"api": 0, "token": 1}
    assert stats["token_requests"] == 4
    assert stats["requests"]["token"] == {"200": 3, "429": 1}


def test_token_endpoint_429_without_retry_after(sandbox: SandboxServer) -> None:
    sandbox.configure(token_requests_per_second=1, retry_after_header=False)
    assert token_request(sandbox).status_code == 200
    response = token_request(sandbox)
    assert response.status_code == 429
    assert "Retry-After" not in response.headers


def test_defaults_are_qmatics_documented_limits() -> None:
    with SandboxServer() as server:
        config = server.admin.config()
        assert config["requests_per_minute"] == 100
        assert config["token_requests_per_second"] == 1
        assert server.get_token()
        response = token_request_for(server)
        assert response.status_code == 429


def token_request_for(server: SandboxServer) -> requests.Response:
    client = server.client
    return requests.post(
        server.base_url + contract.TOKEN.path,
        headers={"Authorization": basic(client.client_id, client.client_secret), "X-ACCOUNT": client.tenant},
        data={"grant_type": "client_credentials"},
        timeout=10,
    )
