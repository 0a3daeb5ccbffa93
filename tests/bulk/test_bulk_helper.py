"""Validation of a big file in two processes gives exactly what one process gives, whatever the
helper process does.

Each case runs ``BulkRunner.prepare`` twice on the same file, once with the helper (the size
threshold lowered to 0) and once without, and compares everything prepare decides: the valid rows
and their order, each invalid row's message (duplicates across the two processes' shares
included), the row count and the customers with more than one row. The helper is a real
subprocess; to make it fail, ``sys.executable`` is pointed at a script that misbehaves.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic import bulk_helper
from airflow_provider_qmatic.bulk import BulkRunner
from airflow_provider_qmatic.client import build_client
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.exceptions import QmaticConfigError

BRANCH = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
SERVICE = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
HEADER = ["branch_id", "service_id", "start_time", "end_time", "personal_identifier", "first_name"]
HEADER += ["last_name", "email", "phone_number", "notes"]
USED = "Qmatic bulk book: validating"
STOPPED = "the validation helper stopped"


def booking(i: int, customer: int | None = None) -> list[str]:
    hour = 8 + i % 9
    start, end = (
        f"2027-01-{1 + i % 28:02d}T{hour:02d}:00:00+01:00",
        f"2027-01-{1 + i % 28:02d}T{hour:02d}:30:00+01:00",
    )
    pid = f"HELPER{(i if customer is None else customer):010d}"
    return [
        BRANCH,
        SERVICE,
        start,
        end,
        pid,
        "Ada",
        "Lovelace",
        f"{pid.lower()}@example.com",
        "+46 8 1",
        f"row {i}",
    ]


def write_mixed(path: Path, n: int = 600) -> Path:
    """Valid rows; invalid ones of several kinds; duplicates of rows 1, 2 and 3 back (so of both
    parities); customers with several rows; blank lines, which carry no row number."""
    rows: list[list[str]] = []
    for i in range(n):
        if i % 41 == 5:
            row = booking(i)
            row[7] = "no-at-sign"
        elif i % 43 == 9:
            row = booking(i)
            row[2] = "tomorrow"
        elif i % 29 == 11 and i > 3:
            row = list(rows[-1 - i % 3])  # same customer, branch, service and start
        elif i % 31 == 7:
            row = booking(i, customer=i - 1)  # this customer's second booking
        else:
            row = booking(i)
        rows.append(row)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADER)
        for i, row in enumerate(rows):
            writer.writerow(row)
            if i % 97 == 13:
                handle.write("\n")
    return path


def runner() -> BulkRunner:
    config = ClientConfig.from_values(
        client_id="c",
        client_secret="s" * 12,
        tenant="t",
        base_url="http://127.0.0.1:9",
        credential_cache="memory",
    )
    return BulkRunner(build_client(config))


def decided(source: Any, timezone: str | None = None, **kwargs: Any) -> tuple[Any, ...]:
    bulk = runner()
    bulk.timezone = timezone
    items, invalid, total = bulk.prepare("book", source, **kwargs)
    return (
        list(items._first_seen.items()),
        [(o.row, o.error) for o in invalid],
        total,
        bulk._multi_row_customers,
    )


def helpers_alive() -> list[int]:
    """This process's children that are validation helpers."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and b"bulk_helper" in command:
            found.append(int(entry))
    return found


@pytest.fixture
def both_ways(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Any:
    """``compare(source)``: what prepare decides alone and with a helper; asserts they are equal."""
    caplog.set_level(logging.INFO)

    def compare(source: Any, **kwargs: Any) -> tuple[Any, ...]:
        caplog.clear()
        monkeypatch.setattr(bulk_helper, "MIN_FILE_BYTES", 1 << 60)
        alone = decided(source, **kwargs)
        assert USED not in caplog.text
        monkeypatch.setattr(bulk_helper, "MIN_FILE_BYTES", 0)
        helped = decided(source, **kwargs)
        assert helped == alone
        assert not helpers_alive()
        return alone

    return compare


def test_two_processes_decide_exactly_what_one_does(
    both_ways: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    valid, invalid, total, multi = both_ways(write_mixed(tmp_path / "rows.csv"))
    assert USED in caplog.text  # the helper did its share
    assert STOPPED not in caplog.text
    assert total == 600
    assert len(valid) + len(invalid) == 600
    messages = [error for _row, error in invalid]
    duplicates = [m for m in messages if m.startswith("duplicate of row")]
    assert len(duplicates) >= 15
    assert {row % 2 for row, m in invalid if m.startswith("duplicate")} == {0, 1}
    assert any("email" in m for m in messages)
    assert any("start_time" in m for m in messages)
    assert multi


def test_json_lines_and_renamed_columns_and_a_zone_too(both_ways: Any, tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for i in range(300):
            row = dict(zip(HEADER, booking(i), strict=True))
            row["start_time"], row["end_time"] = row["start_time"][:19], row["end_time"][:19]  # naive
            row["mail"] = row.pop("email")
            if i % 17 == 3:
                row["phone_number"] = "call me"
            handle.write(json.dumps(row) + "\n")
    # The zone reaches the helper: naive times are read in it, or refused without one.
    renamed = {"mail": "email"}
    stockholm, invalid, total, _ = both_ways(path, column_map=renamed, timezone="Europe/Stockholm")
    lisbon = both_ways(path, column_map=renamed, timezone="Europe/Lisbon")[0]
    assert total == 300
    assert len(invalid) == 18  # the phone numbers
    assert len(stockholm) == len(lisbon) == 282
    assert {key for key, _ in stockholm}.isdisjoint(key for key, _ in lisbon)  # other instants
    assert not both_ways(path, column_map=renamed)[0]


def test_a_broken_file_fails_with_the_same_message_either_way(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_mixed(tmp_path / "rows.csv", 200)
    with path.open("ab") as handle:
        handle.write(b"\xff\xfe not utf-8\n")
    too_many = write_mixed(tmp_path / "many.csv", 200)
    messages = []
    for threshold in (1 << 60, 0):
        monkeypatch.setattr(bulk_helper, "MIN_FILE_BYTES", threshold)
        for source, kwargs in ((path, {}), (too_many, {"max_rows": 150})):
            bulk = runner()
            bulk.max_rows = kwargs.get("max_rows", bulk.max_rows)
            with pytest.raises(QmaticConfigError) as caught:
                bulk.prepare("book", source)
            messages.append(caught.value.message)
        assert not helpers_alive()
    assert messages[:2] == messages[2:]
    assert "not UTF-8" in messages[0]
    assert "max_rows=150" in messages[1]


def _fake_python(tmp_path: Path, body: str) -> str:
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\nREAL={sys.executable}\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param("exit 3", id="dies-at-once"),
        pytest.param('"$REAL" "$@" | head -n 40', id="dies-after-40-rows"),
        pytest.param("cat >/dev/null; printf '4\\tabc\\t\\t\\n'", id="out-of-step"),
        pytest.param('cat >/dev/null; printf \'2\\t\\t\\t{"not": "a message"}\\n\'', id="garbled-error"),
        pytest.param("cat >/dev/null; printf '2\\t\\t\\n'", id="too-few-fields"),
        pytest.param("cat >/dev/null; sleep 0.2; printf 'nonsense\\n'; sleep 60", id="garbage-then-hangs"),
        pytest.param("cat >/dev/null; exec sleep 60", id="hangs-silently"),
    ],
)
def test_a_helper_that_fails_is_replaced_by_validating_here(
    both_ways: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    body: str,
) -> None:
    path = write_mixed(tmp_path / "rows.csv", 300)
    monkeypatch.setattr(sys, "executable", _fake_python(tmp_path, body))
    monkeypatch.setattr(bulk_helper, "STALL_S", 1.0)
    _valid, invalid, total, _ = both_ways(path)
    assert total == 300
    assert invalid
    assert STOPPED in caplog.text


def test_a_helper_that_imports_another_copy_of_the_package_is_not_used(
    both_ways: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Another installed version could validate by other rules: the helper must run the task's code.
    other = tmp_path / "other-site"
    shutil.copytree(
        Path(bulk_helper.__file__).parent,
        other / "airflow_provider_qmatic",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    path = write_mixed(tmp_path / "rows.csv", 100)
    monkeypatch.setattr(sys, "executable", _fake_python(tmp_path, f'PYTHONPATH={other} exec "$REAL" "$@"'))
    both_ways(path)
    assert "stopped at row 2 (exit code 3)" in caplog.text
    # A copy in the working directory is never imported by the helper (Python puts the working
    # directory first on sys.path for -c and -m; the helper drops it).
    monkeypatch.undo()
    monkeypatch.chdir(other)
    both_ways(path)
    assert USED in caplog.text
    assert STOPPED not in caplog.text


def test_no_helper_when_it_cannot_start_or_would_not_help(
    both_ways: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_mixed(tmp_path / "rows.csv", 100)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    both_ways(path)
    assert USED not in caplog.text
    assert "validating on one core" in caplog.text
    monkeypatch.setattr(bulk_helper, "MIN_FILE_BYTES", 0)
    v2, v1_quota, v1_period = tmp_path / "cpu.max", tmp_path / "cfs_quota_us", tmp_path / "cfs_period_us"
    monkeypatch.setattr(bulk_helper, "CGROUP_CPU_FILES", ((str(v2),), (str(v1_quota), str(v1_period))))
    v2.write_text("max 100000\n")  # no quota
    v1_quota.write_text("-1\n")
    v1_period.write_text("100000\n")
    assert bulk_helper._cpus() == len(os.sched_getaffinity(0))
    v2.write_text("150000 100000\n")  # a pod limited to 1.5 CPUs
    assert bulk_helper._cpus() == min(1.5, len(os.sched_getaffinity(0)))
    v2.unlink()
    v1_quota.write_text("100000\n")  # cgroup v1, one CPU
    assert bulk_helper._cpus() == 1
    rows = [dict(zip(HEADER, booking(i), strict=True)) for i in range(20)]
    caplog.clear()
    for source in (path, rows):  # one CPU's time; a list of rows is never handed to a helper
        runner().prepare("book", source)
    assert USED not in caplog.text
