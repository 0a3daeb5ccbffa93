"""The bulk journal among hostile files: clean-up deletes only the runner's own old journals, and
a journal line nested deeper than any parser goes is skipped with a warning, not a crash."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.state.journal import MARKER, RETENTION_DAYS, FileJournal, journal_name

# The connection whose journals these are (journal names hold its identity).
CONFIG = ClientConfig.from_values(client_id="c", client_secret="s", tenant="t", region="eu-west-1")

STALE = time.time() - (RETENTION_DAYS + 30) * 86400


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True)
    os.chmod(path, 0o700)
    return path


def make_old(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    os.chmod(path, 0o600)
    os.utime(path, (STALE, STALE))
    return path


def test_clean_up_never_deletes_a_users_own_jsonl(tmp_path: Path) -> None:
    directory = private_dir(tmp_path / "journals")
    ours = make_old(directory / journal_name(CONFIG, dag_id="d", run_id="old", task_id="t"), MARKER)
    users = make_old(directory / "customers-2030.jsonl", b'{"customer": "precious"}\n')
    # Named like a journal, but not started with the marker: not provably ours, so kept.
    lookalike = make_old(directory / ("f" * 40 + ".jsonl"), b'{"e":"done","fp":"x","row":1}\n')
    # A symlink to a journal-looking old file elsewhere: never followed, never deleted.
    elsewhere = make_old(private_dir(tmp_path / "other") / "target.jsonl", MARKER)
    link = directory / ("e" * 40 + ".jsonl")
    link.symlink_to(elsewhere)

    with FileJournal(directory / journal_name(CONFIG, dag_id="d", run_id="new", task_id="t")):
        pass

    assert not ours.exists()
    assert users.read_bytes() == b'{"customer": "precious"}\n'
    assert lookalike.exists()
    assert link.is_symlink()
    assert elsewhere.read_bytes() == MARKER


def test_clean_up_spares_a_journal_a_running_attempt_holds(tmp_path: Path) -> None:
    directory = private_dir(tmp_path / "journals")
    running_path = directory / journal_name(CONFIG, dag_id="d", run_id="long", task_id="t")
    running = FileJournal(running_path)
    running.open()
    try:
        os.utime(running_path, (STALE, STALE))
        with FileJournal(directory / journal_name(CONFIG, dag_id="d", run_id="new", task_id="t")):
            pass
        assert running_path.exists()
    finally:
        running.close()


def test_a_new_journal_starts_with_the_marker(tmp_path: Path) -> None:
    path = private_dir(tmp_path / "journals") / journal_name(CONFIG, dag_id="d", run_id="r", task_id="t")
    with FileJournal(path) as state:
        assert state.entries == 0
    with FileJournal(path) as state:  # reopened: the marker is not an entry, and is not written twice
        assert state.entries == 0
    assert path.read_bytes() == MARKER


def test_deeply_nested_journal_line_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = private_dir(tmp_path / "journals") / journal_name(CONFIG, dag_id="d", run_id="r", task_id="t")
    journal = FileJournal(path)
    journal.open()
    journal.record("reserved", fingerprint="f1", row=1, reservation_id="r1")
    journal.close()
    with path.open("ab") as handle:
        handle.write(b"[" * 100_000 + b"\n")
        handle.write(b'{"e":"done","fp":"f1","row":1,"res":"r1","appt":"r1"}\n')

    with (
        caplog.at_level(logging.WARNING, logger="airflow_provider_qmatic.state.journal"),
        FileJournal(path) as state,
    ):
        pass

    assert state.done == {"f1": "r1"}
    assert state.open_reservations == {}
    assert any("line 3 is not a journal entry" in r.getMessage() for r in caplog.records), caplog.text
