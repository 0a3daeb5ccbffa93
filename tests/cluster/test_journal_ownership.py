"""Whose a journal is (issue 20): a journal belongs to one connection (Qmatic host, tenant, system id,
client id), its fingerprints are keyed with a key derived from the client secret, and an attempt that lost it to a
newer one writes nothing. Against a real redis-server and a sandbox with two tenants."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import redis

from airflow_provider_qmatic import state
from airflow_provider_qmatic.bulk.runner import SKIPPED_EXISTING, SUCCEEDED, BulkRunner
from airflow_provider_qmatic.client.client import build_client
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.exceptions import QmaticJournalBusyError
from airflow_provider_qmatic.sandbox import SandboxClient, SandboxServer, SandboxSettings
from airflow_provider_qmatic.state._redis import digest, redis_for
from airflow_provider_qmatic.state.journal import RedisJournal
from benchmarks.cluster import RedisServer
from tests.bulk.conftest import booking_rows, read_outcomes, requests_to

from .conftest import config_values

# One secret for both: the journal's name alone (not keyed fingerprints) must keep them apart, as
# for two deployments of one tenant's credentials at two Qmatic hosts.
SECRET = "shared-secret-0123456789abcdef"
ALPHA = SandboxClient("alpha-client", SECRET, "alpha")
BETA = SandboxClient("beta-client", SECRET, "beta")
TASK = {"dag_id": "nightly_bookings", "run_id": "scheduled__2030-01-07T02:00:00+00:00", "task_id": "book"}


@pytest.fixture(scope="module")
def two_tenants() -> Iterator[SandboxServer]:
    """A private sandbox with two tenants; seeded slots are shared, appointments are per tenant."""
    settings = SandboxSettings(
        clients=(ALPHA, BETA), requests_per_minute=0, token_requests_per_second=0, slot_capacity=5
    )
    server = SandboxServer(settings).start()
    try:
        yield server
    finally:
        server.stop()


def tenant_config(
    server: SandboxServer, client: SandboxClient, tmp_path: Path, cache: str, redis: RedisServer
) -> ClientConfig:
    return ClientConfig.from_values(
        client_id=client.client_id,
        client_secret=client.client_secret,
        tenant=client.tenant,
        base_url=server.base_url,
        system_id=client.system_id,
        requests_per_minute=60_000,
        credential_cache=cache,
        credential_cache_dir=str(tmp_path / f"tokens-{client.tenant}"),
        redis_conn_id=redis.conn_id,
    )


def run_job(config: ClientConfig, rows: list[dict[str, Any]], journal_dir: Path, attempt: int = 1) -> Any:
    """A bulk booking as the operator runs it: the task instance's journal through ``config``."""
    journal = state.task_journal(config, **TASK, journal_dir=journal_dir)
    return BulkRunner(build_client(config), attempt=attempt, journal_path=journal).book(rows)


@pytest.mark.parametrize("cache", ["file", "redis"])
def test_two_tenants_with_the_same_task_ids_each_book_their_own_rows(
    cache: str,
    two_tenants: SandboxServer,
    tmp_path: Path,
    redis_server: RedisServer,
) -> None:
    """Same DAG, run id and task id, one Redis (or one journal directory): the second tenant's job
    books its rows instead of reading the first one's as done (and booking nobody)."""
    two_tenants.reset()
    rows = booking_rows(two_tenants, 3)
    journals = tmp_path / "journals"
    alpha = tenant_config(two_tenants, ALPHA, tmp_path, cache, redis_server)
    beta = tenant_config(two_tenants, BETA, tmp_path, cache, redis_server)

    first = run_job(alpha, rows, journals)
    second = run_job(beta, rows, journals)

    assert first.summary.succeeded == 3
    assert second.summary.succeeded == 3, [o.to_dict() for o in second.outcomes]
    assert {o.status for o in second.outcomes} == {SUCCEEDED}
    assert len(two_tenants.appointments(status="CONFIRMED", tenant="beta")) == 3
    alpha_ids = {a["appointmentId"] for a in two_tenants.appointments(tenant="alpha")}
    assert not alpha_ids & {o.appointment_id for o in second.outcomes}

    # Each job's own retry still reads its own journal: nothing sent again, nothing looked up.
    reserves = requests_to(two_tenants, "reserve")
    retried = run_job(alpha, rows, journals, attempt=2)
    assert {o.status for o in retried.outcomes} == {SKIPPED_EXISTING}
    assert requests_to(two_tenants, "reserve") == reserves
    assert requests_to(two_tenants, "search") == 0


def test_journal_fingerprints_in_redis_are_keyed_and_a_retry_still_resumes(
    two_tenants: SandboxServer, tmp_path: Path, redis_server: RedisServer
) -> None:
    """A reader of Redis finds no plain SHA-256 of a row's identifier and slot (a date-based
    identifier was brute-forced from one in 0.2 s); the retry, deriving the same key from the same
    secret, still recognises every row as done."""
    two_tenants.reset()
    rows = booking_rows(two_tenants, 3)
    config = tenant_config(two_tenants, ALPHA, tmp_path, "redis", redis_server)
    assert run_job(config, rows, tmp_path).summary.succeeded == 3

    raw = redis.Redis(host="127.0.0.1", port=redis_server.port)
    [journal] = [k for k in raw.keys("qmatic:journal:*") if not k.endswith(b":lease")]
    stored = b"\n".join(raw.lrange(journal, 0, -1)).decode()
    fingerprints = {json.loads(line).get("fp") for line in stored.splitlines()} - {None}
    assert len(fingerprints) == 3
    for row in rows:
        assert row["personal_identifier"] not in stored
        start = datetime.fromisoformat(row["start_time"]).astimezone(timezone.utc).isoformat()
        parts = ["book", row["personal_identifier"], row["branch_id"], row["service_id"], start]
        plain = hashlib.sha256(json.dumps(parts).encode()).hexdigest()
        assert plain[:24] not in stored, "an unkeyed fingerprint is in Redis"
        assert hashlib.sha256(row["personal_identifier"].encode()).hexdigest()[:24] not in stored

    reserves = requests_to(two_tenants, "reserve")
    retried = run_job(config, rows, tmp_path, attempt=2)
    assert {o.status for o in retried.outcomes} == {SKIPPED_EXISTING}
    assert requests_to(two_tenants, "reserve") == reserves
    assert requests_to(two_tenants, "search") == 0  # the journal, complete and under the same key


CHILD = Path(__file__).resolve().parent.parent / "bulk" / "bulk_child.py"
LEASE_S = 1.0


@pytest.mark.slow  # a child process with Airflow's Redis hook: ~20 s on a loaded machine
def test_an_attempt_frozen_past_its_lease_writes_nothing_after_the_takeover(
    two_tenants: SandboxServer, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Attempt 1 (a process) is frozen mid-job (SIGSTOP) until its lease runs out; attempt 2 takes
    the journal over, settles what 1 left and finishes the job. Woken (SIGCONT), attempt 1 must
    not overwrite 2's results file nor add a journal line, and fails naming what happened."""
    two_tenants.reset()
    two_tenants.configure(latency_ms=150)  # attempt 1 is caught mid-job, not after its last row
    rows = booking_rows(two_tenants, 6)
    config = tenant_config(two_tenants, ALPHA, tmp_path, "redis", redis_server)
    results = tmp_path / "results.csv"
    name = "superseded-task.jsonl"
    link = redis_for(redis_server.conn_id)
    list_key = link.key("journal", digest(name))
    raw = redis.Redis(host="127.0.0.1", port=redis_server.port)
    args = {
        "config": config_values(config),
        "rows": rows,
        "results": str(results),
        "redis_journal": {"name": name, "lease_s": LEASE_S},
    }
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "run", json.dumps(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not any(b'"e":"done"' in line for line in raw.lrange(list_key, 0, -1)):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "attempt 1 never finished a row"
            time.sleep(0.05)
        child.send_signal(signal.SIGSTOP)
        two_tenants.configure(latency_ms=0)

        taken_over = RedisJournal(link, name, lease_s=LEASE_S)
        deadline = time.monotonic() + 10 * LEASE_S
        second = None
        while second is None:
            try:  # busy until attempt 1's lease runs out
                second = BulkRunner(build_client(config), attempt=2, journal_path=taken_over).book(
                    rows, results_path=str(results)
                )
            except QmaticJournalBusyError:
                assert time.monotonic() < deadline, "attempt 1's lease never ran out"
                time.sleep(0.2)
        written, journal_after = results.read_bytes(), raw.lrange(list_key, 0, -1)

        child.send_signal(signal.SIGCONT)
        _, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    assert child.returncode != 0
    assert "QmaticJournalSupersededError" in err
    assert "wrote no results file" in err
    assert results.read_bytes() == written  # attempt 2's file stands
    assert raw.lrange(list_key, 0, -1) == journal_after  # no line of attempt 1 after the takeover
    booked = [o for o in second.outcomes if o.status in (SUCCEEDED, SKIPPED_EXISTING)]
    assert len(booked) == 6, [o.to_dict() for o in second.outcomes]
    assert {o["status"] for o in read_outcomes(results)} <= {SUCCEEDED, SKIPPED_EXISTING}
    confirmed = Counter(
        a["customer"]["personalIdentifier"]
        for a in two_tenants.appointments(status="CONFIRMED", tenant="alpha")
    )
    assert confirmed == Counter({row["personal_identifier"]: 1 for row in rows})
