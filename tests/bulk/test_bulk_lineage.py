"""Lineage: a bulk job declares the file it read and the results file it wrote, through OpenLineage.

The end-to-end test runs a bulk DAG with the real ``airflow dags test`` CLI against the sandbox,
with Airflow's OpenLineage provider writing its events to a file, and reads the COMPLETE event the
provider emitted for the task: the datasets are what Airflow itself reports, templates rendered.
"""

from __future__ import annotations

import csv
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.operators.bulk import (
    QmaticBulkBookAppointmentsOperator,
    QmaticBulkCancelAppointmentsOperator,
    _lineage_name,
)
from airflow_provider_qmatic.sandbox import SandboxServer
from tests.conftest import run_airflow

from .conftest import booking_rows, confirmed_by_customer

pytestmark = pytest.mark.airflow

DAG_FILE = """
import pendulum
try:
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG
from airflow_provider_qmatic.operators.bulk import QmaticBulkBookAppointmentsOperator

with DAG(
    dag_id="{dag_id}",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    params={{"rows": "{rows}", "results": "{results}"}},
):
    QmaticBulkBookAppointmentsOperator(
        task_id="bulk_book", rows="{{{{ params.rows }}}}", results_path="{{{{ params.results }}}}"
    )
"""


def test_airflow_reports_the_input_and_results_files_as_lineage(
    sandbox: SandboxServer, tmp_path: Path, airflow_db: Path
) -> None:
    rows = booking_rows(sandbox, 3)
    source = tmp_path / "bookings.csv"
    with source.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    results = tmp_path / "out" / "results.jsonl"
    results.parent.mkdir()
    dag_id = f"qmatic_lineage_{uuid.uuid4().hex[:8]}"
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / f"{dag_id}.py").write_text(DAG_FILE.format(dag_id=dag_id, rows=source, results=results))
    events = tmp_path / "openlineage.jsonl"
    cache = tmp_path / "token-cache"
    cache.mkdir(mode=0o700)
    conn = json.loads(sandbox.conn_json)
    conn["extra"]["requests_per_minute"] = 600000
    env = {
        "AIRFLOW_CONN_QMATIC_DEFAULT": json.dumps(conn),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "QMATIC_TOKEN_CACHE_DIR": str(cache),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events), "append": True}
        ),
    }

    result = run_airflow("dags", "test", dag_id, env=env)

    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(confirmed_by_customer(sandbox).values()) == [1, 1, 1]  # the job really ran
    emitted = [json.loads(line) for line in events.read_text().splitlines()]
    (complete,) = [
        e for e in emitted if e["eventType"] == "COMPLETE" and e["job"]["name"] == f"{dag_id}.bulk_book"
    ]
    assert [(d["namespace"], d["name"]) for d in complete["inputs"]] == [("file", str(source))]
    assert [(d["namespace"], d["name"]) for d in complete["outputs"]] == [("file", str(results))]


def test_rows_given_as_a_list_are_no_input_dataset() -> None:
    task = QmaticBulkCancelAppointmentsOperator(
        task_id="t", rows=[{"appointment_id": "x"}], results_path="/data/out.csv"
    )
    lineage = task.get_openlineage_facets_on_complete(None)
    assert lineage.inputs == []
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("file", "/data/out.csv")]


def test_without_the_openlineage_provider_there_is_no_lineage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", None)  # import fails
    task = QmaticBulkBookAppointmentsOperator(task_id="t", rows="/data/in.csv")
    assert task.get_openlineage_facets_on_complete(None) is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/data/in.csv", ("file", "/data/in.csv")),
        ("file:///data/in.csv", ("file", "/data/in.csv")),
        ("s3://aws_conn@bucket/drops/in.jsonl", ("s3://bucket", "drops/in.jsonl")),  # no conn id
    ],
)
def test_dataset_names_follow_openlineage_conventions(path: str, expected: Any) -> None:
    assert _lineage_name(path) == expected
