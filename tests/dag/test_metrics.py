"""Metrics through Airflow's own ``Stats``: a real DAG run with StatsD on, a UDP listener on
loopback as the StatsD server, and the counts compared with the sandbox's own."""

from __future__ import annotations

import csv
import json
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from airflow_provider_qmatic.sandbox import SandboxServer, SandboxSettings
from tests.conftest import run_airflow

pytestmark = pytest.mark.airflow

STOCKHOLM = "e3e70682-c209-4cac-a29f-6fbed82c07cd"
PASSPORT = "c8a70639-eb11-47b3-a7a9-c3787c65c1e5"


class StatsdListener:
    """Collects StatsD counters (``name:value|c``, several per datagram) sent to its UDP port."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.counters: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.socket.recv(65535)
            except TimeoutError:
                continue
            for line in data.decode().splitlines():
                name, _, rest = line.partition(":")
                value, _, kind = rest.partition("|")
                if kind.startswith("c"):
                    self.counters[name] += int(float(value))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.socket.close()

    def qmatic(self) -> dict[str, int]:
        return {name: n for name, n in self.counters.items() if ".qmatic." in f".{name}"}


@pytest.fixture
def statsd() -> Iterator[StatsdListener]:
    listener = StatsdListener()
    yield listener
    listener.close()


def dags_test_with_statsd(dag_id: str, server: SandboxServer, statsd: StatsdListener, **env: str) -> None:
    """``airflow dags test dag_id`` with StatsD on, sending to ``statsd``; the run must succeed."""
    conn = json.loads(server.conn_json)
    conn["extra"]["requests_per_minute"] = 6000
    result = run_airflow(
        "dags",
        "test",
        dag_id,
        env={
            "AIRFLOW_CONN_QMATIC_DEFAULT": json.dumps(conn),
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port),
            "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
            **env,
        },
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


def counted_by_the_sandbox(server: SandboxServer) -> dict[str, int]:
    """What the sandbox saw, under the metric names the provider should have sent."""
    stats = server.stats()
    return {
        name: count
        for name, count in {
            "airflow.qmatic.api.requests": stats["api_requests"],
            "airflow.qmatic.token.requests": stats["token_requests"],
            "airflow.qmatic.rate_limited": stats["rate_limited"]["api"] + stats["rate_limited"]["token"],
        }.items()
        if count
    }


@pytest.mark.lines
def test_a_bulk_run_counts_requests_429s_tokens_and_rows(
    make_qmatic_sandbox: Callable[..., SandboxServer],
    airflow_db: Path,
    statsd: StatsdListener,
    tmp_path: Path,
) -> None:
    # The sandbox allows 600 requests a minute in bursts of 2 while the client paces at 6000, so
    # Qmatic's 429 (with Retry-After) is answered and waited out during the run.
    server = make_qmatic_sandbox(SandboxSettings(requests_per_minute=600, api_burst=2), set_env=False)
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    slots = server.free_slots(STOCKHOLM, PASSPORT, 3)
    with open(incoming / "bookings.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["branch_id", "service_id", "start_time", "personal_identifier", "first_name",
                         "last_name", "email"])  # fmt: skip
        for number, slot in enumerate(slots):
            writer.writerow([STOCKHOLM, PASSPORT, slot["startTime"], f"METRICS{number:05d}", "Ada",
                             "Lovelace", f"ada{number}@example.com"])  # fmt: skip

    dags_test_with_statsd(
        "example_qmatic_bulk_book_on_asset", server, statsd, QMATIC_EXAMPLE_OUTPUT_DIR=str(tmp_path)
    )

    assert len(server.appointments("CONFIRMED")) == 3
    assert server.stats()["rate_limited"]["api"] > 0
    assert statsd.qmatic() == {**counted_by_the_sandbox(server), "airflow.qmatic.bulk.rows.succeeded": 3}


def test_single_operators_and_the_hook_count_their_requests(
    make_qmatic_sandbox: Callable[..., SandboxServer], airflow_db: Path, statsd: StatsdListener
) -> None:
    """The book example as a user runs it (``airflow dags test``, no config): the hook in a TaskFlow
    task, then the find-slots and book operators."""
    server = make_qmatic_sandbox(SandboxSettings(requests_per_minute=0), set_env=False)

    dags_test_with_statsd("example_qmatic_book", server, statsd)

    (booked,) = server.appointments("CONFIRMED")
    assert booked["customer"]["personalIdentifier"] == "19800430ADA01"  # the example's own customer
    assert (booked["branch"]["id"], booked["service"]["id"]) == (STOCKHOLM, PASSPORT)
    counted = counted_by_the_sandbox(server)
    assert counted["airflow.qmatic.api.requests"] >= 4  # search, slots, reserve, confirm
    assert statsd.qmatic() == counted
