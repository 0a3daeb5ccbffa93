"""qmatic-probe against a scripted loopback server whose answers do not have Part B's shape: the
field names missing or unexpected are listed, the values never (planted personal data included),
a 405 names the override, and each operation is asked once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest

from airflow_provider_qmatic.probe import APPOINTMENT, SHAPES, check_shape
from tests.probe.conftest import run_probe
from tests.scripted_server import Reply, ScriptedServer, scripted, token_reply

pytestmark = pytest.mark.airflow

SECRET = "scripted-SECRET-0b9e77d1c4"
PLANTED = [
    "planted.manager@example.org",
    "Plantedfirst",
    "Plantedsson",
    "planted.customer@example.org",
    "+46 70 123 45 67",
    "19850312PLANTED7734",
    "Planted Passport Desk",
]
BRANCH = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


@pytest.fixture
def origin() -> Iterator[ScriptedServer]:
    yield from scripted()


def connection(server: ScriptedServer) -> str:
    return json.dumps(
        {
            "conn_type": "qmatic",
            "login": "scripted-client",
            "password": SECRET,
            "extra": {
                "tenant": "scripted",
                "system_id": "sys-scripted",
                "base_url": server.base_url,
                "credential_cache": "memory",
            },
        }
    )


def script_odd_tenant(server: ScriptedServer) -> None:
    server.script("/oauth2/token", token_reply("tok-scripted"))
    server.script(
        "/external/v1/branches",
        Reply(
            200,
            [
                {"id": BRANCH, "name": "North", "branchCode": "N1", "managerEmail": PLANTED[0]},
                {"id": "b2", "name": "South", "timeZone": "Europe/Stockholm"},
            ],
        ),
    )
    # Services without their branch (the field the client filters on), one with a planted name.
    server.script("/external/v1/services", Reply(200, [{"id": "s1", "name": PLANTED[6], "duration": 15}]))
    server.script("/external/v1/servicegroups", Reply(405, {"error": "method_not_allowed"}))
    server.script(
        "/external/v1/appointments/search",
        Reply(
            200,
            {
                "appointmentId": "a1",
                "timeSlot": {"startTime": "2026-12-08T09:00:00+01:00"},
                "customer": {
                    "firstName": PLANTED[1],
                    "lastName": PLANTED[2],
                    "email": PLANTED[3],
                    "phoneNumber": PLANTED[4],
                    "personalIdentifier": PLANTED[5],
                },
                "branch": {"id": BRANCH, "name": "North", "manager": {"email": PLANTED[0]}},
                "numberOfReservations": 1,
            },
        ),
    )
    # Combinations switched on, no branch configured, and a field Part B does not name.
    server.script(
        "/external/v1/serviceCombination/branch",
        Reply(200, [{"branchId": BRANCH, "serviceCombinations": [], "contactEmail": PLANTED[0]}]),
    )
    server.script(
        "/external/v1/appointments/", Reply(404, {"error": "not_found", "message": f"no {PLANTED[3]}"})
    )


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "table"])
def test_odd_shapes_are_named_by_field_and_no_value_is_shown(
    origin: ScriptedServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    as_json: bool,
) -> None:
    script_odd_tenant(origin)
    run = run_probe(capsys, monkeypatch, *(["--json"] if as_json else []), conn=connection(origin))
    assert run.code == 1, run.text[-3000:]
    for value in [*PLANTED, SECRET, "tok-scripted"]:
        assert value not in run.text, value
    # One request per operation called: nothing repeated, timeslots not called without a branch.
    api = [p for p in origin.paths() if p != "/oauth2/token"]
    assert api[:3] == ["/external/v1/branches", "/external/v1/services", "/external/v1/servicegroups"]
    assert api[3].startswith("/external/v1/appointments/")  # the get of a random id
    # The combination listing; its slots not called, since no branch lists combinable services.
    assert api[4:] == ["/external/v1/appointments/search", "/external/v1/serviceCombination/branch"]
    if not as_json:
        lines = {line.split()[0]: line.split() for line in run.out.splitlines() if line.strip()}
        assert lines["branches"][4:] == ["extra", "fields", "guess", "confirmed"]
        assert lines["services"][4:] == ["differs", "page", "differs"]
        assert lines["service_groups"][3:] == ["405", "-", "guess", "differs"]
        assert lines["service_combinations"][4:] == ["extra", "fields", "page", "confirmed"]
        assert "combinations switched on; 0 branch(es) configured" in run.out
        assert "Service combinations: switched on" in run.out
        assert "missing branch; unexpected duration" in run.out
        assert 'service_groups: add "service_groups" to the connection\'s `endpoints` extra' in run.out
        return
    rows = run.rows()
    branches = rows["branches"]
    assert branches["verdict"] == "confirmed"
    assert branches["shape"] == {
        "result": "extra fields",
        "items": 2,
        "missing": [],
        "unexpected": ["branchCode", "managerEmail"],
        "problem": "",
    }
    services = rows["services"]
    assert services["verdict"] == "differs"
    assert services["shape"]["missing"] == ["branch"]
    assert services["shape"]["unexpected"] == ["duration"]
    groups = rows["service_groups"]
    assert (groups["status"], groups["verdict"]) == (405, "differs")
    assert groups["fix"] == {
        "extra": "endpoints",
        "key": "service_groups",
        "how": groups["fix"]["how"],
    }
    assert "method" in groups["note"]
    timeslots = rows["timeslots"]
    assert (timeslots["status"], timeslots["verdict"]) == (None, "unknown")
    assert "no service with its branch id" in timeslots["note"]
    assert (rows["get"]["status"], rows["get"]["verdict"]) == (404, "confirmed")
    search = rows["search"]
    assert search["verdict"] == "differs"
    assert search["shape"]["missing"] == ["timeSlot.endTime"]
    assert search["shape"]["unexpected"] == ["branch.manager"]
    assert "1 appointment(s) found" in search["note"]


def test_search_answered_404_counts_as_nothing_found(
    origin: ScriptedServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    origin.script("/oauth2/token", token_reply())
    origin.script("/external/v1/branches", Reply(200, []))
    origin.script("/external/v1/services", Reply(200, []))
    origin.script("/external/v1/servicegroups", Reply(200, []))
    origin.script("/external/v1/appointments", Reply(404, {"error": "not_found"}))
    run = run_probe(capsys, monkeypatch, "--json", conn=connection(origin))
    assert run.code == 0, run.text[-3000:]
    rows = run.rows()
    assert rows["search"]["verdict"] == "confirmed"
    assert rows["search"]["note"].startswith("nothing found, answered as 404")
    assert rows["branches"]["shape"]["result"] == "no items"
    assert rows["timeslots"]["verdict"] == "unknown"


def test_a_listing_wrapped_in_an_object_differs_and_names_its_fields() -> None:
    report = check_shape({"items": [], "total": 0, "owner": PLANTED[3]}, SHAPES["branches"], many=True)
    assert report.contradicts
    assert report.problem == "an object where Part B has a list (its fields: items, owner, total)"
    assert PLANTED[3] not in report.detail()


def test_field_names_that_are_not_plain_names_are_not_shown() -> None:
    answer = {"appointmentId": "a1", PLANTED[3]: True, "customer": {"email": PLANTED[3]}}
    report = check_shape(answer, APPOINTMENT, many=False)
    assert report.unexpected == ["<a field with an unusual name>"]
    assert PLANTED[3] not in json.dumps(report.as_dict())


def test_items_that_are_not_objects_and_nested_values_of_the_wrong_kind_differ() -> None:
    report = check_shape([{"id": "s", "name": "n", "branch": "b1"}, "s2"], SHAPES["services"], many=True)
    assert report.contradicts
    assert report.problem == "1 of 2 items are not objects; branch is a str, not an object"


def test_write_check_with_a_lost_reserve_answer_says_a_hold_may_remain(
    origin: ScriptedServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=1)
    slot = {"startTime": start.isoformat(), "endTime": (start + timedelta(minutes=15)).isoformat()}
    origin.script("/oauth2/token", token_reply())
    origin.script("/external/v1/branches/", Reply(200, [slot]))
    origin.script("/external/v1/branches", Reply(200, [{"id": BRANCH, "name": "North"}]))
    origin.script(
        "/external/v1/services",
        Reply(200, [{"id": "s1", "name": "A", "branch": {"id": BRANCH, "name": "North"}}]),
    )
    origin.script("/external/v1/servicegroups", Reply(200, []))
    origin.script("/external/v1/appointments/search", Reply(200, []))
    origin.script("/external/v1/appointments/", Reply(404, {"error": "not_found"}))
    origin.script("/external/v1/reservations", Reply(500, {"error": "internal"}))
    run = run_probe(capsys, monkeypatch, "--json", "--write-check", conn=connection(origin))
    assert run.code == 1, run.text[-3000:]
    report = run.report()
    assert report["reservation_may_be_held"] is True
    assert report["held_reservation_id"] is None
    rows = run.rows()
    assert rows["reserve"]["status"] == 500
    assert "may be held for up to 15 minutes" in rows["reserve"]["note"]
    assert rows["release"]["note"] == "not called: no reservation id came back"
    assert "A reservation may be held for up to 15 minutes" in run.err
    # A POST whose answer was lost is never repeated, and nothing is confirmed.
    assert origin.paths().count("/external/v1/reservations") == 1
    assert not any(p.endswith("/confirm") for p in origin.paths())
