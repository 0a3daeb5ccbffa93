"""Reading rows (lists, CSV with or without BOM, JSON Lines; plain paths, file:// URIs and
ObjectStoragePath) and writing results files. No network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_qmatic.bulk.io import load_rows, normalise_column, write_outcomes
from airflow_provider_qmatic.exceptions import QmaticConfigError
from tests.bulk.conftest import read_outcomes

HEADER = "branch_id,service_id,start_time,end_time,personal_identifier,first_name,last_name,email,phone_number,notes"
LINE = (
    "e3e70682-c209-4cac-a29f-6fbed82c07cd,c8a70639-eb11-47b3-a7a9-c3787c65c1e5,2030-01-07T09:00:00+01:00,"
    '2030-01-07T09:15:00+01:00,ABCDEFGHIJ01,Åsa,Öberg,asa@example.com,+46 8 1,"notes, with a comma"'
)


def test_csv_with_bom_reads_every_field(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(b"\xef\xbb\xbf" + f"{HEADER}\n{LINE}\n\n{LINE}\n".encode())
    loaded = load_rows(str(path), action="book")
    rows = list(loaded)
    assert [n for n, _ in rows] == [1, 2]  # the blank line is no row
    _number, row = rows[0]
    assert row["branch_id"] == "e3e70682-c209-4cac-a29f-6fbed82c07cd"  # not "\ufeffbranch_id"
    assert row["first_name"] == "Åsa"
    assert row["notes"] == "notes, with a comma"
    assert "branch_id" in loaded.columns


def test_semicolon_csv_and_headers_in_other_spellings(tmp_path: Path) -> None:
    header = "Branch Id;serviceId;Start Time;Personal-Identifier;FirstName;last_name;EMAIL"
    line = "b;s;t;p;f;l;e"
    path = tmp_path / "rows.csv"
    path.write_text(f"{header}\n{line}\n", encoding="utf-8")
    ((_, row),) = list(load_rows(path, action="book"))
    assert row == {
        "branch_id": "b",
        "service_id": "s",
        "start_time": "t",
        "personal_identifier": "p",
        "first_name": "f",
        "last_name": "l",
        "email": "e",
    }


def test_column_map_renames_and_rejects_unknown_fields(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text(
        "Kontor,Tjänst,Tid,Personnummer,Förnamn,Efternamn,Epost\nb,s,t,p,f,l,e\n", encoding="utf-8"
    )
    mapping = {
        "Kontor": "branch_id",
        "Tjänst": "service_id",
        "Tid": "start_time",
        "Personnummer": "personal_identifier",
        "Förnamn": "first_name",
        "Efternamn": "last_name",
        "Epost": "email",
    }
    ((_, row),) = list(load_rows(path, action="book", column_map=mapping))
    assert row["personal_identifier"] == "p"
    assert row["branch_id"] == "b"
    with pytest.raises(QmaticConfigError, match="not a field of a bulk book") as info:
        load_rows(path, action="book", column_map={"Kontor": "branch"})
    assert info.value.field == "column_map"


def test_csv_missing_required_columns_lists_them(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("branch_id,service_id,first_name\nb,s,f\n", encoding="utf-8")
    with pytest.raises(QmaticConfigError) as info:
        load_rows(path, action="book")
    message = str(info.value)
    for column in ("start_time", "personal_identifier", "last_name", "email"):
        assert column in message
    assert "branch_id, service_id" not in message.split("columns found")[0]  # present ones not listed
    assert str(path) in message


def test_wrong_encoding_is_a_clear_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(f"{HEADER}\n{LINE}\n".encode("latin-1"))
    with pytest.raises(QmaticConfigError, match="not UTF-8") as info:
        list(load_rows(path, action="book"))  # the header is fine: the bad byte is met when reading
    assert str(path) in str(info.value)
    assert "line 2" in str(info.value)


def test_jsonl_rows_may_be_nested(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    nested = {
        "branchId": "b",
        "serviceId": "s",
        "timeSlot": {"startTime": "t1", "endTime": "t2"},
        "customer": {"personalIdentifier": "p", "firstName": "f", "lastName": "l", "email": "e"},
    }
    flat = {"appointment_id": "a"}
    path.write_text(json.dumps(nested) + "\n\n" + json.dumps(nested) + "\n", encoding="utf-8")
    rows = list(load_rows(path, action="book"))
    assert len(rows) == 2
    assert rows[0][1]["start_time"] == "t1"
    assert rows[0][1]["personal_identifier"] == "p"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(flat) + "\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(QmaticConfigError, match="line 2 is not a JSON object"):
        list(load_rows(bad, action="cancel"))


def test_list_rows_missing_a_column_in_every_row_fail_early() -> None:
    with pytest.raises(QmaticConfigError, match="appointment_id"):
        list(load_rows([{"id": "x"}], action="cancel"))
    loaded = load_rows([{"appointment_id": "x"}, {"other": 1}], action="cancel")
    assert list(loaded)[1][1] == {}  # a ragged row is left to validation (reported as invalid)
    assert loaded.ignored == ("other",)  # columns of no field are ignored (and logged by the runner)


def test_file_uri_and_object_storage_path(tmp_path: Path) -> None:
    from airflow_provider_qmatic.compat import ObjectStoragePath

    path = tmp_path / "cancel.csv"
    path.write_text("appointment_id\n3fa85f64-5717-4562-b3fc-2c963f66afa6\n", encoding="utf-8")
    for source in (f"file://{path}", ObjectStoragePath(f"file://{path}"), ObjectStoragePath(str(path))):
        loaded = load_rows(source, action="cancel")
        assert list(loaded) == [(1, {"appointment_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6"})], source


def test_unknown_extension_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rows.txt"
    path.write_text("appointment_id\nx\n", encoding="utf-8")
    with pytest.raises(QmaticConfigError, match=r"\.csv or \.jsonl"):
        load_rows(path, action="cancel")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_results_round_trip_through_object_storage_path(tmp_path: Path, suffix: str) -> None:
    from airflow_provider_qmatic.compat import ObjectStoragePath

    outcomes = [
        {"row": 1, "status": "succeeded", "appointment_id": "a1", "error": None},
        {"row": 2, "status": "failed", "appointment_id": None, "error": "confirm: HTTP 409 invalid_state"},
    ]
    target = tmp_path / "out" / f"results{suffix}"
    shown = write_outcomes(ObjectStoragePath(f"file://{target}"), outcomes)
    assert str(target) in shown
    assert read_outcomes(target) == outcomes
    if suffix == ".csv":
        assert target.read_text().splitlines()[0] == "row,status,appointment_id,error"
    else:
        assert json.loads(target.read_text().splitlines()[1])["error"] == "confirm: HTTP 409 invalid_state"


def test_normalise_column() -> None:
    assert normalise_column(" Personal Identifier ") == "personal_identifier"
    assert normalise_column("personalIdentifier") == "personal_identifier"
    assert normalise_column("date-of-birth") == "date_of_birth"
