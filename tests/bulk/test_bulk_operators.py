"""The bulk operators through real task execution (``dag.test()``: the Task SDK's in-process
execution on Airflow 3, the classic task runner on 2.11), and the example DAGs' chain that
``make demo`` runs: book, then reschedule, then cancel the same appointments."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.exceptions import QmaticConfigError
from airflow_provider_qmatic.operators.bulk import (
    QmaticBulkBookAppointmentsOperator,
    QmaticBulkCancelAppointmentsOperator,
    QmaticBulkRescheduleAppointmentsOperator,
)
from airflow_provider_qmatic.sandbox import SandboxServer
from tests.conftest import run_dag

from .conftest import booking_rows, confirmed_by_customer, read_outcomes, requests_to, statuses

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[attr-defined,no-redef]

pytestmark = pytest.mark.airflow

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"
SUMMARY_KEYS = {
    "total",
    "succeeded",
    "skipped_existing",
    "failed",
    "invalid",
    "api_requests",
    "token_requests",
    "elapsed_s",
    "requests_per_minute",
}


def _ti(dag_run: Any, task_id: str) -> Any:
    (ti,) = [ti for ti in dag_run.get_task_instances() if ti.task_id == task_id]
    return ti


def _state(ti: Any) -> str:
    return str(getattr(ti.state, "value", ti.state))


def _dag(name: str) -> DAG:
    return DAG(
        dag_id=f"test_qmatic_bulk_{name}_{uuid.uuid4().hex[:8]}",
        schedule=None,
        start_date=datetime(2025, 1, 1),
        catchup=False,
    )


def test_bulk_book_operator_in_a_dagrun_dag(sandbox: SandboxServer, connection: str, tmp_path: Path) -> None:
    rows = booking_rows(sandbox, 8)
    source = tmp_path / "in" / "bookings.csv"
    source.parent.mkdir()
    header = list(rows[0])
    lines = [",".join(header)] + [",".join(r[h] for h in header) for r in rows]
    source.write_bytes(b"\xef\xbb\xbf" + ("\n".join(lines) + "\n").encode())  # a CSV with BOM
    results = tmp_path / "out" / "results.jsonl"
    with _dag("book") as dag:
        QmaticBulkBookAppointmentsOperator(
            task_id="bulk_book",
            qmatic_conn_id=connection,
            rows=f"file://{source}",
            results_path=str(results),
        )

    dag_run = run_dag(dag)

    ti = _ti(dag_run, "bulk_book")
    assert _state(ti) == "success"
    summary = ti.xcom_pull(task_ids="bulk_book")
    assert set(summary) >= SUMMARY_KEYS
    assert (summary["total"], summary["succeeded"], summary["failed"], summary["invalid"]) == (8, 8, 0, 0)
    assert summary["api_requests"] == 16
    assert summary["token_requests"] == 1
    assert [o["status"] for o in summary["outcomes"]] == ["succeeded"] * 8
    assert summary["results_path"] == str(results)
    assert ti.xcom_pull(task_ids="bulk_book", key="summary")["succeeded"] == 8
    assert [o["row"] for o in read_outcomes(results)] == list(range(1, 9))
    xcom_text = json.dumps(summary)
    for row in rows:
        assert row["personal_identifier"] not in xcom_text
        assert row["email"] not in xcom_text
    assert sorted(confirmed_by_customer(sandbox).values()) == [1] * 8


def test_a_broken_policy_fails_the_task_without_retries(
    sandbox: SandboxServer, connection: str, tmp_path: Path
) -> None:
    rows = booking_rows(sandbox, 3)
    rows[1]["email"] = "not-an-email"
    with _dag("policy") as dag:
        QmaticBulkBookAppointmentsOperator(
            task_id="bulk_book", qmatic_conn_id=connection, rows=rows, max_failed_rows=0, retries=2
        )

    dag_run = run_dag(dag)

    ti = _ti(dag_run, "bulk_book")
    assert _state(ti) == "failed"
    assert int(ti.try_number) == 1  # AirflowFailException: an invalid row cannot pass on a retry
    summary = ti.xcom_pull(task_ids="bulk_book", key="summary")
    assert (summary["succeeded"], summary["invalid"]) == (2, 1)  # every other row was still done
    assert requests_to(sandbox, "reserve") == 2


def test_a_csv_file_is_validated_inside_the_task_and_only_valid_rows_are_booked(
    sandbox: SandboxServer, connection: str, tmp_path: Path
) -> None:
    rows = booking_rows(sandbox, 6)
    rows.insert(3, dict(rows[0]))  # row 4 repeats row 1
    rows[4]["email"] = "not-an-email"
    rows[5]["personal_identifier"] = "SHORT"
    source = tmp_path / "bookings.csv"
    header = list(rows[0])
    source.write_text("\n".join([",".join(header)] + [",".join(r[h] for h in header) for r in rows]) + "\n")
    with _dag("csv_file") as dag:
        QmaticBulkBookAppointmentsOperator(
            task_id="bulk_book", qmatic_conn_id=connection, rows=str(source), max_failed_rows=3
        )

    dag_run = run_dag(dag)

    ti = _ti(dag_run, "bulk_book")
    assert _state(ti) == "success"
    summary = ti.xcom_pull(task_ids="bulk_book")
    outcomes = {o["row"]: (o["status"], o.get("error") or "") for o in summary["outcomes"]}
    assert [outcomes[n][0] for n in range(1, 8)] == ["succeeded"] * 3 + ["invalid"] * 3 + ["succeeded"]
    assert outcomes[4][1] == "duplicate of row 1 (same customer, branch, service and start)"
    assert outcomes[5][1].startswith("customer.email: must be an email address")
    assert outcomes[6][1].startswith("customer.personal_identifier: must be 10 to 48 letters")
    assert sorted(confirmed_by_customer(sandbox).values()) == [1] * 4


def test_operator_arguments_are_checked_when_the_dag_is_parsed() -> None:
    with pytest.raises(QmaticConfigError, match="skip_existing"):
        QmaticBulkCancelAppointmentsOperator(task_id="t", rows=[], skip_existing="sometimes")
    with pytest.raises(QmaticConfigError, match="concurrency"):
        QmaticBulkCancelAppointmentsOperator(task_id="t", rows=[], concurrency=0)
    with pytest.raises(QmaticConfigError, match="max_failed_ratio"):
        QmaticBulkRescheduleAppointmentsOperator(task_id="t", rows=[], max_failed_ratio=2)
    templated = QmaticBulkCancelAppointmentsOperator(
        task_id="t", rows="{{ params.f }}", skip_existing="{{ x }}"
    )
    assert "rows" in templated.template_fields
    assert "results_path" in templated.template_fields


def _example(file_name: str, dag_id: str) -> Any:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:
        from airflow.models import DagBag  # type: ignore[no-redef]
    bag = DagBag(dag_folder=str(EXAMPLES / file_name))
    assert not bag.import_errors, bag.import_errors
    return bag.dags[dag_id]


def test_example_dags_book_reschedule_cancel_chain(
    sandbox: SandboxServer, connection: str, tmp_path: Path
) -> None:
    out = tmp_path / "examples"
    conf = {"output_dir": str(out), "booking_results": str(out / "bulk_book_results.csv")}

    booked_run = run_dag(_example("example_qmatic_bulk_book.py", "example_qmatic_bulk_book"), conf)
    assert _state(_ti(booked_run, "bulk_book")) == "success"
    booked = _ti(booked_run, "bulk_book").xcom_pull(task_ids="bulk_book")
    assert booked["succeeded"] == 12
    assert booked["failed"] == 0
    ids = {o["appointment_id"] for o in read_outcomes(out / "bulk_book_results.csv")}
    assert len(ids) == 12
    assert statuses(sandbox)["CONFIRMED"] == 12

    moved_run = run_dag(_example("example_qmatic_bulk_reschedule.py", "example_qmatic_bulk_reschedule"), conf)
    assert _state(_ti(moved_run, "bulk_reschedule")) == "success"
    moved = _ti(moved_run, "bulk_reschedule").xcom_pull(task_ids="bulk_reschedule")
    assert moved["succeeded"] == 6
    assert moved["failed"] == 0
    first_day = {a["timeSlot"]["startTime"][:10] for a in sandbox.appointments(status="CONFIRMED")}
    assert len(first_day) >= 2  # the moved ones are on a later day now

    cancelled_run = run_dag(_example("example_qmatic_bulk_cancel.py", "example_qmatic_bulk_cancel"), conf)
    assert _state(_ti(cancelled_run, "bulk_cancel")) == "success"
    cancelled = _ti(cancelled_run, "bulk_cancel").xcom_pull(task_ids="bulk_cancel")
    assert cancelled["succeeded"] == 12
    assert {a["appointmentId"] for a in sandbox.appointments(status="CANCELLED")} == ids
    assert statuses(sandbox).get("RESERVED", 0) == 0
