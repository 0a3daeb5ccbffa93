"""Hostile input and results files of the bulk runner, without a server (or with a scripted one
that must stay silent): results written safely, never over the input, spreadsheet formulas
neutralised, deep JSON nesting and oversized inputs refused by line and field, rows streamed."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.bulk.io import load_rows, write_outcomes
from airflow_provider_qmatic.bulk.runner import FAILED, SUCCEEDED, BulkRunner
from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.exceptions import QmaticConfigError
from tests.bulk.conftest import read_outcomes
from tests.hostile.test_cache_files import outcome_within, plant_fifo
from tests.scripted_server import Reply, ScriptedServer, scripted, token_reply

pytestmark = pytest.mark.airflow

BRANCH = "e3e70682-c209-4cac-a29f-6fbed82c07cd"
SERVICE = "c8a70639-eb11-47b3-a7a9-c3787c65c1e5"
GOOD = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
CANCEL_HEADER = "appointment_id\n"


def cancel_csv(path: Path, n: int) -> Path:
    path.write_text(
        CANCEL_HEADER + "".join(f"3fa85f64-5717-4562-b3fc-{i:012d}\n" for i in range(n)), encoding="utf-8"
    )
    return path


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    yield from scripted()


@pytest.fixture
def client(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[QmaticClient]:
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    conn = {
        "conn_type": "qmatic",
        "login": "scripted-client",
        "password": "scripted-secret-9b1f",
        "extra": {
            "tenant": "demo",
            "system_id": "sys-1",
            "base_url": server.base_url,
            "credential_cache": "memory",
            "requests_per_minute": 600000,
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_QMATIC_DEFAULT", json.dumps(conn))
    client = QmaticClient(QmaticHook().config)
    yield client
    client.close()


# -- results files -------------------------------------------------------------------------------

FORMULAS = ['=HYPERLINK("http://evil")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def test_csv_results_neutralise_formulas_and_jsonl_keeps_values(tmp_path: Path) -> None:
    outcomes = [
        {"row": i + 1, "status": "failed", "appointment_id": value, "error": value}
        for i, value in enumerate(FORMULAS)
    ]
    outcomes.append({"row": 99, "status": "succeeded", "appointment_id": GOOD, "error": None})

    write_outcomes(tmp_path / "results.csv", outcomes)
    write_outcomes(tmp_path / "results.jsonl", outcomes)

    with (tmp_path / "results.csv").open(newline="", encoding="utf-8") as handle:
        cells = [cell for record in list(csv.reader(handle))[1:] for cell in record]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))], cells
    assert cells.count("'" + FORMULAS[0]) == 2
    assert GOOD in cells
    assert read_outcomes(tmp_path / "results.csv") == outcomes  # read back as written
    lines = (tmp_path / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == outcomes


def test_a_symlink_planted_at_the_temporary_name_is_never_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    # The name the writer used to choose, predictable from the pid; and a few neighbours.
    for suffix in (f"{os.getpid()}.tmp", "tmp", "0.tmp"):
        (out / f".results.csv.{suffix}").symlink_to(victim)
    target = out / "results.csv"
    target.write_text("old", encoding="utf-8")
    os.chmod(target, 0o640)

    write_outcomes(target, [{"row": 1, "status": "succeeded", "appointment_id": GOOD, "error": None}])

    assert victim.read_text(encoding="utf-8") == "precious"
    assert read_outcomes(target)[0]["appointment_id"] == GOOD
    assert oct(target.stat().st_mode & 0o777) == oct(0o640)  # an existing file's mode is kept
    leftovers = {p.name for p in out.iterdir()} - {"results.csv"}
    assert all((out / name).is_symlink() for name in leftovers), leftovers


def test_tilde_in_results_and_input_paths_is_the_home_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_qmatic.operators import bulk as operators

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    cancel_csv(home / "rows.csv", 2)

    # As the operators turn the rendered rows and results_path into paths, and as the runner's
    # own callers pass them (plain strings).
    write_outcomes(operators._object_path("~/out/results.csv"), [{"row": 1, "status": "invalid"}])
    write_outcomes("~/out/results.jsonl", [{"row": 1, "status": "invalid"}])

    assert (home / "out" / "results.csv").is_file()
    assert (home / "out" / "results.jsonl").is_file()
    assert not (tmp_path / "~").exists()
    source = operators.QmaticBulkCancelAppointmentsOperator._source("~/rows.csv")
    assert len(list(load_rows(source, action="cancel"))) == 2
    assert len(list(load_rows("~/rows.csv", action="cancel"))) == 2


def same_as_input(tmp_path: Path, rows: Path) -> list[Any]:
    from airflow_provider_qmatic.compat import ObjectStoragePath

    link = tmp_path / "link.csv"
    link.symlink_to(rows)
    hard = tmp_path / "hard.csv"
    os.link(rows, hard)
    return [
        str(rows),
        rows,
        f"file://{rows}",
        ObjectStoragePath(f"file://{rows}"),
        str(tmp_path / "sub" / ".." / rows.name),
        str(link),
        str(hard),
    ]


def test_results_path_equal_to_the_input_is_refused_before_any_request(
    tmp_path: Path, server: ScriptedServer, client: QmaticClient
) -> None:
    rows = cancel_csv(tmp_path / "rows.csv", 3)
    (tmp_path / "sub").mkdir()
    before = rows.read_bytes()
    for results_path in same_as_input(tmp_path, rows):
        with pytest.raises(QmaticConfigError) as info:
            BulkRunner(client).cancel(str(rows), results_path=results_path)
        assert info.value.field == "results_path", results_path
        assert "is the input file" in str(info.value)
    assert rows.read_bytes() == before
    assert server.paths() == []


# -- input files ---------------------------------------------------------------------------------


def test_deeply_nested_jsonl_line_is_a_config_error_naming_the_line(
    tmp_path: Path, server: ScriptedServer, client: QmaticClient
) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text(
        json.dumps({"appointment_id": GOOD}) + "\n" + '{"appointment_id": ' + "[" * 100_000 + "\n",
        encoding="utf-8",
    )
    with pytest.raises(QmaticConfigError) as info:
        BulkRunner(client).cancel(str(path))
    assert "line 2" in str(info.value)
    assert "nested too deeply" in str(info.value)
    assert info.value.field == "rows"
    assert server.paths() == []


@pytest.mark.parametrize("uri", [False, True])
def test_rows_naming_a_fifo_without_a_writer_is_refused_not_waited_on(
    uri: bool, tmp_path: Path, server: ScriptedServer, client: QmaticClient
) -> None:
    """``open()`` of a FIFO waits for a writer; none comes, so the task would hang for ever. The
    runner is run in a thread bounded by PATIENCE_S: a regression fails, it does not hang."""
    fifo = plant_fifo(tmp_path / "rows.csv")
    source = fifo.as_uri() if uri else str(fifo)

    error = outcome_within(lambda: BulkRunner(client).cancel(source), fifo)

    assert isinstance(error, QmaticConfigError), error
    assert error.field == "rows"
    assert "is a FIFO, not a regular file" in str(error)
    assert "name a regular .csv or .jsonl file" in str(error)
    assert server.paths() == []


def test_rows_naming_a_directory_is_refused_naming_rows(tmp_path: Path) -> None:
    folder = tmp_path / "rows.csv"
    folder.mkdir()
    with pytest.raises(QmaticConfigError) as info:
        list(load_rows(str(folder), action="cancel"))
    assert info.value.field == "rows"
    assert "is a directory, not a regular file" in str(info.value)


def test_deeply_nested_json_rows_argument_is_a_config_error() -> None:
    from airflow_provider_qmatic.operators.bulk import QmaticBulkCancelAppointmentsOperator

    for text in ("[" * 100_000, "[" + "{" * 100_000):
        with pytest.raises(QmaticConfigError) as info:
            QmaticBulkCancelAppointmentsOperator._source(text)
        assert info.value.field == "rows"


def test_more_rows_than_max_rows_is_refused_before_any_request(
    tmp_path: Path, server: ScriptedServer, client: QmaticClient
) -> None:
    path = cancel_csv(tmp_path / "rows.csv", 5)
    for source in (str(path), [{"appointment_id": GOOD}] * 5):
        with pytest.raises(QmaticConfigError) as info:
            BulkRunner(client, max_rows=4).cancel(source)
        assert info.value.field == "max_rows"
        assert "more than max_rows=4 rows" in str(info.value)
    assert server.paths() == []
    with pytest.raises(QmaticConfigError) as bad:
        BulkRunner(client, max_rows=0)
    assert bad.value.field == "max_rows"


def test_max_rows_is_an_operator_argument_checked_at_parse_time() -> None:
    from airflow_provider_qmatic.operators.bulk import QmaticBulkBookAppointmentsOperator

    operator = QmaticBulkBookAppointmentsOperator(task_id="t", rows="rows.csv", max_rows=50)
    assert operator.max_rows == 50
    for bad in (0, -1, 1.5, True):
        with pytest.raises(QmaticConfigError) as info:
            QmaticBulkBookAppointmentsOperator(task_id="t", rows="rows.csv", max_rows=bad)
        assert info.value.field == "max_rows"


class CountingPath:
    """A path-like whose handles count the bytes read (an object store's file, say)."""

    def __init__(self, path: Path) -> None:
        self.path_ = path
        self.name = path.name
        self.read = 0

    def __str__(self) -> str:
        return str(self.path_)

    def open(self, mode: str = "rb") -> Any:
        outer = self

        class Counting(io.FileIO):
            def read(self, size: int = -1) -> bytes:
                data = super().read(size)
                outer.read += len(data or b"")
                return data or b""

        return Counting(self.path_, "rb")


def test_rows_are_read_lazily_a_chunk_at_a_time(tmp_path: Path) -> None:
    path = cancel_csv(tmp_path / "rows.csv", 200_000)  # 7.4 MB
    source = CountingPath(path)
    rows = iter(load_rows(source, action="cancel"))
    header_only = source.read
    first = next(rows)
    assert first == (1, {"appointment_id": "3fa85f64-5717-4562-b3fc-000000000000"})
    assert source.read - header_only <= 1024 * 1024  # one chunk, not the file
    assert sum(1 for _ in rows) == 199_999
    assert source.read - header_only == path.stat().st_size


class ChangingPath:
    """A path-like whose content is replaced after ``opens`` reads: a file rewritten mid-job."""

    def __init__(self, name: str, before: bytes, after: bytes, opens: int) -> None:
        self.name = name
        self.versions = (before, after)
        self.opens = opens
        self.count = 0

    def __str__(self) -> str:
        return f"memory://{self.name}"

    def open(self, mode: str = "rb") -> io.BytesIO:
        self.count += 1
        return io.BytesIO(self.versions[self.count > self.opens])


def test_a_row_changed_after_validation_is_failed_not_sent(
    server: ScriptedServer, client: QmaticClient
) -> None:
    header = "branch_id,service_id,start_time,end_time,personal_identifier,first_name,last_name,email\n"
    line = (
        f"{BRANCH},{SERVICE},2030-12-02T09:00:00+01:00,2030-12-02T09:15:00+01:00,{{pid}},Karin,Boye,k@x.se\n"
    )
    before = header + line.format(pid="PERSON0000001") + line.format(pid="PERSON0000002")
    after = header + line.format(pid="PERSON0000001") + line.format(pid="INTRUDER000009")
    # Opened for the header, then for validation; the run's own reading finds row 2 replaced.
    source = ChangingPath("rows.csv", before.encode(), after.encode(), opens=2)
    server.script("/oauth2/token", token_reply())
    server.script("/external/v1/reservations", Reply(201, {"appointmentId": GOOD, "status": "RESERVED"}))
    server.script(f"/external/v1/appointments/{GOOD}/confirm", Reply(201, {"appointmentId": GOOD}))

    result = BulkRunner(client, concurrency=1).book(source)

    assert [(o.row, o.status) for o in result.outcomes] == [(1, SUCCEEDED), (2, FAILED)]
    assert result.outcomes[1].error == "the input changed after it was validated; row not sent"
    assert server.paths().count("/external/v1/reservations") == 1
    assert all(b"INTRUDER" not in r.body for r in server.requests)
    assert result.summary.invalid == 0


def test_a_line_longer_than_8_mib_is_refused_not_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    with path.open("wb") as handle:
        handle.write(CANCEL_HEADER.encode())
        handle.write(b"a" * (9 * 1024 * 1024))
    source = CountingPath(path)
    with pytest.raises(QmaticConfigError, match="line 2 is longer than 8 MiB") as info:
        list(load_rows(source, action="cancel"))
    assert info.value.field == "rows"
    assert source.read < 2 * 10 * 1024 * 1024  # header check plus at most 9 MiB of the line
