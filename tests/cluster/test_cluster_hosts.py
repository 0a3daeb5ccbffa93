"""Several worker processes, each with its own credential cache directory (separate hosts), running
bulk jobs against the sandbox at Qmatic's limit shape scaled to 600 requests a minute, sharing one
budget, one token and the bulk journals through a real Redis; and Redis restarted or lost mid-run.

The sandbox's bucket holds only 8 requests, so any overshoot of the shared budget shows as a 429.
A retry after a lost Redis or a killed host runs in the test's own process: another host all the
same (its own credential cache directory, nothing of the first host's but what Redis holds), without
a second interpreter start.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from airflow_provider_qmatic.sandbox import SandboxServer
from benchmarks.cluster import RedisServer, book_here, finish, go, start_hosts
from tests.bulk.conftest import booking_rows, confirmed_by_customer, statuses

from .conftest import config_values, redis_config

pytestmark = pytest.mark.slow
HOLD_S = 900.0
LIMIT = 600


def _hosts(
    sandbox: SandboxServer, tmp_path: Path, server: RedisServer, n: int, prefix: str
) -> list[dict[str, Any]]:
    return [
        config_values(redis_config(sandbox, tmp_path / f"{prefix}{i}", server.conn_id, rpm=LIMIT))
        for i in range(n)
    ]


def _each_once(sandbox: SandboxServer, rows: list[dict[str, Any]]) -> None:
    booked = confirmed_by_customer(sandbox)
    assert set(booked) == {r["personal_identifier"] for r in rows}
    assert set(booked.values()) == {1}, {k: v for k, v in booked.items() if v != 1}


def _wait_for(predicate: Any, hosts: list[Any], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert all(h.poll() is None for h in hosts), f"a host ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def _confirmed(sandbox: SandboxServer) -> int:
    return len(sandbox.appointments(status="CONFIRMED"))


def test_three_hosts_share_one_budget_and_one_token(
    sandbox: SandboxServer, tmp_path: Path, redis_server: RedisServer
) -> None:
    rows = booking_rows(sandbox, 75)
    hosts = start_hosts(
        _hosts(sandbox, tmp_path, redis_server, 3, "host"), [rows[i::3] for i in range(3)], redis_server.env
    )
    go(hosts)
    reports = finish(hosts)
    assert all("returncode" not in r for r in reports), reports
    stats = sandbox.stats()
    assert stats["rate_limited"] == {"api": 0, "token": 0}
    assert stats["token_requests"] == 1
    assert sum(r["token_requests"] for r in reports) == 1
    elapsed = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    share = stats["api_requests"] / elapsed * 60 / LIMIT
    # Three hosts each pacing alone would ask for three times the limit; together they use it.
    assert 0.9 <= share <= 1.0, share
    _each_once(sandbox, rows)


def test_redis_restarted_empty_mid_run_the_budget_restarts_conservatively(
    sandbox: SandboxServer, tmp_path: Path, redis_server: RedisServer
) -> None:
    rows = booking_rows(sandbox, 50)
    hosts = start_hosts(
        _hosts(sandbox, tmp_path, redis_server, 2, "host"), [rows[0::2], rows[1::2]], redis_server.env
    )
    go(hosts)
    _wait_for(lambda: _confirmed(sandbox) >= 12, hosts, "12 bookings")
    redis_server.stop()  # every key lost: budget, token, pause
    time.sleep(0.3)
    redis_server.start()
    reports = finish(hosts)
    assert all("returncode" not in r for r in reports), reports
    # The requests that found Redis down were not sent; the client waited and tried again.
    assert sum(r["failed"] for r in reports) == 0
    assert sandbox.stats()["rate_limited"] == {"api": 0, "token": 0}
    _each_once(sandbox, rows)


def test_redis_lost_mid_run_fails_retryably_then_a_retry_elsewhere_books_each_once(
    sandbox: SandboxServer, tmp_path: Path, redis_server: RedisServer
) -> None:
    rows = booking_rows(sandbox, 40)
    [host] = start_hosts(
        _hosts(sandbox, tmp_path, redis_server, 1, "first"), [rows], redis_server.env, journal="job-lost"
    )
    go([host])
    _wait_for(lambda: _confirmed(sandbox) >= 10, [host], "10 bookings")
    redis_server.stop()
    [report] = finish([host])
    assert "returncode" not in report, report  # the job ends with failed rows, not a crash
    assert report["failed"] > 0
    done_first = _confirmed(sandbox)
    assert done_first < len(rows)
    assert sandbox.stats()["rate_limited"] == {"api": 0, "token": 0}

    redis_server.start()  # back, but empty: no journal, no budget, no token
    [second] = _hosts(sandbox, tmp_path, redis_server, 1, "second")
    report = book_here(second, rows, attempt=2, journal="job-lost")  # this process: another host
    assert report["failed"] == 0
    assert sandbox.stats()["rate_limited"] == {"api": 0, "token": 0}
    _each_once(sandbox, rows)
    sandbox.advance_clock(HOLD_S + 1)
    assert statuses(sandbox).get("RESERVED", 0) == 0


def test_killed_host_retry_on_another_host_resumes_from_the_redis_journal(
    sandbox: SandboxServer, tmp_path: Path, redis_server: RedisServer
) -> None:
    rows = booking_rows(sandbox, 40)
    sandbox.configure(latency_ms=300, fault_endpoints=["confirm"])  # kills land between reserve and confirm
    [host] = start_hosts(
        _hosts(sandbox, tmp_path, redis_server, 1, "first"), [rows], redis_server.env, journal="job-kill"
    )
    go([host])
    _wait_for(lambda: _confirmed(sandbox) >= 8, [host], "8 bookings")
    os.kill(host.pid, signal.SIGKILL)
    host.wait(30)
    done_first = _confirmed(sandbox)
    sandbox.configure(latency_ms=0)

    raw = redis.Redis(host="127.0.0.1", port=redis_server.port)
    [journal] = [k for k in raw.keys("qmatic:journal:*") if not k.endswith(b":lease")]
    events = Counter(line.split(b'"e":"')[1].split(b'"')[0] for line in raw.lrange(journal, 0, -1))
    assert events[b"done"] >= 8
    # The dead attempt's lease runs out by itself; Airflow's retry delay (minutes) outlasts it.
    lease = journal + b":lease"
    assert 0 < raw.pttl(lease) <= 30_000
    raw.delete(lease)

    [second] = _hosts(sandbox, tmp_path, redis_server, 1, "second")
    report = book_here(second, rows, attempt=2, journal="job-kill")  # this process: another host
    assert report["failed"] == 0
    assert report["succeeded"] <= len(rows) - done_first  # the rows done before the kill are not redone
    _each_once(sandbox, rows)
    assert sandbox.stats()["rate_limited"] == {"api": 0, "token": 0}
    sandbox.advance_clock(HOLD_S + 1)
    assert statuses(sandbox).get("RESERVED", 0) == 0
