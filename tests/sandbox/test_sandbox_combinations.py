"""Service combinations in the sandbox: switched on per system, configured per branch, the branch
listing and the combination time slots in the public shape, and the refusals. Over HTTP against the
session sandbox (reset, with its settings, before each test)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from sandbox_helpers import ACME, CUSTOMER, SETTINGS, Api, error_of, reserve_body

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
    sandbox.configure(service_combinations=False)
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


def _combination_body(branch: dict[str, Any], ids: list[str], slot: dict[str, Any], number: int = 2) -> Any:
    return {
        "branchId": branch["id"],
        "serviceIds": ids,
        "timeSlot": {"startTime": slot["startTime"], "endTime": slot["endTime"]},
        "numberOfReservations": number,
    }


def test_a_combination_is_reserved_confirmed_read_moved_and_cancelled(sandbox: SandboxServer) -> None:
    """The booking calls in the public shape: one appointment with ``services[]``, holding a place
    in every slot of each service it covers; search, get, reschedule, release and cancel."""
    branch = _branch(sandbox)
    pair = _switch_on(sandbox, branch)
    api = Api(sandbox)
    ids = [s["id"] for s in pair]
    first, second = _slots(api, branch["id"], ids, branch["firstDay"]).json()[:2]
    combi = contract.COMBINATION_RESERVE.path

    reserved = api.post(combi, json=_combination_body(branch, ids, first))
    assert reserved.status_code == 201, reserved.text
    body = reserved.json()
    assert "service" not in body
    assert [s["id"] for s in body["services"]] == ids
    assert (body["timeSlot"], body["numberOfReservations"], body["customer"]) == (
        {"startTime": first["startTime"], "endTime": first["endTime"]},
        2,
        None,
    )
    # Each service's slots inside the window now hold one person (the sum 2 over two services).
    inside = [
        s
        for sid in ids
        for s in sandbox.free_slots(branch_id=branch["id"], service_id=sid, limit=1000)
        if first["startTime"] <= s["startTime"] < first["endTime"]
    ]
    assert inside
    assert {s["available"] for s in inside} == {1}

    appointment_id = body["appointmentId"]
    confirm = contract.COMBINATION_CONFIRM.path.format(appointment_id=appointment_id)
    confirmed = api.post(confirm, json={"customer": CUSTOMER})
    assert confirmed.status_code == 201, confirmed.text
    got = api.get(contract.COMBINATION_GET.path.format(appointment_id=appointment_id)).json()
    assert got["customer"]["firstName"] == "Ada"
    assert [s["id"] for s in got["services"]] == ids
    found = api.request(
        "GET",
        contract.COMBINATION_SEARCH.path,
        json={"customer": {"personalIdentifier": CUSTOMER["personalIdentifier"]}},
    ).json()
    assert [a["appointmentId"] for a in found] == [appointment_id]

    # Reschedule onto a new combination reservation: the old places are freed.
    new = api.post(combi, json=_combination_body(branch, ids, second)).json()
    moved = api.put(
        contract.COMBINATION_RESCHEDULE.path.format(appointment_id=appointment_id),
        json={"reservationId": new["appointmentId"]},
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["timeSlot"]["startTime"] == second["startTime"]
    # A single-service reservation cannot take a combination's place: the services never change.
    single = api.reserve(
        {
            "branchId": branch["id"],
            "serviceId": ids[0],
            **sandbox.free_slots(branch_id=branch["id"], service_id=ids[0], limit=1)[0],
        }
    )
    refused = api.put(
        contract.COMBINATION_RESCHEDULE.path.format(appointment_id=appointment_id),
        json={"reservationId": single["appointmentId"]},
    )
    assert error_of(refused)[:2] == (409, "invalid_state")
    # Release and cancel are shared with single appointments.
    assert api.delete(contract.RELEASE.path.format(appointment_id=single["appointmentId"])).status_code == 204
    assert api.delete(contract.CANCEL.path.format(appointment_id=appointment_id)).status_code == 204
    assert sandbox.appointments("RESERVED") == []
    every = [s for sid in ids for s in sandbox.free_slots(branch_id=branch["id"], service_id=sid, limit=1000)]
    assert {s["available"] for s in every} == {2}


def test_a_combination_reserve_is_refused_for_services_not_combined_or_a_tenant_without(
    sandbox: SandboxServer,
) -> None:
    sandbox.configure(service_combinations=False)
    branch = _branch(sandbox)
    api = Api(sandbox)
    ids = [s["id"] for s in branch["services"][:2]]
    slot = {"startTime": "2031-01-07T09:00:00+01:00", "endTime": "2031-01-07T09:30:00+01:00"}
    combi = contract.COMBINATION_RESERVE.path
    status, code, message = error_of(api.post(combi, json=_combination_body(branch, ids, slot)))
    assert (status, code) == (400, "invalid_request")
    assert "not switched on" in message
    pair = _switch_on(sandbox, branch)
    third = branch["services"][2]["id"]
    status, code, message = error_of(
        api.post(combi, json=_combination_body(branch, [pair[0]["id"], third], slot))
    )
    assert (status, code) == (400, "invalid_request")
    assert third in message
    assert branch["id"] in message
    assert error_of(api.post(combi, json={**_combination_body(branch, ids, slot), "serviceIds": ids[:1]}))[
        :2
    ] == (
        400,
        "invalid_request",
    )
    # Off: every combination call is refused, the single-service ones still answer.
    sandbox.configure(service_combinations=False)
    for response in (
        api.get(contract.COMBINATION_GET.path.format(appointment_id="x")),
        api.request(
            "GET", contract.COMBINATION_SEARCH.path, json={"customer": {"personalIdentifier": "A" * 12}}
        ),
    ):
        assert error_of(response)[:2] == (400, "invalid_request")
    assert (
        api.post(contract.SEARCH.path, json={"customer": {"personalIdentifier": "A" * 12}}).status_code == 200
    )
    assert sandbox.appointments() == []


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
    args = build_parser().parse_args(["--combination", "Stockholm City=Passport application, Tax advice"])
    settings = settings_from_args(args)
    assert settings.service_combinations is True
    assert settings.combination_branches == {"Stockholm City": ("Passport application", "Tax advice")}
    # By default every branch's services combine; --no-service-combinations switches them off.
    assert (SETTINGS.service_combinations, SETTINGS.combination_branches) == (True, None)
    assert settings_from_args(build_parser().parse_args([])).combination_branches is None
    assert (
        settings_from_args(build_parser().parse_args(["--no-service-combinations"])).service_combinations
        is False
    )
