"""Fields a tenant requires at confirm (date of birth, information answers), against the sandbox
configured to require them.

Answers come from a CSV as ``question:<questionId>`` columns, beside the JSON Lines form. A job
whose rows lack a required field learns it from the first refused confirm (the flow releases that
reservation) and fails every later row lacking it before its reserve: the sandbox's own counters
and store show one reserve spent, nothing held and nobody booked.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.bulk.runner import FAILED, SUCCEEDED, BulkRunner
from airflow_provider_qmatic.sandbox import SandboxServer
from tests.conftest import run_dag

from .conftest import booking_rows, confirmed_by_customer, make_client, requests_to, statuses
from .test_bulk_operators import _dag, _state, _ti

BIRTH_ERROR = "the tenant requires the customer's date of birth; add a date_of_birth column (YYYY-MM-DD)"


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    header: list[str] = []
    for row in rows:
        header += [k for k in row if k not in header]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _answers(sandbox: SandboxServer) -> dict[str, dict[str, str]]:
    """Each confirmed customer's information answers, as the sandbox stored them."""
    return {
        a["customer"]["personalIdentifier"]: {q["questionId"]: q["answer"] for q in a["informationQuestions"]}
        for a in sandbox.appointments(status="CONFIRMED")
    }


@pytest.mark.airflow
def test_csv_question_columns_and_date_of_birth_reach_the_confirm(
    sandbox: SandboxServer, connection: str, tmp_path: Path
) -> None:
    sandbox.configure(require_date_of_birth=True, required_questions=["q-allergy"])
    rows = booking_rows(sandbox, 4)
    for i, row in enumerate(rows):
        row["date_of_birth"] = f"199{i}-0{i + 1}-1{i}"
        row["Question: q-allergy"] = ["nuts", "none", "gluten, lactose", "pollen"][i]
        row["question:Parking-2"] = ["yes", "", "no", ""][i]  # empty: no answer
    source = _write_csv(tmp_path / "bookings.csv", rows)
    with _dag("questions") as dag:
        from airflow_provider_qmatic.operators.bulk import QmaticBulkBookAppointmentsOperator

        QmaticBulkBookAppointmentsOperator(task_id="bulk_book", qmatic_conn_id=connection, rows=str(source))

    dag_run = run_dag(dag)

    ti = _ti(dag_run, "bulk_book")
    assert _state(ti) == "success"
    assert ti.xcom_pull(task_ids="bulk_book")["succeeded"] == 4
    pid = [r["personal_identifier"] for r in rows]
    assert _answers(sandbox) == {
        pid[0]: {"q-allergy": "nuts", "Parking-2": "yes"},
        pid[1]: {"q-allergy": "none"},
        pid[2]: {"q-allergy": "gluten, lactose", "Parking-2": "no"},
        pid[3]: {"q-allergy": "pollen"},
    }
    births = {
        a["customer"]["personalIdentifier"]: a["customer"]["dateOfBirth"] for a in sandbox.appointments()
    }
    assert births == {p: r["date_of_birth"] for p, r in zip(pid, rows, strict=True)}


def test_json_lines_answers_and_question_keys_combine_and_clash(
    sandbox: SandboxServer, tmp_path: Path
) -> None:
    rows = booking_rows(sandbox, 3)
    rows[0]["information_questions"] = [{"questionId": "q1", "answer": "a"}]
    rows[0]["question:q2"] = "b"
    rows[1]["information_questions"] = {"q1": "c"}
    rows[2]["information_questions"] = {"q1": "d"}
    rows[2]["question:q1"] = "e"  # the same question twice: invalid, never sent
    source = tmp_path / "bookings.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    result = BulkRunner(make_client(sandbox, tmp_path)).book(source)

    assert [o.status for o in result.outcomes] == [SUCCEEDED, SUCCEEDED, "invalid"]
    assert result.outcomes[2].error == (
        "information_questions: question q1 is answered both in information_questions and in the column "
        "question:q1; keep one"
    )
    answers = _answers(sandbox)
    assert answers[rows[0]["personal_identifier"]] == {"q1": "a", "q2": "b"}
    assert answers[rows[1]["personal_identifier"]] == {"q1": "c"}
    assert requests_to(sandbox, "reserve") == 2


def test_a_file_lacking_the_date_of_birth_books_nobody_and_spends_one_reservation(
    sandbox: SandboxServer, tmp_path: Path, journal_dir: Path
) -> None:
    sandbox.configure(require_date_of_birth=True)
    source = _write_csv(tmp_path / "bookings.csv", booking_rows(sandbox, 50))
    journal = journal_dir / "task.jsonl"

    result = BulkRunner(make_client(sandbox, tmp_path), concurrency=4, journal_path=journal).book(source)

    s = result.summary
    assert (s.succeeded, s.failed, s.invalid) == (0, 50, 0)
    assert requests_to(sandbox, "reserve") == 1  # the first row went alone; the rest were never sent
    assert requests_to(sandbox, "confirm") == 1
    assert requests_to(sandbox, "release") == 1
    assert statuses(sandbox).get("RESERVED", 0) == 0  # nothing held
    assert confirmed_by_customer(sandbox) == {}
    first, *rest = result.outcomes
    assert first.error == f"confirm: {BIRTH_ERROR} to every row (the reservation was released)"
    assert {o.error for o in rest} == {
        f"not sent: {BIRTH_ERROR} to every row (learnt from row 1's refused confirm)"
    }
    assert not any(o.retryable for o in result.outcomes)
    report = result.failure_report(0, None)
    assert "49 x failed: not sent: the tenant requires the customer's date of birth" in report

    # A retry relearns it from one row: one more reservation, released, nobody booked.
    retry = BulkRunner(make_client(sandbox, tmp_path), attempt=2, journal_path=journal).book(source)
    assert retry.summary.failed == 50
    assert requests_to(sandbox, "reserve") == 2
    assert statuses(sandbox).get("RESERVED", 0) == 0


def test_only_the_rows_lacking_a_required_answer_fail(sandbox: SandboxServer, tmp_path: Path) -> None:
    sandbox.configure(required_questions=["q-allergy"])
    rows = booking_rows(sandbox, 16)
    lacking = {3, 7, 8, 15}
    for number, row in enumerate(rows, start=1):
        row["question:q-allergy"] = "" if number in lacking else "none"
    source = _write_csv(tmp_path / "bookings.csv", rows)

    result = BulkRunner(make_client(sandbox, tmp_path), concurrency=4).book(source)

    by_status = {o.row: o.status for o in result.outcomes}
    assert {n for n, status in by_status.items() if status == FAILED} == lacking
    assert result.summary.succeeded == 12
    for outcome in result.failures():
        assert "information question q-allergy; add a question:q-allergy column" in (outcome.error or "")
    # Rows in flight when the first refusal came may be refused too (up to one per other thread);
    # the rest lacking it are never reserved.
    assert 12 + 1 <= requests_to(sandbox, "reserve") <= 12 + len(lacking)
    assert statuses(sandbox).get("RESERVED", 0) == 0
    assert sorted(confirmed_by_customer(sandbox).values()) == [1] * 12
