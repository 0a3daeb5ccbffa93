"""Service combinations in the sandbox: switched on per system, configured per branch, the branch
listing and the combination time slots in the public shape, and the refusals. Over HTTP against the
session sandbox (reset, with its settings, before each test)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sandbox_helpers import ACME, SETTINGS, Api, error_of, reserve_body

from airflow_provider_qmatic.api import contract
from airflow_provider_qmatic.sandbox import SandboxServer
from airflow_provider_qmatic.sandbox.cli import build_parser, settings_from_args

LISTING = contract.SERVICE_COMBINATIONS.path
TIMESLOTS = contract.COMBINATION_TIMESLOTS.path


def _branch(sandbox: SandboxServer) -> dict[str, Any]:
    """The first seeded branch, with at least three services (the seed gives 2 to 4)."""
    branch: dict[str, Any] = next(b for b in sandbox.seed()["branches"] if len(b["services"]) >= 3)
    return branch


def _switch_on(sandbox: SandboxServer, branch: dict[str, Any]) -> list[dict[str, Any]]:
    """Combinations on for every tenant; the branch's first two services combine (by name)."""
    pair = branch["services"][:2]
    sandbox.configure(
        service_combinations=True, combination_branches={branch["name"]: [s["name"] for s in pair]}
    )
    return list(pair)


def _slots(api: Api, branch_id: str, service_ids: list[str], day: str, number: int | None = None) -> Any:
    params: dict[str, Any] = {"serviceId": service_ids, "from": day, "to": day}
    if number is not None:
        params["numberOfReservations"] = number
    return api.get(TIMESLOTS.format(branch_id=branch_id), params=params)


def test_switched_off_every_combination_call_is_refused(sandbox: SandboxServer) -> None:
    api = Api(sandbox)
    branch = _branch(sandbox)
    ids = [s["id"] for s in branch["services"][:2]]
    for response in (api.get(LISTING), _slots(api, branch["id"], ids, branch["firstDay"])):
        status, code, message = error_of(response)
        assert (status, code) == (400, "invalid_request")
        assert "not switched on" in message


def test_the_listing_names_the_configured_branch_in_the_public_shape(sandbox: SandboxServer) -> None:
    branch = _branch(sandbox)
    pair = _switch_on(sandbox, branch)
    response = Api(sandbox).get(LISTING)
    assert response.status_code == 200, response.text
    (item,) = response.json()  # only configured branches
    assert set(item) == {"branchId", "serviceCombinations"}
    assert item["branchId"] == branch["id"]
    (combination,) = item["serviceCombinations"]
    assert set(combination) == {
        "resourceTypeId",
        "combinableServices",
        "unCombinableServices",
        "combinedServices",
    }
    assert combination["combinableServices"] == [s["id"] for s in pair]
    assert combination["unCombinableServices"] == [s["id"] for s in branch["services"][2:]]
    assert isinstance(combination["resourceTypeId"], str)


def test_combination_slots_last_for_all_services_and_need_room_in_each(sandbox: SandboxServer) -> None:
    branch = _branch(sandbox)
    pair = _switch_on(sandbox, branch)
    api = Api(sandbox)
    ids = [s["id"] for s in pair]
    day = branch["firstDay"]
    total = timedelta(minutes=sum(s["durationMinutes"] for s in pair))
    shortest = min(pair, key=lambda s: s["durationMinutes"])

    response = _slots(api, branch["id"], ids, day)
    assert response.status_code == 200, response.text
    slots = response.json()
    assert slots
    assert all(set(s) == {"startTime", "endTime"} for s in slots)  # the public shape
    starts = [datetime.fromisoformat(s["startTime"]) for s in slots]
    for slot, start in zip(slots, starts, strict=True):
        assert datetime.fromisoformat(slot["endTime"]) - start == total
        assert start.date().isoformat() == day
    # On the shortest service's grid, and never past closing: the last start leaves room for all.
    single = sandbox.free_slots(branch_id=branch["id"], service_id=shortest["id"], limit=1000)
    grid = {s["startTime"] for s in single if s["startTime"].startswith(day)}
    assert {s["startTime"] for s in slots} <= grid
    last_end = max(datetime.fromisoformat(s["endTime"]) for s in single if s["startTime"].startswith(day))
    assert max(starts) + total <= last_end

    # Two people for each service: the page's sum is 4; the seed's slots hold 2.
    assert [s["startTime"] for s in _slots(api, branch["id"], ids, day, number=4).json()] == [
        s["startTime"] for s in slots
    ]
    assert _slots(api, branch["id"], ids, day, number=6).json() == []

    # Fill the other service's slot where the first combination slot ends: that start goes.
    other = pair[1] if shortest is pair[0] else pair[0]
    first_start = starts[0]
    inside = next(
        s
        for s in sandbox.free_slots(branch_id=branch["id"], service_id=other["id"], limit=1000)
        if first_start <= datetime.fromisoformat(s["startTime"]) < first_start + total
    )
    taken = api.post(contract.RESERVE.path, json=reserve_body(inside, number=2))
    assert taken.status_code == 201, taken.text
    after = {s["startTime"] for s in _slots(api, branch["id"], ids, day).json()}
    assert slots[0]["startTime"] not in after
    assert after < {s["startTime"] for s in slots}


def test_services_not_configured_together_are_refused(sandbox: SandboxServer) -> None:
    branch = _branch(sandbox)
    pair = _switch_on(sandbox, branch)
    api = Api(sandbox)
    third = branch["services"][2]["id"]
    status, code, message = error_of(_slots(api, branch["id"], [pair[0]["id"], third], branch["firstDay"]))
    assert (status, code) == (400, "invalid_request")
    assert message.startswith("serviceId:")
    assert third in message
    assert branch["id"] in message
    # Another branch has none configured.
    other = next(b for b in sandbox.seed()["branches"] if b["id"] != branch["id"])
    ids = [s["id"] for s in other["services"][:2]]
    assert error_of(_slots(api, other["id"], ids, other["firstDay"]))[:2] == (400, "invalid_request")
    # A service the branch does not offer: 404, as the single-service call.
    unknown = "00000000-0000-4000-8000-000000000000"
    assert error_of(_slots(api, branch["id"], [pair[0]["id"], unknown], branch["firstDay"]))[:2] == (
        404,
        "not_found",
    )
    assert error_of(api.get(TIMESLOTS.format(branch_id=branch["id"])))[:2] == (400, "invalid_request")


def test_switched_on_per_system(sandbox: SandboxServer) -> None:
    branch = _branch(sandbox)
    _switch_on(sandbox, branch)
    sandbox.configure(tenant_config={"acme": {"service_combinations": False}})
    assert Api(sandbox).get(LISTING).status_code == 200
    assert error_of(Api(sandbox, ACME).get(LISTING))[:2] == (400, "invalid_request")


def test_the_booking_rows_are_not_served_yet(sandbox: SandboxServer) -> None:
    """Booking several services is the next part: its guessed paths answer 404, never a fake."""
    _switch_on(sandbox, _branch(sandbox))
    response = Api(sandbox).post(contract.COMBINATION_RESERVE.path, json={})
    assert error_of(response)[:2] == (404, "not_found")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"combination_branches": {"Nowhere": ["a", "b"]}}, "no seeded branch"),
        ({"combination_branches": {"Stockholm City": ["Passport application"]}}, "two or more"),
        ({"combination_branches": {"Stockholm City": ["Passport application", "Tax"]}}, "no service Tax"),
        ({"service_combinations": "yes"}, "service_combinations"),
    ],
)
def test_bad_combination_settings_name_the_setting(
    sandbox: SandboxServer, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(Exception, match=message):
        sandbox.configure(**changes)


def test_the_command_line_switches_combinations_on_and_configures_a_branch() -> None:
    args = build_parser().parse_args(
        ["--service-combinations", "--combination", "Stockholm City=Passport application, Tax advice"]
    )
    settings = settings_from_args(args)
    assert settings.service_combinations is True
    assert settings.combination_branches == {"Stockholm City": ("Passport application", "Tax advice")}
    assert SETTINGS.service_combinations is False
