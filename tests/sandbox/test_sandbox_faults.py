"""Seeded fault injection: 500/503 rates, dropped connections, commit-then-fail, latency, aiming."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
import requests
from sandbox_helpers import CUSTOMER, DEMO, Api, basic, reserve_body

from airflow_provider_qmatic.api import contract
from airflow_provider_qmatic.sandbox import SandboxServer


def statuses(api: Api, n: int) -> list[int | str]:
    out: list[int | str] = []
    for _ in range(n):
        try:
            out.append(api.get(contract.BRANCHES.path).status_code)
        except requests.ConnectionError:
            out.append("dropped")
    return out


def test_500_and_503_fractions_are_roughly_as_configured_and_reproducible(
    sandbox: SandboxServer, api: Api
) -> None:
    knobs = {"fail_rate": 0.2, "unavailable_rate": 0.1, "fault_seed": 7}
    sandbox.configure(**knobs)
    first = statuses(api, 300)
    counts = Counter(first)
    assert 40 <= counts[500] <= 80, counts
    assert 15 <= counts[503] <= 45, counts
    assert counts[200] == 300 - counts[500] - counts[503]
    stats = sandbox.stats()
    assert stats["faults"] == {"error_500": counts[500], "error_503": counts[503]}
    assert stats["requests"]["branches"] == {str(k): v for k, v in counts.items()}
    # Same seed, same sequence.
    sandbox.reset()
    sandbox.configure(**knobs)
    assert statuses(Api(sandbox), 300) == first


def test_fault_bodies(sandbox: SandboxServer, api: Api) -> None:
    sandbox.configure(fail_rate=1.0)
    response = api.get(contract.BRANCHES.path)
    assert response.status_code == 500
    assert response.json()["error"] == "internal_error"
    sandbox.configure(fault_body="empty")
    response = api.get(contract.BRANCHES.path)
    assert response.status_code == 500
    assert response.content == b""
    sandbox.configure(fault_body="html", fail_rate=0.0, unavailable_rate=1.0)
    response = api.get(contract.BRANCHES.path)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")


def test_dropped_connection_is_a_connection_error(sandbox: SandboxServer, api: Api) -> None:
    sandbox.configure(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        api.get(contract.BRANCHES.path)
    with pytest.raises(requests.ConnectionError):  # also on a fresh connection
        requests.get(sandbox.base_url + contract.BRANCHES.path, headers=api.headers, timeout=10)
    stats = sandbox.stats()
    assert stats["faults"] == {"drop": 2}
    assert stats["requests"]["branches"] == {"dropped": 2}
    sandbox.configure(drop_rate=0.0)
    assert api.get(contract.BRANCHES.path).status_code == 200  # the session recovers


def test_commit_then_500(sandbox: SandboxServer, api: Api, slot: dict[str, Any]) -> None:
    sandbox.configure(commit_then_fail_rate=1.0, commit_then_fail_mode="500")
    response = api.post(contract.RESERVE.path, json=reserve_body(slot))
    assert response.status_code == 500
    (stored,) = sandbox.appointments()
    assert stored["status"] == "RESERVED"  # the write happened
    confirm = api.post(
        contract.CONFIRM.path.format(appointment_id=stored["appointmentId"]), json={"customer": CUSTOMER}
    )
    assert confirm.status_code == 500
    assert sandbox.appointments()[0]["status"] == "CONFIRMED"
    # Reads are never "commit then fail"; a failing write is answered truthfully.
    assert api.get(contract.GET.path.format(appointment_id=stored["appointmentId"])).status_code == 200
    again = api.post(
        contract.CONFIRM.path.format(appointment_id=stored["appointmentId"]), json={"customer": CUSTOMER}
    )
    assert again.status_code == 409
    assert sandbox.stats()["faults"] == {"commit_then_fail_500": 2}


def test_commit_then_drop(sandbox: SandboxServer, api: Api, slot: dict[str, Any]) -> None:
    booked = api.book(slot)
    sandbox.configure(commit_then_fail_rate=1.0, commit_then_fail_mode="drop")
    with pytest.raises(requests.ConnectionError):
        api.delete(contract.GET.path.format(appointment_id=booked["appointmentId"]))
    assert sandbox.appointments()[0]["status"] == "CANCELLED"
    assert sandbox.stats()["faults"] == {"commit_then_fail_drop": 1}


def test_commit_then_fail_both_modes(sandbox: SandboxServer, api: Api) -> None:
    sandbox.configure(commit_then_fail_rate=1.0, commit_then_fail_mode="both", slot_capacity=100)
    slot = sandbox.free_slots(limit=1)[0]
    seen = Counter()
    for _ in range(30):
        try:
            seen[api.post(contract.RESERVE.path, json=reserve_body(slot)).status_code] += 1
        except requests.ConnectionError:
            seen["dropped"] += 1
    assert seen[500] > 0
    assert seen["dropped"] > 0
    assert seen[500] + seen["dropped"] == 30
    assert len(sandbox.appointments()) == 30


def test_faults_aimed_at_one_endpoint(sandbox: SandboxServer, api: Api, slot: dict[str, Any]) -> None:
    sandbox.configure(fail_rate=1.0, fault_endpoints=["confirm"])
    assert api.get(contract.BRANCHES.path).status_code == 200
    reserved = api.reserve(slot)
    confirm = api.post(
        contract.CONFIRM.path.format(appointment_id=reserved["appointmentId"]), json={"customer": CUSTOMER}
    )
    assert confirm.status_code == 500
    assert sandbox.appointments()[0]["status"] == "RESERVED"  # a plain 500 is not processed


def test_token_endpoint_and_admin_are_spared_unless_asked(sandbox: SandboxServer, api: Api) -> None:
    sandbox.configure(fail_rate=1.0)
    assert sandbox.get_token()  # token endpoint: faults off by default
    assert sandbox.stats()["faults"] == {}  # /_sandbox/ is never faulted
    sandbox.configure(faults_on_token=True)
    response = requests.post(
        sandbox.base_url + contract.TOKEN.path,
        headers={"Authorization": basic(DEMO.client_id, DEMO.client_secret), "X-ACCOUNT": DEMO.tenant},
        data={"grant_type": "client_credentials"},
        timeout=10,
    )
    assert response.status_code == 500


def test_latency(sandbox: SandboxServer, api: Api) -> None:
    sandbox.configure(latency_ms=150, latency_jitter_ms=50)
    started = time.monotonic()
    assert api.get(contract.BRANCHES.path).status_code == 200
    elapsed = time.monotonic() - started
    assert elapsed >= 0.15
    assert elapsed < 10  # a loaded machine adds delay; only the lower bound is the sandbox's doing
    assert sandbox.stats()["faults"] == {"latency": 1}


def test_bad_fault_settings_are_refused(sandbox: SandboxServer) -> None:
    with pytest.raises(ValueError, match="fail_rate"):
        sandbox.configure(fail_rate=1.5)
    with pytest.raises(ValueError, match="at most 1"):
        sandbox.configure(fail_rate=0.6, drop_rate=0.6)
    with pytest.raises(ValueError, match="fault_endpoints"):
        sandbox.configure(fault_endpoints=["nope"])
    with pytest.raises(ValueError, match="unknown setting"):
        sandbox.configure(fial_rate=0.1)
    assert sandbox.admin.config()["fail_rate"] == 0.0
