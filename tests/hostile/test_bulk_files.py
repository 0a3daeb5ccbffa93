"""Hostile bulk input files, through the bulk runner as the operators build it (client from the
hook's validated connection, shared limiter, file token cache): bad rows are reported by row and
field and never sent; unreadable files stop the run before any request; a BOM is fine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.bulk.runner import INVALID, SUCCEEDED, BulkRunner
from airflow_provider_qmatic.exceptions import QmaticBulkError, QmaticConfigError
from airflow_provider_qmatic.sandbox import SandboxServer
from tests.hostile.conftest import (
    PASSPORT,
    STOCKHOLM,
    UNKNOWN_GUID,
    assert_no_secret,
    assert_untouched,
    conn_json,
    requests_made,
)

pytestmark = pytest.mark.airflow

HEADER = [
    "branch_id",
    "service_id",
    "start_time",
    "end_time",
    "personal_identifier",
    "first_name",
    "last_name",
    "email",
    "notes",
]
PID = "BULKHOSTILE000001"
START = "2030-12-02T09:00:00+01:00"
END = "2030-12-02T09:15:00+01:00"


def row(**changes: Any) -> dict[str, Any]:
    base = {
        "branch_id": STOCKHOLM,
        "service_id": PASSPORT,
        "start_time": START,
        "end_time": END,
        "personal_identifier": PID,
        "first_name": "Karin",
        "last_name": "Boye",
        "email": "karin.boye@example.com",
        "notes": "",
    }
    base.update(changes)
    return base


def csv_text(*rows: dict[str, Any], header: list[str] = HEADER) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


@pytest.fixture
def runner(server: SandboxServer, use_conn: Any) -> BulkRunner:
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    use_conn(conn_json(server))
    return BulkRunner(QmaticHook().client, concurrency=2)


@dataclass(frozen=True)
class RowCase:
    id: str
    row: dict[str, Any]
    field: str
    hidden: tuple[str, ...] = ()


ROW_CASES = [
    RowCase("naive-time", row(start_time="2030-12-02 09:00", end_time=""), "start_time"),
    RowCase("unparseable-time", row(start_time="tomorrow morning"), "start_time"),
    RowCase("excel-serial-time", row(start_time="47819.375"), "start_time"),
    RowCase("end-before-start", row(end_time="2030-12-02T08:45:00+01:00"), "end_time"),
    RowCase("branch-not-guid", row(branch_id="Stockholm City"), "branch_id"),
    RowCase("oversized-notes", row(notes="x" * 5000), "notes", hidden=("x" * 100,)),
    RowCase("pid-too-short", row(personal_identifier="SHORT1234"), "personal_identifier", ("SHORT1234",)),
    RowCase("pid-too-long", row(personal_identifier="L" * 49), "personal_identifier", ("L" * 49,)),
    RowCase(
        "pid-symbols", row(personal_identifier="19121012-1234"), "personal_identifier", ("19121012-1234",)
    ),
    RowCase("email-empty", row(email=""), "email"),
]


@pytest.mark.parametrize("case", ROW_CASES, ids=[c.id for c in ROW_CASES])
def test_invalid_row_is_reported_and_never_sent(
    server: SandboxServer, runner: BulkRunner, tmp_path: Path, case: RowCase
) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(csv_text(case.row), encoding="utf-8")

    result = runner.book(str(path), results_path=str(tmp_path / "results.csv"))

    (outcome,) = result.outcomes
    assert outcome.status == INVALID
    assert outcome.row == 1
    assert case.field in (outcome.error or ""), outcome.error
    with pytest.raises(QmaticBulkError) as info:
        result.check_policy(max_failed_rows=0)
    report = str(info.value)
    assert case.field in report
    results_file = (tmp_path / "results.csv").read_text()
    for value in (*case.hidden, "Karin", "Boye", "karin.boye@example.com"):
        assert value not in report + results_file, f"personal data quoted: {report}"
    assert_untouched(server)
    assert_no_secret(report + results_file)


def test_duplicate_rows_book_once_and_report_the_copy(
    server: SandboxServer, runner: BulkRunner, tmp_path: Path
) -> None:
    slot = server.free_slots(limit=1)[0]
    good = row(
        branch_id=slot["branchId"],
        service_id=slot["serviceId"],
        start_time=slot["startTime"],
        end_time=slot["endTime"],
    )
    path = tmp_path / "dupes.csv"
    path.write_text(csv_text(good, good), encoding="utf-8")

    result = runner.book(str(path))

    assert [(o.row, o.status) for o in result.outcomes] == [(1, SUCCEEDED), (2, INVALID)]
    assert result.outcomes[1].error == "duplicate of row 1 (same customer, branch, service and start)"
    assert requests_made(server) == {"token": {"200": 1}, "reserve": {"201": 1}, "confirm": {"201": 1}}
    assert len(server.appointments("CONFIRMED")) == 1


def test_unknown_branch_in_a_row_fails_that_row_after_one_reserve(
    server: SandboxServer, runner: BulkRunner, tmp_path: Path
) -> None:
    path = tmp_path / "unknown.csv"
    path.write_text(csv_text(row(branch_id=UNKNOWN_GUID)), encoding="utf-8")

    result = runner.book(str(path))

    (outcome,) = result.outcomes
    assert outcome.status == "failed"
    assert outcome.error == "reserve: HTTP 404 not_found"
    assert requests_made(server) == {"token": {"200": 1}, "reserve": {"404": 1}}
    with pytest.raises(QmaticBulkError) as info:
        result.check_policy(max_failed_rows=0)
    assert_no_secret(str(info.value), server=server)


def test_utf8_bom_csv_works(server: SandboxServer, runner: BulkRunner, tmp_path: Path) -> None:
    slot = server.free_slots(limit=1)[0]
    good = row(
        branch_id=slot["branchId"],
        service_id=slot["serviceId"],
        start_time=slot["startTime"],
        end_time=slot["endTime"],
    )
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + csv_text(good).encode("utf-8"))

    result = runner.book(str(path))

    assert [o.status for o in result.outcomes] == [SUCCEEDED]
    assert len(server.appointments("CONFIRMED")) == 1


@dataclass(frozen=True)
class FileCase:
    id: str
    name: str
    content: bytes
    says: str


VALID_TEXT = csv_text(row(first_name="Åsa", last_name="Öberg"))
FILE_CASES = [
    FileCase(
        "missing-columns",
        "rows.csv",
        csv_text(row(), header=["branch_id", "service_id", "start_time", "first_name"]).encode(),
        "lacks the required column(s) personal_identifier, last_name, email",
    ),
    FileCase("latin-1", "rows.csv", VALID_TEXT.encode("latin-1"), "is not UTF-8 text"),
    FileCase("utf-16", "rows.csv", VALID_TEXT.encode("utf-16"), "is not UTF-8 text"),
    FileCase("empty-file", "rows.csv", b"", "is empty"),
    FileCase("not-csv-or-jsonl", "rows.xlsx", b"PK\x03\x04 spreadsheet", "must end in .csv or .jsonl"),
    FileCase("jsonl-not-json", "rows.jsonl", b'{"branch_id": "x"}\n{oops\n', "line 2 is not valid JSON"),
    FileCase("jsonl-not-object", "rows.jsonl", b'["branch_id", "x"]\n', "line 1 is not a JSON object"),
]


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.id for c in FILE_CASES])
def test_unreadable_file_stops_the_run_before_any_request(
    server: SandboxServer, runner: BulkRunner, tmp_path: Path, case: FileCase
) -> None:
    path = tmp_path / case.name
    path.write_bytes(case.content)
    with pytest.raises(QmaticConfigError) as info:
        runner.book(str(path))
    message = str(info.value)
    assert info.value.field in ("rows", "input_file"), message
    assert case.says in message, message
    assert "Åsa" not in message
    assert_untouched(server)
    assert_no_secret(message)


def test_missing_file_is_named(server: SandboxServer, runner: BulkRunner, tmp_path: Path) -> None:
    with pytest.raises(QmaticConfigError) as info:
        runner.book(str(tmp_path / "nowhere.csv"))
    assert info.value.field == "rows"
    assert "does not exist" in str(info.value)
    assert_untouched(server)
