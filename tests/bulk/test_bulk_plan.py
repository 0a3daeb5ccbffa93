"""Bulk dry runs (``dry_run=True``) through real task execution against the sandbox: a plan sends
no write (the sandbox's own counters and request log say so), keeps no journal, and foretells the
real run that follows on an unchanged tenant, row by row, reasons included."""

from __future__ import annotations

import csv
import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.bulk.runner import BulkRunner
from airflow_provider_qmatic.exceptions import QmaticConfigError
from airflow_provider_qmatic.operators.bulk import (
    QmaticBulkBookAppointmentsOperator,
    QmaticBulkCancelAppointmentsOperator,
    QmaticBulkRescheduleAppointmentsOperator,
    QmaticBulkUpdateCustomersOperator,
)
from airflow_provider_qmatic.sandbox import SandboxServer
from airflow_provider_qmatic.sandbox.settings import WRITE_ENDPOINTS
from tests.conftest import run_dag

from .conftest import booking_rows, customer_id, make_client, read_outcomes

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[attr-defined,no-redef]

pytestmark = pytest.mark.airflow

FIELDS = [
    "branch_id",
    "service_id",
    "start_time",
    "end_time",
    "personal_identifier",
    "first_name",
    "last_name",
    "email",
]


def _dag(name: str, **kwargs: Any) -> DAG:
    return DAG(
        dag_id=f"test_qmatic_bulk_plan_{name}_{uuid.uuid4().hex[:8]}",
        schedule=None,
        start_date=datetime(2025, 1, 1),
        catchup=False,
        **kwargs,
    )


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _ti(dag_run: Any, task_id: str) -> Any:
    (ti,) = [ti for ti in dag_run.get_task_instances() if ti.task_id == task_id]
    return ti


def _xcom(dag_run: Any, task_id: str) -> dict[str, Any]:
    ti = _ti(dag_run, task_id)
    assert str(getattr(ti.state, "value", ti.state)) == "success", task_id
    value: dict[str, Any] = ti.xcom_pull(task_ids=task_id)
    return value


def _writes(sandbox: SandboxServer) -> dict[str, Any]:
    """Requests that reached a write endpoint, by endpoint; and any request the log shows that is
    neither a GET nor the search (a POST that only reads)."""
    requests = sandbox.stats()["requests"]
    found: dict[str, Any] = {name: requests[name] for name in requests if name in WRITE_ENDPOINTS}
    others = [
        (r["method"], r["endpoint"])
        for r in sandbox.recent_requests(1000)
        if r["method"] != "GET" and r["endpoint"] not in ("search", "token")
    ]
    if others:
        found["log"] = others
    return found


def _sent(sandbox: SandboxServer) -> int:
    stats = sandbox.stats()
    return int(stats["api_requests"]) + int(stats["token_requests"])


def test_a_plan_writes_nothing_and_the_real_run_then_does_what_it_planned(
    sandbox: SandboxServer, connection: str, tmp_path: Path
) -> None:
    """One DAG, ``dry_run`` templated from a param: a plan run, then a real run on the same file."""
    rows = booking_rows(sandbox, 6)
    for row in rows[::2]:
        row["end_time"] = ""  # the end comes from the slot listing, for plan and run alike
    source = _write_csv(tmp_path / "bookings.csv", rows)
    journals = tmp_path / "journals"
    with _dag("templated", params={"dry_run": True}) as dag:
        QmaticBulkBookAppointmentsOperator(
            task_id="book",
            qmatic_conn_id=connection,
            rows=str(source),
            results_path=str(tmp_path / "{{ 'plan' if params.dry_run else 'results' }}.csv"),
            skip_existing="always",
            dry_run="{{ params.dry_run }}",
        )

    plan = _xcom(run_dag(dag), "book")

    assert _writes(sandbox) == {}
    assert sandbox.appointments() == []
    assert plan["dry_run"] is True
    assert (plan["total"], plan["planned"], plan["succeeded"], plan["failed"], plan["invalid"]) == (
        6,
        6,
        0,
        0,
        0,
    )
    used = plan["api_requests"] + plan["token_requests"]
    assert used == _sent(sandbox)  # the requests it reports are the requests the sandbox saw
    assert plan["api_requests"] == 6 + len(
        {r["start_time"][:10] for r in rows}
    )  # searches, listings per date
    assert plan["estimated_requests"] == used + 2 * 6  # reserve + confirm per planned row
    assert plan["estimated_duration_s"] == pytest.approx(plan["estimated_requests"] * 60 / 60000, abs=0.1)
    assert [o["status"] for o in read_outcomes(tmp_path / "plan.csv")] == ["planned"] * 6
    assert not journals.exists() or list(journals.iterdir()) == []  # a plan is not progress
    for row in rows:  # no personal data in XCom
        assert row["personal_identifier"] not in json.dumps(plan)
        assert row["email"] not in json.dumps(plan)

    before = sandbox.stats()["requests"]
    done = _xcom(run_dag(dag, conf={"dry_run": False}), "book")

    assert "planned" not in done
    assert "dry_run" not in done
    assert (done["succeeded"], done["skipped_existing"], done["failed"]) == (plan["planned"], 0, 0)
    assert len(sandbox.appointments("CONFIRMED")) == 6
    assert list(journals.iterdir())  # the real run keeps its journal
    after = sandbox.stats()["requests"]
    assert after["reserve"] == {"201": 6}
    assert after["confirm"] == {"201": 6}
    real = sum(sum(v.values()) for v in after.values()) - sum(sum(v.values()) for v in before.values())
    assert real <= plan["estimated_requests"]  # the estimate errs on the long side


@pytest.mark.parametrize("qmatic_answer_shape", ["rich"])  # slots show their places left
def test_a_plan_reports_invalid_existing_and_full_rows_as_the_real_run_finds_them(
    sandbox: SandboxServer, connection: str, tmp_path: Path
) -> None:
    sandbox.configure(slot_capacity=1)
    slots = sandbox.free_slots(limit=6)
    fresh = booking_rows(sandbox, 2)  # on the first two free slots
    people = booking_rows(sandbox, 6)  # new customers on the same slots (for their names)

    def row(slot: dict[str, Any], who: dict[str, Any], **changes: Any) -> dict[str, Any]:
        return {
            **who,
            "branch_id": slot["branchId"],
            "service_id": slot["serviceId"],
            "start_time": slot["startTime"],
            "end_time": slot["endTime"],
            **changes,
        }

    existing = row(slots[2], people[2])
    taken = row(slots[3], people[3])
    BulkRunner(make_client(sandbox, tmp_path)).book([existing, taken])  # booked before the job
    start = datetime.fromisoformat(slots[4]["startTime"])
    rows = [
        fresh[0],  # 1 planned
        fresh[1],  # 2 planned
        {**fresh[0], "email": "no-at-sign"},  # 3 invalid
        dict(fresh[0]),  # 4 invalid: duplicate of row 1
        existing,  # 5 skipped_existing: the customer is booked there
        row(slots[3], people[4]),  # 6 failed: slot full (its one place taken)
        row(
            slots[4], people[5], start_time=(start + timedelta(minutes=1)).isoformat(), end_time=""
        ),  # 7 not offered
        row(slots[4], people[5], end_time=(start + timedelta(minutes=2)).isoformat()),  # 8 wrong end
        row(slots[1], people[0]),  # 9 failed: row 2 takes the slot's one place
    ]
    source = _write_csv(tmp_path / "mixed.csv", rows)
    with _dag("mixed") as dag:
        QmaticBulkBookAppointmentsOperator(
            task_id="plan",
            qmatic_conn_id=connection,
            rows=str(source),
            results_path=str(tmp_path / "plan.jsonl"),
            skip_existing="always",
            max_failed_rows=None,
            dry_run=True,
        )
    sent_before = _sent(sandbox)
    writes_before = _writes(sandbox)

    plan = _xcom(run_dag(dag), "plan")

    assert _writes(sandbox) == writes_before
    assert plan["api_requests"] + plan["token_requests"] == _sent(sandbox) - sent_before
    outcomes = read_outcomes(tmp_path / "plan.jsonl")
    assert [o["status"] for o in outcomes] == [
        "planned",
        "planned",
        "invalid",
        "invalid",
        "skipped_existing",
        "failed",
        "failed",
        "failed",
        "failed",
    ]
    errors = [o["error"] or "" for o in outcomes]
    assert "customer.email" in errors[2]
    assert errors[3] == "duplicate of row 1 (same customer, branch, service and start)"
    assert errors[4].startswith("already booked")
    assert outcomes[4]["appointment_id"] is not None
    assert errors[5].startswith("timeslots: slot not offered or full")
    assert errors[5].endswith("(slot_unavailable)")
    assert errors[6].startswith("timeslots: slot not offered or full")
    assert errors[7].startswith("timeslots: slot not offered: the listed slot at start_time ends")
    assert errors[8].startswith("timeslots: slot full: the listing shows 1 place(s) left")
    assert "1 of them taken by earlier rows of this plan" in errors[8]
    assert (plan["planned"], plan["skipped_existing"], plan["failed"], plan["invalid"]) == (2, 1, 4, 2)
    assert json.dumps(plan).count("no-at-sign") == 0

    # The real run on the unchanged tenant: every row as planned (planned -> succeeded).
    with _dag("mixed_real") as real_dag:
        QmaticBulkBookAppointmentsOperator(
            task_id="book",
            qmatic_conn_id=connection,
            rows=str(source),
            results_path=str(tmp_path / "results.jsonl"),
            skip_existing="always",
            max_failed_rows=None,
        )
    done = _xcom(run_dag(real_dag), "book")
    real = [o["status"] for o in read_outcomes(tmp_path / "results.jsonl")]
    assert real == [("succeeded" if o["status"] == "planned" else o["status"]) for o in outcomes]
    assert done["succeeded"] == plan["planned"]


def test_plans_of_reschedule_cancel_and_customer_updates_send_no_write(
    sandbox: SandboxServer, connection: str, tmp_path: Path
) -> None:
    client = make_client(sandbox, tmp_path)
    rows = booking_rows(sandbox, 3)
    ids = [o.appointment_id or "" for o in BulkRunner(client).book(rows).outcomes]
    assert all(ids)
    client.cancel(ids[2])
    later = sandbox.free_slots(limit=30)[-1]
    moves = [
        {"appointment_id": ids[0], "start_time": later["startTime"]},  # planned
        {"appointment_id": ids[1], "start_time": rows[1]["start_time"]},  # already there
        {"appointment_id": str(uuid.uuid4()), "start_time": later["startTime"]},  # unknown: 404
    ]
    cancels = [{"appointment_id": ids[0]}, {"appointment_id": ids[2]}]
    updates = [
        {
            **{k: rows[0][k] for k in ("personal_identifier", "first_name", "last_name")},
            "email": "new@example.org",
        },
        {
            "personal_identifier": customer_id("U"),
            "first_name": "A",
            "last_name": "B",
            "email": "a@example.com",
        },
    ]
    with _dag("others") as dag:
        for task_id, operator, task_rows in (
            ("reschedule", QmaticBulkRescheduleAppointmentsOperator, moves),
            ("cancel", QmaticBulkCancelAppointmentsOperator, cancels),
            ("update", QmaticBulkUpdateCustomersOperator, updates),
        ):
            operator(
                task_id=task_id,
                qmatic_conn_id=connection,
                rows=task_rows,
                results_path=str(tmp_path / f"{task_id}.csv"),
                max_failed_rows=None,
                dry_run=True,
            )
    writes_before = _writes(sandbox)
    state_before = sandbox.appointments()

    dag_run = run_dag(dag)

    assert _writes(sandbox) == writes_before
    assert sandbox.appointments() == state_before
    moved = read_outcomes(tmp_path / "reschedule.csv")
    assert [(o["status"], o["appointment_id"]) for o in moved[:2]] == [
        ("planned", ids[0]),
        ("skipped_existing", ids[1]),
    ]
    assert (moved[0]["error"], moved[1]["error"]) == ("would reserve and move", "already at start_time")
    assert moved[2]["status"] == "failed"
    assert moved[2]["error"].startswith("get: HTTP 404")
    cancelled = read_outcomes(tmp_path / "cancel.csv")
    assert [(o["status"], o["appointment_id"]) for o in cancelled] == [
        ("planned", ids[0]),
        ("skipped_existing", ids[2]),
    ]
    summary = _xcom(dag_run, "cancel")
    assert summary["planned"] == 1
    assert summary["estimated_requests"] == summary["api_requests"] + summary["token_requests"] + 1
    updated = read_outcomes(tmp_path / "update.csv")
    assert [(o["status"], o["appointment_id"], o["error"]) for o in updated] == [
        ("planned", ids[0], "would update 1 of 1 booked appointment(s)"),
        ("skipped_existing", None, "no booked appointment found"),
    ]
    assert (
        _xcom(dag_run, "update")["estimated_requests"]
        == _xcom(dag_run, "update")["api_requests"] + _xcom(dag_run, "update")["token_requests"] + 1
    )


def test_a_reads_only_client_refuses_writes_before_sending(sandbox: SandboxServer, tmp_path: Path) -> None:
    slot = sandbox.free_slots(limit=1)[0]
    body = {
        "branchId": slot["branchId"],
        "serviceId": slot["serviceId"],
        "timeSlot": {"startTime": slot["startTime"], "endTime": slot["endTime"]},
        "numberOfReservations": 1,
    }
    client = make_client(sandbox, tmp_path)
    with client.reads_only(), pytest.raises(QmaticConfigError, match="reserve not sent"):
        client.reserve(body)
    assert "reserve" not in sandbox.stats()["requests"]
    assert client.reserve(body).appointment_id  # outside, writes go as before


def test_a_dry_run_that_is_not_true_or_false_fails_the_dag_file() -> None:
    with pytest.raises(QmaticConfigError, match="dry_run must be true or false"):
        QmaticBulkCancelAppointmentsOperator(task_id="cancel", rows=[], dry_run="maybe")
