"""The pytest plugin's fixtures, as a user's DAG tests would use them."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests

from airflow_provider_qmatic.api import contract
from airflow_provider_qmatic.sandbox import SandboxServer, SandboxSettings


def test_qmatic_sandbox_sets_the_default_connection(qmatic_sandbox: SandboxServer) -> None:
    conn = json.loads(os.environ["AIRFLOW_CONN_QMATIC_DEFAULT"])
    assert conn == json.loads(qmatic_sandbox.conn_json)
    assert conn["conn_type"] == "qmatic"
    assert conn["login"] == qmatic_sandbox.client_id == "demo-client"
    assert conn["password"] == qmatic_sandbox.client_secret
    assert conn["extra"] == {
        "tenant": qmatic_sandbox.tenant,
        "system_id": qmatic_sandbox.system_id,
        "base_url": qmatic_sandbox.base_url,
    }
    assert qmatic_sandbox.base_url.startswith("http://127.0.0.1:")
    token = qmatic_sandbox.get_token(["book"])
    response = requests.get(
        qmatic_sandbox.base_url + contract.BRANCHES.path,
        headers=qmatic_sandbox.api_headers(token),
        timeout=10,
    )
    assert response.status_code == 200


def test_qmatic_sandbox_is_reset_between_tests(qmatic_sandbox: SandboxServer) -> None:
    assert qmatic_sandbox.stats()["requests"] == {}
    assert qmatic_sandbox.tokens() == []


def test_qmatic_sandbox_has_documented_defaults(qmatic_sandbox: SandboxServer) -> None:
    config = qmatic_sandbox.admin.config()
    assert config["requests_per_minute"] == 100
    assert config["token_lifetime"] == 3600
    assert config["reservation_hold"] == 900
    assert config["slot_capacity"] == 2
    assert config["answer_shape"] == "public"
    assert config["require_date_of_birth"] is False


@pytest.mark.qmatic_sandbox(answer_shape="rich", require_date_of_birth=True, max_reservations={"*": 1})
def test_the_qmatic_sandbox_marker_sets_run_time_settings(qmatic_sandbox: SandboxServer) -> None:
    settings = qmatic_sandbox.settings
    assert (settings.answer_shape, settings.require_date_of_birth) == ("rich", True)
    assert settings.tenant(qmatic_sandbox.tenant).cap("any", "service") == 1


def test_marker_settings_last_one_test(qmatic_sandbox: SandboxServer) -> None:
    """Runs after the marker test (file order): the reset restored the session's settings."""
    assert qmatic_sandbox.settings.answer_shape == "public"
    assert qmatic_sandbox.settings.tenant(qmatic_sandbox.tenant).cap("any", "service") == 0


def _reserve_keys(sandbox: SandboxServer) -> set[str]:
    slot = sandbox.free_slots(limit=1)[0]
    body = {
        "branchId": slot["branchId"],
        "serviceId": slot["serviceId"],
        "timeSlot": {"startTime": slot["startTime"], "endTime": slot["endTime"]},
    }
    headers = sandbox.api_headers(sandbox.get_token(["book"]))
    response = requests.post(sandbox.base_url + contract.RESERVE.path, json=body, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    return set(response.json())


@pytest.mark.parametrize("qmatic_answer_shape", ["public", "rich"])
def test_qmatic_answer_shape_runs_a_test_in_either_shape(
    qmatic_sandbox: SandboxServer, qmatic_answer_shape: str
) -> None:
    keys = _reserve_keys(qmatic_sandbox)
    assert ("status" in keys) is (qmatic_answer_shape == "rich")


def test_make_qmatic_sandbox_with_moved_paths_and_tenant_settings(
    make_qmatic_sandbox: Callable[..., SandboxServer],
) -> None:
    moved = make_qmatic_sandbox(
        moved_paths={"reserve": "/external/v2/reservations"}, answer_shape="rich", required_questions=["q1"]
    )
    conn = json.loads(os.environ["AIRFLOW_CONN_QMATIC_DEFAULT"])
    assert conn["extra"]["endpoints"] == {"reserve": "/external/v2/reservations"}
    assert moved.path("reserve") == "/external/v2/reservations"
    assert moved.settings.required_questions == ("q1",)
    with pytest.raises(ValueError, match="moved_paths cannot change at run time"):
        moved.configure(moved_paths={})


def test_conn_uri(qmatic_sandbox: SandboxServer) -> None:
    parts = urlsplit(qmatic_sandbox.conn_uri)
    assert parts.scheme == "qmatic"
    assert unquote(parts.username or "") == qmatic_sandbox.client_id
    assert unquote(parts.password or "") == qmatic_sandbox.client_secret
    assert parse_qs(parts.query)["base_url"] == [qmatic_sandbox.base_url]


@pytest.mark.airflow
def test_airflow_parses_both_connection_forms(qmatic_sandbox: SandboxServer) -> None:
    from airflow.models.connection import Connection

    for conn in (
        Connection.from_json(qmatic_sandbox.conn_json, conn_id="qmatic_default"),
        Connection(conn_id="qmatic_default", uri=qmatic_sandbox.conn_uri),
    ):
        assert conn.conn_type == "qmatic"
        assert conn.login == qmatic_sandbox.client_id
        assert conn.password == qmatic_sandbox.client_secret
        assert conn.extra_dejson == {
            "tenant": qmatic_sandbox.tenant,
            "system_id": qmatic_sandbox.system_id,
            "base_url": qmatic_sandbox.base_url,
        }


def test_connection_env_for_another_conn_id(qmatic_sandbox: SandboxServer) -> None:
    env = qmatic_sandbox.connection_env("qmatic_bulk")
    assert list(env) == ["AIRFLOW_CONN_QMATIC_BULK"]


def test_make_qmatic_sandbox(make_qmatic_sandbox: Callable[..., SandboxServer]) -> None:
    big = make_qmatic_sandbox(slot_capacity=5000, requests_per_minute=0, conn_id="qmatic_big")
    assert json.loads(os.environ["AIRFLOW_CONN_QMATIC_BIG"])["extra"]["base_url"] == big.base_url
    assert big.free_slots(limit=1)[0]["available"] == 5000
    quiet = make_qmatic_sandbox(SandboxSettings(seed=3), set_env=False)
    assert quiet.base_url != big.base_url
    assert quiet.settings.seed == 3
    assert (
        "AIRFLOW_CONN_QMATIC_DEFAULT" not in os.environ
        or json.loads(os.environ["AIRFLOW_CONN_QMATIC_DEFAULT"])["extra"]["base_url"] != quiet.base_url
    )


def test_sandbox_server_refuses_remote_hosts() -> None:
    with pytest.raises(ValueError, match="allow_remote"):
        SandboxServer(host="0.0.0.0")


def test_stop_works_with_open_keep_alive_connections() -> None:
    import time

    server = SandboxServer().start()
    session = requests.Session()
    assert session.get(server.base_url + "/_sandbox/health", timeout=10).status_code == 200
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 20  # not the keep-alive timeout; generous for a busy machine
    assert not server.running
    with pytest.raises(requests.ConnectionError):
        session.get(server.base_url + "/_sandbox/health", timeout=5)
