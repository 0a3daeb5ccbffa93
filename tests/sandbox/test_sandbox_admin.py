"""The /_sandbox/ introspection endpoints, the clock, reset, and the no-Airflow rule."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import requests
from sandbox_helpers import DEMO, Api

from airflow_provider_qmatic.api import contract
from airflow_provider_qmatic.sandbox import SandboxServer


def test_stats_tokens_and_appointments(sandbox: SandboxServer, api: Api, slot: dict[str, Any]) -> None:
    api.get(contract.BRANCHES.path)
    api.book(slot)
    stats = sandbox.stats()
    assert stats["token_requests"] == 1
    assert stats["requests"]["branches"] == {"200": 1}
    assert stats["requests"]["reserve"] == {"201": 1}
    assert stats["requests"]["confirm"] == {"201": 1}
    assert stats["appointments"] == {"CONFIRMED": 1}
    (token,) = sandbox.tokens()
    assert token["access_token"] == api.token
    assert token["client_id"] == DEMO.client_id
    assert token["tenant"] == "demo"
    assert token["expired"] is False
    (appointment,) = sandbox.appointments()
    assert appointment["tenant"] == "demo"
    assert appointment["clientId"] == DEMO.client_id
    assert sandbox.appointments(status="RELEASED") == []
    with pytest.raises(ValueError, match="status"):
        sandbox.appointments(status="BOGUS")


def test_recent_requests_redact_credentials(sandbox: SandboxServer, api: Api) -> None:
    api.get(contract.BRANCHES.path, headers={"Accept-Language": "de_DE"})
    log = sandbox.recent_requests()
    assert [e["endpoint"] for e in log] == ["token", "branches"]
    assert log[1]["headers"]["accept-language"] == "de_DE"
    assert log[1]["headers"]["authorization"] == "Bearer <redacted>"
    assert api.token not in str(log)
    assert DEMO.client_secret not in str(log)


def test_seed_and_slots(sandbox: SandboxServer) -> None:
    seed = sandbox.seed()
    assert len(seed["branches"]) == 3
    assert seed["slotCount"] > 1000
    assert all("client_secret" not in c for c in seed["clients"])
    branch = seed["branches"][1]
    service = branch["services"][-1]
    slots = sandbox.free_slots(branch["id"], service["id"], limit=5)
    assert len(slots) == 5
    assert {s["branchId"] for s in slots} == {branch["id"]}
    assert {s["serviceId"] for s in slots} == {service["id"]}
    assert sandbox.free_slots(limit=0) == []


def test_reset_restores_everything(sandbox: SandboxServer, api: Api, slot: dict[str, Any]) -> None:
    api.book(slot)
    sandbox.configure(fail_rate=0.5, slot_capacity=9)
    sandbox.advance_clock(100)
    sandbox.reset()
    assert sandbox.appointments() == []
    assert sandbox.tokens() == []
    stats = sandbox.stats()
    assert stats["requests"] == {}
    assert stats["clock_offset"] == 0
    assert sandbox.admin.config()["fail_rate"] == 0
    assert sandbox.admin.config()["slot_capacity"] == 2


def test_reset_can_keep_tokens(sandbox: SandboxServer, api: Api) -> None:
    sandbox.reset(keep_tokens=True)
    assert api.get(contract.BRANCHES.path).status_code == 200


def test_clock(sandbox: SandboxServer) -> None:
    assert sandbox.advance_clock(30) == 30
    assert sandbox.advance_clock(0.5) == 30.5
    response = requests.post(sandbox.base_url + "/_sandbox/clock", json={"advance": -1}, timeout=10)
    assert response.status_code == 400
    now = requests.get(sandbox.base_url + "/_sandbox/clock", timeout=10).json()
    assert now["offset"] == 30.5


def test_config_answers_the_current_configuration(sandbox: SandboxServer) -> None:
    config = sandbox.configure(requests_per_minute=6000, reservation_hold=2)
    assert config["requests_per_minute"] == 6000
    assert config["reservation_hold"] == 2
    assert "client_secret" not in str(config)
    with pytest.raises(ValueError, match="clients"):
        sandbox.configure(clients=[])
    with pytest.raises(ValueError, match="token_lifetime"):
        sandbox.configure(token_lifetime=0)


def test_changing_the_seed_rebuilds_the_data(sandbox: SandboxServer) -> None:
    before = sandbox.seed()["branches"][0]["id"]
    sandbox.configure(seed=42, branch_count=4)
    after = sandbox.seed()["branches"]
    assert len(after) == 4
    assert after[0]["id"] != before


def test_openapi_docs_are_served(sandbox: SandboxServer) -> None:
    assert requests.get(sandbox.base_url + "/_sandbox/openapi.json", timeout=10).status_code == 200


def test_the_sandbox_never_imports_airflow_and_the_plugin_is_light() -> None:
    code = (
        "import sys\n"
        "import airflow_provider_qmatic.testing\n"
        "assert 'fastapi' not in sys.modules and 'uvicorn' not in sys.modules, 'plugin imports fastapi'\n"
        "from airflow_provider_qmatic.sandbox import SandboxServer, SandboxSettings\n"
        "from airflow_provider_qmatic.sandbox.app import create_app\n"
        "from airflow_provider_qmatic.sandbox import cli\n"
        "with SandboxServer() as s:\n"
        "    s.get_token()\n"
        "bad = sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.'))\n"
        "assert not bad, bad\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
