"""Branches, services, service groups and time slots: both answer shapes, seed data, determinism,
Accept-Language, the time-slot filters, 404/400."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sandbox_helpers import ACME, SETTINGS, Api, error_of

from airflow_provider_qmatic.api import contract
from airflow_provider_qmatic.sandbox import SandboxServer, SandboxSettings
from airflow_provider_qmatic.sandbox.seed import build_seed


def test_branches(api: Api, sandbox: SandboxServer) -> None:
    response = api.get(contract.BRANCHES.path, headers={"Accept-Language": "sv_SE"})
    assert response.status_code == 200
    branches = response.json()
    assert len(branches) >= 3
    for branch in branches:
        assert set(branch) == {"id", "name", "address", "location"}  # no timeZone: no page shows one
        assert set(branch["address"]) == {"streetName", "zipCode", "city", "country"}
        assert all(isinstance(v, str) and v for v in branch["address"].values())
        assert all(isinstance(v, float) for v in branch["location"].values())
    sandbox.configure(answer_shape="rich")
    rich = api.get(contract.BRANCHES.path).json()
    assert {b["timeZone"] for b in rich} >= {"Europe/Stockholm", "America/New_York", "Europe/London"}
    assert [{k: v for k, v in b.items() if k != "timeZone"} for b in rich] == branches


@pytest.mark.parametrize("language", ["en_US", "en_UK", "fr_FR", "nl_NL", "de_DE", "it_IT", "ES_es"])
def test_accept_language_is_accepted(api: Api, language: str) -> None:
    assert api.get(contract.BRANCHES.path, headers={"Accept-Language": language}).status_code == 200


def services_at(api: Api, branch_id: str) -> list[dict[str, Any]]:
    """The tenant-wide service list filtered by branch, as a client must do."""
    return [s for s in api.get(contract.SERVICES.path).json() if s["branch"]["id"] == branch_id]


def test_services_are_listed_tenant_wide_with_their_branch(api: Api, sandbox: SandboxServer) -> None:
    branches = {b["id"]: b["name"] for b in api.get(contract.BRANCHES.path).json()}
    services = api.get(contract.SERVICES.path, headers={"Accept-Language": "en_US"}).json()
    seeded = {(b["id"], s["id"]) for b in sandbox.seed()["branches"] for s in b["services"]}
    assert {(s["branch"]["id"], s["id"]) for s in services} == seeded
    assert len(services) == len(seeded)  # one item per service and branch
    for service in services:
        assert set(service) == {"id", "name", "branch", "config"}  # no durationMinutes: no page shows one
        assert service["branch"] == {"id": service["branch"]["id"], "name": branches[service["branch"]["id"]]}
        assert service["config"] == {"maxNumberOfReservations": 0}
    for branch_id in branches:
        assert 2 <= len(services_at(api, branch_id)) <= 4
    sandbox.configure(answer_shape="rich")
    rich = api.get(contract.SERVICES.path).json()
    assert all(s["durationMinutes"] > 0 for s in rich)
    assert [{k: v for k, v in s.items() if k != "durationMinutes"} for s in rich] == services


def test_the_per_branch_service_listing_is_gone(api: Api, sandbox: SandboxServer) -> None:
    branch_id = sandbox.seed()["branches"][0]["id"]
    old = api.get(f"/external/v1/branches/{branch_id}/services")
    assert error_of(old)[:2] == (404, "not_found")


def test_service_groups_come_from_the_tenant_configuration(api: Api, sandbox: SandboxServer) -> None:
    assert api.get(contract.SERVICE_GROUPS.path).json() == []
    branch = sandbox.seed()["branches"][0]
    by_id, by_name = branch["services"][0], branch["services"][1]
    sandbox.configure(service_groups={"Identity": [by_id["id"], by_name["name"]]})
    groups = api.get(contract.SERVICE_GROUPS.path).json()
    assert len(groups) == 1
    group = groups[0]
    assert set(group) == {"id", "name", "services"}
    assert group["name"] == "Identity"
    named = {
        (s["id"], s["name"])
        for b in sandbox.seed()["branches"]
        for s in b["services"]
        if s["name"] == by_name["name"] or s["id"] == by_id["id"]
    }
    assert {(s["id"], s["name"]) for s in group["services"]} == named
    # Per tenant: another tenant sees its own (here none).
    sandbox.configure(tenant_config={"acme": {"service_groups": {}}})
    assert Api(sandbox, client=ACME).get(contract.SERVICE_GROUPS.path).json() == []
    assert api.get(contract.SERVICE_GROUPS.path).json() == groups
    with pytest.raises(ValueError, match="no seeded service"):
        sandbox.configure(service_groups={"Ghost": ["No such service"]})


def test_timeslots_are_weekday_slots_of_the_service_duration_with_offsets(
    api: Api, sandbox: SandboxServer
) -> None:
    sandbox.configure(answer_shape="rich")
    branch = api.get(contract.BRANCHES.path).json()[1]  # New York
    service = services_at(api, branch["id"])[0]
    url = contract.TIMESLOTS.path.format(branch_id=branch["id"], service_id=service["id"])
    first = (
        datetime.fromisoformat(api.get(url).json()[0]["startTime"]).date() if api.get(url).json() else None
    )
    start = first or datetime.now().date()
    response = api.get(
        url, params={"from": start.isoformat(), "to": (start + timedelta(days=13)).isoformat()}
    )
    assert response.status_code == 200
    slots = response.json()
    assert slots
    for item in slots:
        assert set(item) == {"startTime", "endTime", "available"}
        begin = datetime.fromisoformat(item["startTime"])
        end = datetime.fromisoformat(item["endTime"])
        assert begin.utcoffset() in (timedelta(hours=-5), timedelta(hours=-4))
        assert end - begin == timedelta(minutes=service["durationMinutes"])
        assert begin.weekday() < 5
        assert begin.hour >= 9
        assert end.hour * 60 + end.minute <= 17 * 60
        assert item["available"] == 2
        assert start <= begin.date() <= start + timedelta(days=13)


def test_timeslots_default_to_a_week_from_today(api: Api, sandbox: SandboxServer) -> None:
    slot = sandbox.free_slots(limit=1)[0]
    url = contract.TIMESLOTS.path.format(branch_id=slot["branchId"], service_id=slot["serviceId"])
    slots = api.get(url).json()
    days = {datetime.fromisoformat(s["startTime"]).date() for s in slots}
    assert days
    assert max(days) - min(days) < timedelta(days=7)


def test_public_slots_carry_only_times_and_a_listed_slot_is_free(api: Api, sandbox: SandboxServer) -> None:
    slot = sandbox.free_slots(limit=1)[0]
    url = contract.TIMESLOTS.path.format(branch_id=slot["branchId"], service_id=slot["serviceId"])
    day = slot["startTime"][:10]
    listed = api.get(url, params={"from": day, "to": day}).json()
    assert all(set(s) == {"startTime", "endTime"} for s in listed)
    api.reserve(slot)
    assert slot["startTime"] in {s["startTime"] for s in api.get(url, params={"from": day, "to": day}).json()}
    api.reserve(slot)
    assert slot["startTime"] not in {
        s["startTime"] for s in api.get(url, params={"from": day, "to": day}).json()
    }


def test_full_slots_are_not_listed(api: Api, sandbox: SandboxServer) -> None:
    sandbox.configure(answer_shape="rich")
    slot = sandbox.free_slots(limit=1)[0]
    url = contract.TIMESLOTS.path.format(branch_id=slot["branchId"], service_id=slot["serviceId"])
    day = slot["startTime"][:10]
    api.reserve(slot)
    listed = {s["startTime"]: s["available"] for s in api.get(url, params={"from": day, "to": day}).json()}
    assert listed[slot["startTime"]] == 1
    api.reserve(slot)
    listed = {s["startTime"]: s["available"] for s in api.get(url, params={"from": day, "to": day}).json()}
    assert slot["startTime"] not in listed


def test_timeslot_filters_number_of_reservations_and_requested_resource(
    api: Api, sandbox: SandboxServer
) -> None:
    slot = sandbox.free_slots(limit=1)[0]
    url = contract.TIMESLOTS.path.format(branch_id=slot["branchId"], service_id=slot["serviceId"])
    day = {"from": slot["startTime"][:10], "to": slot["startTime"][:10]}

    def starts(**extra: Any) -> set[str]:
        response = api.get(url, params={**day, **extra})
        assert response.status_code == 200, response.text
        return {s["startTime"] for s in response.json()}

    everything = starts()
    api.reserve(slot)  # one of two places left
    assert starts(numberOfReservations=1) == everything
    assert starts(numberOfReservations=2) == everything - {slot["startTime"]}
    assert starts(numberOfReservations=3) == set()  # more than any slot holds
    assert starts(requestedResourceId="resource-1") == everything
    sandbox.configure(max_reservations={slot["serviceId"]: 1})
    assert starts(numberOfReservations=2) == set()  # above the service's cap
    for bad in ("0", "two", "-1"):
        status, code, message = error_of(api.get(url, params={**day, "numberOfReservations": bad}))
        assert (status, code) == (400, "invalid_request")
        assert message.startswith("numberOfReservations")


def test_unknown_branch_and_service_are_404(api: Api, sandbox: SandboxServer) -> None:
    slot = sandbox.free_slots(limit=1)[0]
    unknown = "00000000-0000-4000-8000-000000000000"
    url = contract.TIMESLOTS.path.format(branch_id=slot["branchId"], service_id=unknown)
    assert error_of(api.get(url))[:2] == (404, "not_found")
    for branch_id in (unknown, "not-a-guid"):
        url = contract.TIMESLOTS.path.format(branch_id=branch_id, service_id=slot["serviceId"])
        assert error_of(api.get(url))[:2] == (404, "not_found")


def test_bad_dates_are_400_naming_the_parameter(api: Api, sandbox: SandboxServer) -> None:
    slot = sandbox.free_slots(limit=1)[0]
    url = contract.TIMESLOTS.path.format(branch_id=slot["branchId"], service_id=slot["serviceId"])
    status, code, message = error_of(api.get(url, params={"from": "01/12/2026"}))
    assert (status, code) == (400, "invalid_request")
    assert message.startswith("from")
    status, code, message = error_of(api.get(url, params={"from": "2026-12-10", "to": "2026-12-01"}))
    assert (status, code) == (400, "invalid_request")
    assert message.startswith("to")


def test_same_seed_same_data() -> None:
    now = datetime.now().astimezone()
    one, two = build_seed(SETTINGS, now), build_seed(SETTINGS, now)
    assert one == two
    other = build_seed(SandboxSettings(seed=1), now)
    assert {b.id for b in other.branches}.isdisjoint({b.id for b in one.branches})


def test_two_servers_with_the_same_seed_serve_the_same_data(sandbox: SandboxServer) -> None:
    with SandboxServer(SETTINGS) as twin:
        assert twin.seed()["branches"] == sandbox.seed()["branches"]
        assert twin.free_slots(limit=50) == sandbox.free_slots(limit=50)
        mine, theirs = Api(sandbox), Api(twin)
        branch = mine.get(contract.BRANCHES.path).json()[2]
        assert theirs.get(contract.BRANCHES.path).json()[2] == branch
        assert mine.get(contract.SERVICES.path).json() == theirs.get(contract.SERVICES.path).json()
        service = services_at(mine, branch["id"])[0]
        url = contract.TIMESLOTS.path.format(branch_id=branch["id"], service_id=service["id"])
        assert mine.get(url).json() == theirs.get(url).json()


def weekdays(first: date, weeks: int) -> set[str]:
    """The Monday-to-Friday dates of ``weeks`` weeks from ``first``: always ``5 * weeks`` of them."""
    days = (first + timedelta(days=n) for n in range(7 * weeks))
    return {day.isoformat() for day in days if day.weekday() < 5}


def test_branch_count_weeks_and_capacity_are_settings() -> None:
    """A week of slots is five weekdays per branch, counted from that branch's own first day.

    Each branch starts tomorrow in its own zone. While Stockholm's date is a day ahead of New
    York's (23:00 to 05:00 UTC in winter) their windows start a day apart, and together they
    span six weekdays (a Monday and the next Monday). The window is right; "five" holds only
    per branch.
    """
    with SandboxServer(branch_count=5, weeks=1, slot_capacity=5000) as server:
        seed = server.seed()
        assert len(seed["branches"]) == 5
        assert seed["slotCapacity"] == 5000
        assert server.free_slots(limit=1)[0]["available"] == 5000
        for branch in seed["branches"]:
            slots = server.free_slots(branch_id=branch["id"], limit=100_000)
            # startTime carries the branch's offset, so its date is the branch's local date.
            days = {s["startTime"][:10] for s in slots}
            assert days == weekdays(date.fromisoformat(branch["firstDay"]), 1), branch["name"]


@pytest.mark.parametrize("day", range(7))
@pytest.mark.parametrize("utc_hour", [1, 12, 23])
def test_each_branch_gets_its_weekdays_from_tomorrow_in_its_zone_on_any_day(day: int, utc_hour: int) -> None:
    """The seed at fixed instants of every weekday, including hours when the branches' zones are on
    different dates (01:00 and 23:00 UTC): each branch starts tomorrow in its own zone and has
    exactly its five weekdays, whatever day the suite runs on."""
    now = datetime(2026, 12, 7 + day, utc_hour, 30, tzinfo=timezone.utc)  # 2026-12-07 is a Monday
    seed = build_seed(SandboxSettings(branch_count=5, weeks=1), now)
    for branch in seed.branches:
        tomorrow = now.astimezone(ZoneInfo(branch.time_zone)).date() + timedelta(days=1)
        assert seed.first_days[branch.id] == tomorrow
        days = {
            slot.start.date().isoformat()
            for service in branch.services
            for slot in seed.slots[(branch.id, service.id)]
        }
        assert days == weekdays(tomorrow, 1), (branch.name, now)
