"""Reading service combinations through the client and the hook, against one sandbox with
combinations switched on and one branch configured; the answer models' leniency; bad service ids
refused before any request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest

from airflow_provider_qmatic.api.models import BranchCombinations
from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.exceptions import QmaticConfigError, QmaticError
from airflow_provider_qmatic.hooks.qmatic import QmaticHook
from airflow_provider_qmatic.sandbox import SandboxServer, SandboxSettings
from airflow_provider_qmatic.state.tokens import MemoryTokenCache

SETTINGS = SandboxSettings(requests_per_minute=0, token_requests_per_second=0, service_combinations=True)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(SETTINGS) as server:
        yield server


@pytest.fixture
def branch(sandbox: SandboxServer) -> dict[str, Any]:
    """The first branch, its first two services configured to combine (run-time settings)."""
    sandbox.reset()
    found: dict[str, Any] = sandbox.seed()["branches"][0]
    sandbox.configure(combination_branches={found["id"]: [s["id"] for s in found["services"][:2]]})
    return found


def _client(sandbox: SandboxServer) -> QmaticClient:
    who = sandbox.client
    config = ClientConfig.from_values(
        client_id=who.client_id,
        client_secret=who.client_secret,
        tenant=who.tenant,
        base_url=sandbox.base_url,
        system_id=who.system_id,
        credential_cache="memory",
    )
    return QmaticClient(config, token_cache=MemoryTokenCache())


def test_the_client_lists_combinations_and_filters_by_branch(
    sandbox: SandboxServer, branch: dict[str, Any]
) -> None:
    pair = [s["id"] for s in branch["services"][:2]]
    with _client(sandbox) as client:
        (found,) = client.list_service_combinations()
        assert found.branch_id == branch["id"]
        assert found.combinable(pair)
        assert not found.combinable([pair[0], "not-at-this-branch"])
        assert client.list_service_combinations(branch["id"]) == [found]
        other = sandbox.seed()["branches"][1]["id"]
        assert client.list_service_combinations(other) == []


@pytest.mark.airflow
def test_combination_slots_through_the_hook_with_the_sum_over_the_services(
    sandbox: SandboxServer, branch: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in sandbox.connection_env("qmatic_combi").items():
        monkeypatch.setenv(name, value)
    hook = QmaticHook("qmatic_combi")
    pair = [s["id"] for s in branch["services"][:2]]
    day = date.fromisoformat(branch["firstDay"])
    slots = hook.find_combination_timeslots(branch["id"], pair, day, day)
    minutes = sum(s["durationMinutes"] for s in branch["services"][:2])
    assert slots
    assert all(s.end_time - s.start_time == timedelta(minutes=minutes) for s in slots)
    # Two people each: the client sends 4 (the sum), which the seed's two places per slot hold;
    # three each (6) they do not.
    assert len(
        hook.find_combination_timeslots(branch["id"], pair, day, day, number_of_reservations=2)
    ) == len(slots)
    assert hook.find_combination_timeslots(branch["id"], pair, day, day, number_of_reservations=3) == []
    sent = [r for r in sandbox.recent_requests() if r["endpoint"] == "combination_timeslots"]
    assert len(sent) == 3
    (listing,) = hook.list_service_combinations(branch["id"])
    assert listing.to_xcom()["branch_id"] == branch["id"]


def test_a_tenant_without_combinations_refuses_and_the_client_says_so(
    sandbox: SandboxServer, branch: dict[str, Any]
) -> None:
    sandbox.configure(service_combinations=False)
    with _client(sandbox) as client, pytest.raises(QmaticError) as info:
        client.list_service_combinations()
    assert info.value.status == 400
    assert "not switched on" in str(info.value)


@pytest.mark.parametrize(
    ("service_ids", "fix"),
    [
        (["only-one"], "two or more"),
        (["a", "a"], "1 repeated"),
        ("a,b", "a list"),
        (["a", "b/../c"], "not a valid id"),
    ],
)
def test_bad_service_ids_are_refused_before_any_request(service_ids: Any, fix: str) -> None:
    config = ClientConfig.from_values(
        client_id="c", client_secret="s", tenant="t", base_url="http://127.0.0.1:9", system_id="x"
    )
    client = QmaticClient(config, token_cache=MemoryTokenCache())
    with pytest.raises(QmaticConfigError) as info:
        client.find_combination_timeslots("b", service_ids, date(2030, 1, 7), date(2030, 1, 7))
    assert info.value.field == "service_ids"
    assert fix in info.value.message
    assert client.api_requests == 0
    assert client.token_requests == 0


def test_the_answer_model_is_lenient() -> None:
    """Unknown fields kept, missing lists empty, a service given as an object taken by its id."""
    parsed = BranchCombinations.parse_list(
        json.loads(
            '[{"branchId": "b1", "extra": 1, "serviceCombinations": [{"combinableServices": '
            '["s1", {"id": "s2", "name": "Photo"}], "unCombinableServices": null}]}, {"branchId": "b2"}]'
        )
    )
    first, second = parsed
    (combination,) = first.service_combinations
    assert combination.combinable_services == ["s1", "s2"]
    assert combination.un_combinable_services == []
    assert combination.resource_type_id is None
    assert first.to_xcom()["extra"] == 1
    assert first.combinable(["s2", "s1"])
    assert second.service_combinations == []
    with pytest.raises(QmaticError, match="JSON array"):
        BranchCombinations.parse_list({"branchId": "b1"})
