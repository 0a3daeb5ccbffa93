"""The journal: durable, private, locked per task instance, and how a retry settles what it shows."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from airflow_provider_qmatic.api.models import BookingRequest
from airflow_provider_qmatic.bulk.runner import BulkRunner, _fingerprint, _instant
from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.exceptions import QmaticConfigError, QmaticJournalBusyError
from airflow_provider_qmatic.sandbox import SandboxServer
from airflow_provider_qmatic.state import request_budget
from airflow_provider_qmatic.state.journal import (
    FINGERPRINTS,
    RETENTION_DAYS,
    FileJournal,
    journal_name,
    key_id,
)

from .conftest import booking_rows, confirmed_by_customer, make_client, make_config, requests_to

# The connection whose journals these are (journal names hold its identity).
CONFIG = ClientConfig.from_values(client_id="c", client_secret="s", tenant="t", region="eu-west-1")


def test_journal_survives_a_torn_line_and_is_locked_per_task_instance(journal_dir: Path) -> None:
    path = journal_dir / journal_name(CONFIG, dag_id="d", run_id="r", task_id="t", map_index=3)
    assert path.name != journal_name(CONFIG, dag_id="d", run_id="r", task_id="t", map_index=4)
    journal = FileJournal(path)
    state = journal.open()
    assert state.entries == 0
    journal.record("reserved", fingerprint="f1", row=1, reservation_id="r1")
    journal.record("reserved", fingerprint="f2", row=2, reservation_id="r2", appointment_id="a2")
    journal.record("done", fingerprint="f1", row=1, reservation_id="r1", appointment_id="r1")
    with pytest.raises(QmaticJournalBusyError) as info:
        FileJournal(path).open()  # a second attempt on this host while the first still runs
    assert info.value.retryable
    journal.close()
    with path.open("ab") as handle:
        handle.write(b'{"e": "done", "fp": "f2", "ro')  # torn by a kill
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)

    again = FileJournal(path)
    state = again.open()
    again.close()
    assert state.done == {"f1": "r1"}
    assert state.open_reservations == {"r2": ("f2", 2, "a2")}


def test_journal_directory_must_be_private_and_old_journals_go(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    os.chmod(loose, 0o777)
    with pytest.raises(QmaticConfigError, match="lets the group or others in"):
        FileJournal(loose / "j.jsonl").open()
    private = tmp_path / "private"
    old_name = journal_name(CONFIG, dag_id="d", run_id="old", task_id="t")
    new_name = journal_name(CONFIG, dag_id="d", run_id="new", task_id="t")
    old = FileJournal(private / old_name)
    old.open()
    old.close()
    stale = time.time() - (RETENTION_DAYS + 1) * 86400
    os.utime(private / old_name, (stale, stale))
    current = FileJournal(private / new_name)
    current.open()
    current.close()
    assert sorted(p.name for p in private.iterdir()) == [new_name]


def test_a_journal_of_attempts_under_another_key_is_not_complete(journal_dir: Path) -> None:
    """The fingerprint key comes from the client secret: after a rotation the earlier attempts'
    fingerprints match no row, so their journal cannot say a row was never started (it would be
    sent again unchecked); only attempts under this key count."""
    rotated = ClientConfig.from_values(client_id="c", client_secret="s2", tenant="t", region="eu-west-1")
    old_key, new_key = CONFIG.derived_key(FINGERPRINTS), rotated.derived_key(FINGERPRINTS)
    assert old_key != new_key
    assert len(new_key) == 32
    path = journal_dir / journal_name(CONFIG, dag_id="d", run_id="r", task_id="t")
    journal = FileJournal(path)
    journal.open()
    journal.record_attempt(1, key=old_key)
    journal.close()
    with FileJournal(path) as state:
        assert state.complete_before(2, old_key)
        assert not state.complete_before(2, new_key)
        assert not state.complete_before(3, old_key)  # attempt 2 is missing
    assert key_id(old_key) in path.read_text()
    assert key_id(old_key) != key_id(new_key)


def _reserve_for(client: QmaticClient, row: dict[str, str]) -> tuple[str, str]:
    """Reserve a row's slot as an earlier (killed) attempt would have; (reservation id, fingerprint)."""
    nested = {k: v for k, v in row.items() if k in ("branch_id", "service_id", "start_time", "end_time")}
    nested["customer"] = {k: row[k] for k in ("personal_identifier", "first_name", "last_name", "email")}
    request = BookingRequest.parse(nested)
    reservation = client.reserve(request.reservation_body())
    fingerprint = _fingerprint(
        client.config.derived_key(FINGERPRINTS),
        "book",
        request.customer.personal_identifier,
        request.branch_id,
        request.service_id,
        _instant(request.start_time),
    )
    return reservation.appointment_id, fingerprint


def test_retry_settles_journaled_reservations_before_sending_anything(
    sandbox: SandboxServer, tmp_path: Path, journal_dir: Path
) -> None:
    rows = booking_rows(sandbox, 3)
    client = make_client(sandbox, tmp_path)
    path = journal_dir / "task.jsonl"
    # What a killed attempt left: row 1 reserved and confirmed (the kill came before the journal
    # line), row 2 reserved only, row 3 not started.
    rid1, fp1 = _reserve_for(client, rows[0])
    client.confirm(
        rid1,
        {
            "customer": {
                "personalIdentifier": rows[0]["personal_identifier"],
                "firstName": "Ada",
                "lastName": "Lovelace",
                "email": rows[0]["email"],
            }
        },
    )
    rid2, fp2 = _reserve_for(client, rows[1])
    journal = FileJournal(path)
    journal.open()
    journal.record("reserved", fingerprint=fp1, row=1, reservation_id=rid1)
    journal.record("reserved", fingerprint=fp2, row=2, reservation_id=rid2)
    journal.close()
    reserves = requests_to(sandbox, "reserve")

    # Even with skip_existing="never", the journal's own record is honoured.
    result = BulkRunner(client, attempt=2, skip_existing="never", journal_path=path).book(rows)

    assert [o.status for o in result.outcomes] == ["skipped_existing", "succeeded", "succeeded"]
    assert result.outcomes[0].appointment_id == rid1
    statuses = {a["appointmentId"]: a["status"] for a in sandbox.appointments()}
    assert statuses[rid2] == "RELEASED"  # released before the row booked again
    assert requests_to(sandbox, "reserve") == reserves + 2
    assert sorted(confirmed_by_customer(sandbox).values()) == [1, 1, 1]


def test_a_reservation_that_cannot_be_checked_holds_its_row_back(
    sandbox: SandboxServer, tmp_path: Path, journal_dir: Path
) -> None:
    rows = booking_rows(sandbox, 2)
    config = make_config(sandbox, tmp_path / "tokens")
    client = QmaticClient(config, limiter=request_budget(config), sleep=lambda _s: None)
    path = journal_dir / "task.jsonl"
    rid, fingerprint = _reserve_for(client, rows[0])
    journal = FileJournal(path)
    journal.open()
    journal.record("reserved", fingerprint=fingerprint, row=1, reservation_id=rid)
    journal.close()
    sandbox.configure(fail_rate=1.0, fault_endpoints=["get"])  # Qmatic cannot say what became of it

    held_back = BulkRunner(client, attempt=2, skip_existing="never", journal_path=path).book(rows)

    first, second = held_back.outcomes
    assert first.status == "failed"
    assert first.retryable
    assert "could not be checked" in first.error
    assert second.status == "succeeded"
    assert requests_to(sandbox, "reserve") == 2  # the held-back row sent nothing

    sandbox.configure(fail_rate=0.0)
    retried = BulkRunner(client, attempt=3, journal_path=path).book(rows)
    assert [o.status for o in retried.outcomes] == ["succeeded", "skipped_existing"]
    assert {a["appointmentId"]: a["status"] for a in sandbox.appointments()}[rid] == "RELEASED"
    assert sorted(confirmed_by_customer(sandbox).values()) == [1, 1]
