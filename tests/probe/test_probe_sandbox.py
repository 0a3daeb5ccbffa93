"""qmatic-probe against the sandbox: the public shape confirms every row; a moved path is named with
the `endpoints` key that fixes it, and the fix works; the write check leaves nothing held and
confirms nothing; the command runs as a real process with the connection in the environment."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

from airflow_provider_qmatic.sandbox import SandboxServer, SandboxSettings
from tests.probe.conftest import Run, conn_json, run_command, run_probe

# The sandbox's limit is off and the connections pace at FAST: the probe's pacing is not what these
# tests prove (each probe run is a dozen requests, five seconds at Qmatic's 100 a minute).
pytestmark = [pytest.mark.airflow, pytest.mark.qmatic_sandbox(requests_per_minute=0)]
FAST = 6000

READS = ["branches", "services", "service_groups", "timeslots", "get", "search", "service_combinations"]
# The probe's rows: the reads, and the combination slots (called only when combinations are on).
ROWS = [*READS, "combination_timeslots"]
# Against the default sandbox (combinations on at every branch): every row confirmed.
VERDICTS = dict.fromkeys(ROWS, "confirmed")
MOVED_SERVICES = "/services"  # where the public page writes it: the most likely real correction
MOVED_RELEASE = "/external/v1/reservations/{appointment_id}"


def probe(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str, conn: str | None = None
) -> Run:
    """``run_probe`` with the connection given (or the one in the environment) paced at FAST."""
    given = conn if conn is not None else os.environ["AIRFLOW_CONN_QMATIC_DEFAULT"]
    return run_probe(capsys, monkeypatch, *args, conn=conn_json(given, requests_per_minute=FAST))


def api_counts(sandbox: SandboxServer) -> dict[str, int]:
    """Requests the sandbox processed, per operation. A 429 was not processed and the client rightly
    asks again: the session's sandbox may still count a rate-limit window of an earlier test."""
    counts = {
        op: sum(n for status, n in by_status.items() if status != "429")
        for op, by_status in sandbox.stats()["requests"].items()
        if op != "token"
    }
    return {op: n for op, n in counts.items() if n}


def test_public_shape_confirms_every_read(
    make_qmatic_sandbox: Callable[..., SandboxServer],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A private sandbox: the session's one may still take a late request of an earlier test, and
    # this test counts every request. Its tenant has service combinations switched off.
    qmatic_sandbox = make_qmatic_sandbox(service_combinations=False, requests_per_minute=0)
    assert qmatic_sandbox.settings.answer_shape == "public"
    run = probe(capsys, monkeypatch, "--json")
    assert run.code == 0, run.text[-3000:]
    rows = run.rows()
    assert list(rows) == ROWS
    assert {op: row["verdict"] for op, row in rows.items()} == {
        **VERDICTS,
        "combination_timeslots": "unknown",
    }
    # Combinations switched off: the sandbox refuses, and the probe says so.
    assert rows["service_combinations"]["status"] == 400
    assert "switched off" in rows["service_combinations"]["note"]
    assert rows["combination_timeslots"]["status"] is None
    assert rows["combination_timeslots"]["note"].startswith("not called")
    assert run.report()["service_combinations"] is False
    assert rows["get"]["status"] == 404
    assert rows["search"]["note"] == "nothing found, answered as an empty list"
    for op in ("branches", "services", "timeslots"):
        assert rows[op]["shape"]["result"] == "matches", rows[op]
        assert rows[op]["shape"]["items"] > 0
    assert {op: row["source"] for op, row in rows.items()} == {
        "branches": "guess",
        "services": "page",
        "service_groups": "guess",
        "timeslots": "guess",
        "get": "page",
        "search": "page",
        "service_combinations": "page",
        "combination_timeslots": "page",
    }
    # Each read once, nothing written.
    assert api_counts(qmatic_sandbox) == dict.fromkeys(READS, 1)
    assert run.report()["requests"]["api"] == 7
    assert qmatic_sandbox.appointments() == []
    assert qmatic_sandbox.client_secret not in run.text


def test_a_tenant_with_combinations_is_said_to_have_them_and_their_slots_are_read(
    make_qmatic_sandbox: Callable[..., SandboxServer],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sandbox = make_qmatic_sandbox(requests_per_minute=0)  # combinations on, as by default
    branch = sandbox.seed()["branches"][0]
    sandbox.configure(combination_branches={branch["id"]: [s["id"] for s in branch["services"][:2]]})
    run = probe(capsys, monkeypatch, "--json")
    assert run.code == 0, run.text[-3000:]
    rows = run.rows()
    assert list(rows) == ROWS
    combinations = rows["service_combinations"]
    assert (combinations["status"], combinations["verdict"]) == (200, "confirmed")
    assert combinations["shape"]["result"] == "matches"
    assert combinations["note"].startswith("combinations switched on; 1 branch(es) configured")
    slots = rows["combination_timeslots"]
    assert (slots["status"], slots["verdict"], slots["shape"]["result"]) == (200, "confirmed", "matches")
    assert slots["shape"]["items"] > 0
    assert run.report()["service_combinations"] is True
    assert api_counts(sandbox)["combination_timeslots"] == 1
    assert sandbox.appointments() == []  # still nothing written
    table = probe(capsys, monkeypatch)
    assert "Service combinations: switched on" in table.out


def test_table_output_lists_path_status_shape_source_verdict(
    qmatic_sandbox: SandboxServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = probe(capsys, monkeypatch)
    assert run.code == 0, run.text[-3000:]
    lines = run.out.splitlines()
    header = next(line for line in lines if line.startswith("operation"))
    assert header.split() == ["operation", "method", "path", "used", "status", "shape", "source", "verdict"]
    timeslots = next(line for line in lines if line.startswith("timeslots "))
    assert timeslots.split() == [
        "timeslots",
        "GET",
        "/external/v1/branches/{branch_id}/services/{service_id}/timeslots",
        "200",
        "matches",
        "guess",
        "confirmed",
    ]
    assert "Nothing contradicts the contract." in run.out


def test_moved_path_differs_names_the_override_and_the_override_fixes_it(
    make_qmatic_sandbox: Callable[..., SandboxServer],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sandbox = make_qmatic_sandbox(
        SandboxSettings(moved_paths={"services": MOVED_SERVICES}, requests_per_minute=0)
    )
    unaware = sandbox.connection_env(endpoints={})["AIRFLOW_CONN_QMATIC_DEFAULT"]

    run = probe(capsys, monkeypatch, conn=unaware)
    assert run.code == 1, run.text[-3000:]
    services = next(line for line in run.out.splitlines() if line.startswith("services "))
    assert services.split()[2:4] == ["/external/v1/services", "404"]
    assert services.split()[-1] == "differs"
    fix = next(line for line in run.out.splitlines() if line.startswith('  services: add "services"'))
    assert "`endpoints` extra" in fix
    assert f'try "{MOVED_SERVICES}"' in fix
    assert '"endpoints": {' in run.out

    run = probe(capsys, monkeypatch, "--json")
    assert run.code == 1
    rows = run.rows()
    assert rows["services"]["verdict"] == "differs"
    assert rows["services"]["fix"]["extra"] == "endpoints"
    assert rows["services"]["fix"]["key"] == "services"
    # No service came back, so there was nothing to ask time slots for: unknown, not a failure.
    assert rows["timeslots"]["verdict"] == "unknown"
    assert rows["timeslots"]["status"] is None
    assert {op: rows[op]["verdict"] for op in ("branches", "get", "search")} == dict.fromkeys(
        ("branches", "get", "search"), "confirmed"
    )

    fixed = conn_json(unaware, endpoints={"services": MOVED_SERVICES})
    run = probe(capsys, monkeypatch, "--json", conn=fixed)
    assert run.code == 0, run.text[-3000:]
    rows = run.rows()
    assert rows["services"]["path"] == MOVED_SERVICES
    assert rows["services"]["overridden"] is True
    assert {op: row["verdict"] for op, row in rows.items()} == VERDICTS

    run = probe(capsys, monkeypatch, conn=fixed)
    services = next(line for line in run.out.splitlines() if line.startswith("services "))
    assert services.split()[2] == MOVED_SERVICES
    assert "page, endpoints" in services


def test_write_check_reserves_and_releases_and_confirms_nothing(
    qmatic_sandbox: SandboxServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = probe(capsys, monkeypatch, "--json", "--write-check")
    assert run.code == 0, run.text[-3000:]
    assert "15 minutes" in run.err
    assert "never confirms" in run.err
    rows = run.rows()
    assert list(rows) == [*ROWS, "reserve", "release"]
    assert rows["reserve"]["verdict"] == "confirmed"
    assert rows["reserve"]["status"] == 201
    assert rows["release"]["verdict"] == "confirmed"
    assert rows["release"]["status"] == 204
    report = run.report()
    assert report["held_reservation_id"] is None
    assert report["reservation_may_be_held"] is False
    counts = api_counts(qmatic_sandbox)
    assert counts["reserve"] == 1
    assert counts["release"] == 1
    assert "confirm" not in counts
    stored = qmatic_sandbox.appointments()
    assert len(stored) == 1
    assert stored[0]["status"] == "RELEASED"
    assert qmatic_sandbox.appointments(status="RESERVED") == []
    assert qmatic_sandbox.appointments(status="CONFIRMED") == []


def test_a_failed_release_is_loud_and_names_the_held_reservation(
    make_qmatic_sandbox: Callable[..., SandboxServer],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sandbox = make_qmatic_sandbox(
        SandboxSettings(moved_paths={"release": MOVED_RELEASE}, requests_per_minute=0)
    )
    unaware = sandbox.connection_env(endpoints={})["AIRFLOW_CONN_QMATIC_DEFAULT"]
    run = probe(capsys, monkeypatch, "--json", "--write-check", conn=unaware)
    assert run.code == 1, run.text[-3000:]
    held = sandbox.appointments(status="RESERVED")
    assert len(held) == 1
    rid = held[0]["appointmentId"]
    report = run.report()
    assert report["held_reservation_id"] == rid
    release = run.rows()["release"]
    assert release["verdict"] == "differs"
    assert release["note"].startswith(f"RELEASE FAILED, reservation {rid} is held")
    assert release["fix"]["key"] == "release"
    assert f"THE RELEASE FAILED: reservation {rid} stays held for up to 15 minutes" in run.err
    assert f"release_reservation('{rid}')" in run.err
    assert sandbox.appointments(status="CONFIRMED") == []

    # With the release path corrected, the next check holds nothing new.
    fixed = conn_json(unaware, endpoints={"release": MOVED_RELEASE})
    run = probe(capsys, monkeypatch, "--json", "--write-check", conn=fixed)
    assert run.code == 0, run.text[-3000:]
    assert [a["appointmentId"] for a in sandbox.appointments(status="RESERVED")] == [rid]
    assert sandbox.appointments(status="CONFIRMED") == []


def test_command_runs_as_a_process_with_the_connection_in_the_environment(
    qmatic_sandbox: SandboxServer,
) -> None:
    run = run_command(
        "--json", env={"AIRFLOW_CONN_QMATIC_DEFAULT": f"{qmatic_sandbox.conn_uri}&requests_per_minute={FAST}"}
    )
    assert run.code == 0, run.text[-3000:]
    report = json.loads(run.out)  # stdout is the JSON document alone, whatever Airflow logs
    assert report["connection"] == "qmatic_default"
    assert report["base_url"] == qmatic_sandbox.base_url
    assert {row["operation"]: row["verdict"] for row in report["rows"]} == VERDICTS
    assert qmatic_sandbox.client_secret not in run.text


def test_a_bad_endpoints_extra_exits_2_naming_the_field(
    qmatic_sandbox: SandboxServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In this process (the command's own process start is tested above)."""
    bad = conn_json(qmatic_sandbox.conn_json, endpoints={"timeslots": "/external/v1/timeslots/{branch_id}"})
    run = probe(capsys, monkeypatch, conn=bad)
    assert run.code == 2, run.text[-3000:]
    assert run.out == ""
    assert "endpoints.timeslots" in run.err
    assert "{branch_id}, {service_id}" in run.err
    assert api_counts(qmatic_sandbox) == {}


def test_rich_shape_is_confirmed_too(
    qmatic_sandbox: SandboxServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The richer answers (status, expiresAt, durations, time zones) contradict nothing; the two
    fields Part B's Appointment does not name are listed as extra, and still confirmed."""
    qmatic_sandbox.configure(answer_shape="rich")
    run = probe(capsys, monkeypatch, "--json", "--write-check")
    assert run.code == 0, run.text[-3000:]
    rows = run.rows()
    assert {op: row["verdict"] for op, row in rows.items()} == {
        **VERDICTS,
        "reserve": "confirmed",
        "release": "confirmed",
    }
    assert {op: row["shape"]["result"] for op, row in rows.items() if row["shape"]} == {
        "branches": "matches",
        "services": "matches",
        "service_groups": "no items",
        "timeslots": "matches",
        "search": "no items",
        "service_combinations": "matches",
        "combination_timeslots": "matches",
        "reserve": "extra fields",
    }
    assert rows["reserve"]["shape"]["unexpected"] == ["branch.timeZone", "service.durationMinutes"]
    assert "harmless" in rows["reserve"]["note"]
    assert qmatic_sandbox.appointments(status="RESERVED") == []
