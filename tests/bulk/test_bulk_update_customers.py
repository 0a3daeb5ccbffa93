"""Customer updates against the sandbox: the single operator (one appointment, or every booked one of
a personal identifier; mapped), the bulk operator through real task execution, and the runner
killed mid-job then retried. Judged by the sandbox's store (a search by the identifier finds the
appointments with the new details) and its request counters."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.bulk.runner import SKIPPED_EXISTING, SUCCEEDED, BulkRunner
from airflow_provider_qmatic.operators.bulk import QmaticBulkUpdateCustomersOperator
from airflow_provider_qmatic.operators.update_customer import QmaticUpdateCustomerOperator
from airflow_provider_qmatic.sandbox import SandboxServer
from tests.conftest import run_dag

from .conftest import booking_rows, customer_id, make_client, make_config, requests_to
from .test_bulk_operators import _dag, _state, _ti

CHILD = Path(__file__).with_name("bulk_child.py")


def _book(sandbox: SandboxServer, tmp_path: Path, customers: int, *, twice: int = 0) -> list[dict[str, Any]]:
    """Book ``customers`` new customers, the first ``twice`` of them on two slots; their rows."""
    rows = booking_rows(sandbox, customers + twice)
    for extra, first in zip(rows[customers:], rows[:twice], strict=True):
        for key in ("personal_identifier", "first_name", "last_name", "email"):
            extra[key] = first[key]
    result = BulkRunner(make_client(sandbox, tmp_path)).book(rows)
    assert result.summary.succeeded == customers + twice
    return rows[:customers]


def _new_details(row: dict[str, Any], n: int) -> dict[str, str]:
    pid = row["personal_identifier"]
    return {
        "personal_identifier": pid,
        "first_name": "Ada",
        "last_name": f"King{n}",
        "email": f"{pid.lower()}@example.org",
        "date_of_birth": f"1815-12-{10 + n % 18:02d}",
    }


def _customers_of(sandbox: SandboxServer, pid: str) -> list[dict[str, Any]]:
    """The customer of each appointment a search for ``pid`` finds, through the public API."""
    found = make_client(sandbox, Path(os.environ.get("TMPDIR", "/tmp"))).search_appointments(pid)
    by_id = {a["appointmentId"]: a for a in sandbox.appointments()}
    return [by_id[a.appointment_id]["customer"] for a in found]


@pytest.mark.airflow
def test_bulk_update_operator_sets_every_booked_appointment_once(
    sandbox: SandboxServer, connection: str, tmp_path: Path
) -> None:
    booked = _book(sandbox, tmp_path, 5, twice=2)  # customers 1 and 2 have two appointments each
    ids_of = {}
    for a in sandbox.appointments(status="CONFIRMED"):
        ids_of.setdefault(a["customer"]["personalIdentifier"], []).append(a["appointmentId"])
    cancelled = ids_of[booked[1]["personal_identifier"]][1]
    make_client(sandbox, tmp_path).cancel(cancelled)  # not booked any more: left alone
    updates = [_new_details(row, n) for n, row in enumerate(booked)]
    nobody = customer_id("NOBODY")
    updates.append({**_new_details(booked[0], 9), "personal_identifier": nobody})
    source = tmp_path / "updates.csv"
    with source.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(updates[0]))
        writer.writeheader()
        writer.writerows(updates)
    requests_before = sandbox.stats()["requests"]
    with _dag("update") as dag:
        QmaticBulkUpdateCustomersOperator(
            task_id="update",
            qmatic_conn_id=connection,
            rows=str(source),
            results_path=str(tmp_path / "r.csv"),
        )

    dag_run = run_dag(dag)

    ti = _ti(dag_run, "update")
    assert _state(ti) == "success"
    summary = ti.xcom_pull(task_ids="update")
    assert (summary["total"], summary["succeeded"], summary["skipped_existing"], summary["failed"]) == (
        6,
        5,
        1,
        0,
    )
    assert summary["appointments_updated"] == 6  # 2 + 1 (one cancelled) + 3
    outcomes = {o["row"]: o for o in summary["outcomes"]}
    assert outcomes[1]["appointment_id"].split() == ids_of[booked[0]["personal_identifier"]]
    assert outcomes[2]["appointment_id"] == ids_of[booked[1]["personal_identifier"]][0]
    assert (outcomes[6]["status"], outcomes[6]["error"]) == (SKIPPED_EXISTING, "no booked appointment found")
    requests = sandbox.stats()["requests"]
    assert sum(requests["search"].values()) - sum(requests_before.get("search", {}).values()) == 6
    assert requests["update_customer"] == {"204": 6}
    for update in updates[:5]:
        shown = _customers_of(sandbox, update["personal_identifier"])
        shown_booked = [c for c in shown if c and c.get("email") == update["email"]]
        assert shown_booked, update["personal_identifier"]
        for customer in shown_booked:
            assert (customer["lastName"], customer["dateOfBirth"]) == (
                update["last_name"],
                update["date_of_birth"],
            )
    text = json.dumps(summary) + json.dumps(ti.xcom_pull(task_ids="update", key="summary"))
    for update in updates:
        assert update["personal_identifier"] not in text
        assert update["email"] not in text

    # Once more: every appointment already shows the details, so nothing is sent.
    again = BulkRunner(make_client(sandbox, tmp_path)).run("update_customer", source)
    assert [o.status for o in again.outcomes] == [SKIPPED_EXISTING] * 6
    assert again.summary.appointments_updated == 0
    assert sandbox.stats()["requests"]["update_customer"] == {"204": 6}


def test_invalid_and_duplicate_rows_are_never_sent(sandbox: SandboxServer, tmp_path: Path) -> None:
    booked = _book(sandbox, tmp_path, 2)
    rows = [_new_details(booked[0], 0), _new_details(booked[1], 1), _new_details(booked[0], 2)]
    rows[1]["email"] = "no-at-sign"
    rows.append({**rows[0], "favourite_colour": "blue"})  # a column that names no field: ignored

    result = BulkRunner(make_client(sandbox, tmp_path)).run("update_customer", rows)

    assert [o.status for o in result.outcomes] == [SUCCEEDED, "invalid", "invalid", "invalid"]
    assert str(result.outcomes[1].error).startswith("email:")
    assert result.outcomes[2].error == "duplicate of row 1 (same personal identifier)"
    assert requests_to(sandbox, "update_customer") == 1


@pytest.mark.airflow
def test_single_operator_by_appointment_and_mapped_by_identifier(
    sandbox: SandboxServer, connection: str, tmp_path: Path
) -> None:
    booked = _book(sandbox, tmp_path, 3, twice=1)
    ids_of: dict[str, list[str]] = {}
    for a in sandbox.appointments(status="CONFIRMED"):
        ids_of.setdefault(a["customer"]["personalIdentifier"], []).append(a["appointmentId"])
    one = _new_details(booked[2], 2)
    with _dag("update_one") as dag:
        QmaticUpdateCustomerOperator(
            task_id="by_id",
            qmatic_conn_id=connection,
            customer=one,
            appointment_id=ids_of[one["personal_identifier"]][0],
        )
        QmaticUpdateCustomerOperator.partial(task_id="by_identifier", qmatic_conn_id=connection).expand(
            customer=[_new_details(booked[0], 0), _new_details(booked[1], 1)]
        )

    dag_run = run_dag(dag)

    assert _state(_ti(dag_run, "by_id")) == "success"
    assert _ti(dag_run, "by_id").xcom_pull(task_ids="by_id") == {
        "appointment_ids": ids_of[one["personal_identifier"]],
        "updated": 1,
        "unchanged": 0,
    }
    mapped = {
        ti.map_index: ti.xcom_pull(task_ids="by_identifier", map_indexes=ti.map_index)
        for ti in dag_run.get_task_instances()
        if ti.task_id == "by_identifier"
    }
    assert mapped[0] == {
        "appointment_ids": ids_of[booked[0]["personal_identifier"]],
        "updated": 2,
        "unchanged": 0,
    }
    assert mapped[1] == {
        "appointment_ids": ids_of[booked[1]["personal_identifier"]],
        "updated": 1,
        "unchanged": 0,
    }
    assert requests_to(sandbox, "update_customer") == 4
    for n in (0, 1, 2):
        emails = {c["email"] for c in _customers_of(sandbox, booked[n]["personal_identifier"])}
        assert emails == {_new_details(booked[n], n)["email"]}


def _done_rows(journal: Path) -> int:
    if not journal.exists():
        return 0
    done = 0
    for line in journal.read_text().splitlines():
        try:
            done += json.loads(line).get("e") == "done"
        except ValueError:
            continue
    return done


def test_a_killed_update_job_retried_does_not_redo_finished_rows(
    sandbox: SandboxServer, tmp_path: Path, journal_dir: Path
) -> None:
    booked = _book(sandbox, tmp_path, 30)
    updates = [_new_details(row, n) for n, row in enumerate(booked)]
    source = tmp_path / "updates.jsonl"
    source.write_text("".join(json.dumps(u) + "\n" for u in updates), encoding="utf-8")
    sandbox.configure(latency_ms=400, fault_endpoints=["update_customer"])  # slow updates
    config = make_config(sandbox, tmp_path / "tokens")
    values = {
        name: getattr(config, name)
        for name in ("client_id", "client_secret", "tenant", "base_url", "system_id", "credential_cache_dir")
    }
    values["requests_per_minute"] = config.requests_per_minute
    journal = journal_dir / "task.jsonl"
    args = json.dumps(
        {"config": values, "rows": str(source), "journal": str(journal), "action": "update_customer"}
    )
    searches_before = requests_to(sandbox, "search")
    child = subprocess.Popen([sys.executable, str(CHILD), "run", args])
    try:
        deadline = time.monotonic() + 60
        while _done_rows(journal) < 8:
            assert child.poll() is None, "the bulk process ended before it could be killed"
            assert time.monotonic() < deadline, "the bulk process made no progress"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(30)
    done_before = _done_rows(journal)
    assert 8 <= done_before < 30
    assert requests_to(sandbox, "search") - searches_before < 30
    sandbox.configure(latency_ms=0)
    searches_before = requests_to(sandbox, "search")

    retry = BulkRunner(make_client(sandbox, tmp_path), attempt=2, journal_path=journal).run(
        "update_customer", source
    )

    s = retry.summary
    assert s.failed == 0
    assert s.skipped_existing >= done_before  # recorded done: neither searched nor updated again
    assert requests_to(sandbox, "search") - searches_before == 30 - done_before
    assert requests_to(sandbox, "update_customer") <= 30 + 4  # at most the rows in flight, twice
    for update in updates:
        (customer,) = _customers_of(sandbox, update["personal_identifier"])
        assert (customer["email"], customer["lastName"]) == (update["email"], update["last_name"])
