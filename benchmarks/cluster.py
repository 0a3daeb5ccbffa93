"""Benchmark: one tenant's budget shared by 1, 2 and 4 hosts, host-local state against Redis.

Each "host" is a worker process with its own credential cache directory (so nothing is shared
through files), running a bulk booking job with 4 threads, as a bulk task on a Celery worker or a
Kubernetes pod would. The sandbox (own process) enforces Qmatic's limit shape scaled up: a per-minute
limit of ``LIMIT`` with a small burst (``API_BURST``), the token endpoint at 1 request per second,
20-50 ms per answer.

* host-local (``credential_cache: file``): each host paces itself to the whole limit;
* Redis (``credential_cache: redis``): one budget, one token and one 429 pause for all hosts.

Three seconds into the bulk jobs, another host books a single appointment (the path of the single
book operator: an interactive budget without a reserve) and its latency is measured.

Figures per configuration: accepted API requests per minute as a share of the limit (over the time
from the start to the last host finishing), 429 answers, token requests, the single booking's time.

The module is also the worker (``python -m benchmarks.cluster worker``) and holds
:class:`RedisServer`, which the cluster tests use too.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.bulk_throughput import booking_rows
from benchmarks.common import REPO, Row, Sandbox, Section, fmt, sandbox_process

LIMIT = 1200
API_BURST = 10  # the sandbox default; the client keeps a burst of 5, leaving room for network jitter
ROWS = 250  # per configuration, split between the hosts: about 500 requests, 25 s at the limit
HOSTS = (1, 2, 4)
SINGLE_AFTER_S = 3.0
FLAGS = (
    "--requests-per-minute",
    str(LIMIT),
    "--api-burst",
    str(API_BURST),
    "--token-requests-per-second",
    "1",
    "--latency-ms",
    "20",
    "--latency-jitter-ms",
    "30",
    "--slot-capacity",
    "1000000",
)
_ids = itertools.count()


# -- a real redis-server ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` on 127.0.0.1 at a free port, data in ``workdir``, nothing persisted (so
    a restart loses every key); ``stop``/``start`` keep the port. ``conn_id`` is unique per server
    because the provider keeps one Redis client per connection id and process."""

    BINARY = shutil.which("redis-server")

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.conn_id = f"qmatic_redis_{os.getpid()}_{next(_ids)}_{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """The Airflow connection, as an environment variable."""
        return {f"AIRFLOW_CONN_{self.conn_id.upper()}": f"redis://127.0.0.1:{self.port}/0"}

    def start(self) -> RedisServer:
        if self.BINARY is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server)")
        self.process = subprocess.Popen(
            [
                self.BINARY,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.workdir),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=20)
            self.process = None


# -- hosts --------------------------------------------------------------------------------------


def build_host(args: dict[str, Any]) -> tuple[Any, Any]:
    """A host's bulk client (Redis checked here) and its task instance's journal, if ``args`` name one."""
    from airflow_provider_qmatic.client.client import build_client
    from airflow_provider_qmatic.config import ClientConfig
    from airflow_provider_qmatic.state import request_budget

    config = ClientConfig.from_values(**args["config"])
    # The bulk operators' budget (QmaticHook(bulk=True)); reserve=False drops its reserve for single
    # calls (the fairness baseline).
    client = build_client(config, limiter=request_budget(config, bulk=args["reserve"]))
    journal = None
    if args.get("journal"):  # a task instance's journal in Redis (the tests kill this host mid-run)
        from airflow_provider_qmatic.state import task_journal

        journal = task_journal(config, dag_id="cluster", run_id=args["journal"], task_id="book")
    return client, journal


def run_host(client: Any, journal: Any, args: dict[str, Any]) -> dict[str, Any]:
    """Book ``args["rows"]`` as a bulk task's attempt ``args["attempt"]`` would; the host's report."""
    from airflow_provider_qmatic.bulk.runner import SUCCEEDED, BulkRunner

    started = time.time()
    runner = BulkRunner(client, progress_every_seconds=3600, attempt=args["attempt"], journal_path=journal)
    result = runner.book(args["rows"])
    ended = time.time()
    client.close()
    return {
        "started": started,
        "ended": ended,
        "succeeded": sum(1 for o in result.outcomes if o.status == SUCCEEDED),
        "failed": result.summary.failed,
        "api_requests": result.summary.api_requests,
        "token_requests": result.summary.token_requests,
    }


def worker_main() -> None:
    """A host process: build the bulk client, say ready, wait for go, book, report."""
    args = json.loads(sys.stdin.readline())
    os.environ.update(args["env"])
    client, journal = build_host(args)
    print("ready", flush=True)
    sys.stdin.readline()
    print(json.dumps(run_host(client, journal, args)), flush=True)


def book_here(
    config: dict[str, Any], rows: list[dict[str, Any]], *, attempt: int = 1, journal: str | None = None
) -> dict[str, Any]:
    """One more host, in this process (its own credential cache directory from ``config``): a
    retry that needs no process of its own, and no second interpreter start."""
    args = {"config": config, "rows": rows, "reserve": True, "attempt": attempt, "journal": journal}
    client, task_journal = build_host(args)
    return run_host(client, task_journal, args)


def start_hosts(
    configs: list[dict[str, Any]],
    rows: list[list[dict[str, Any]]],
    env: dict[str, str],
    *,
    reserve: bool = True,
    attempt: int = 1,
    journal: str | None = None,
) -> list[subprocess.Popen[str]]:
    """Start one worker per config and wait until every one is ready (Redis reached, client built)."""
    hosts = []
    for config, part in zip(configs, rows, strict=True):
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.cluster", "worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, **env},
        )
        assert process.stdin is not None
        args = {"config": config, "rows": part, "env": env, "reserve": reserve, "attempt": attempt}
        args["journal"] = journal
        process.stdin.write(json.dumps(args) + "\n")
        process.stdin.flush()
        hosts.append(process)
    for process in hosts:
        assert process.stdout is not None
        # Airflow 2.11 logs to stdout (e.g. "Retrieving connection ..." when the Redis hook starts):
        # skip such lines until the host says it is ready, or its output ends.
        seen: list[str] = []
        for line in process.stdout:
            if line.strip() == "ready":
                break
            seen.append(line.strip())
        else:
            process.kill()
            raise RuntimeError(
                f"a host did not start: {seen[-5:]}\n{process.stderr.read()[-3000:] if process.stderr else ''}"
            )
    return hosts


def go(hosts: list[subprocess.Popen[str]]) -> None:
    for process in hosts:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()


def finish(hosts: list[subprocess.Popen[str]], timeout: float = 600) -> list[dict[str, Any]]:
    """Each host's report (or ``{"returncode": ...}`` for a host that died)."""
    reports = []
    for process in hosts:
        out, err = process.communicate(timeout=timeout)
        lines = out.strip().splitlines()
        if process.returncode == 0 and lines:
            reports.append(dict(json.loads(lines[-1])))
        else:
            reports.append({"returncode": process.returncode, "stderr": err[-3000:]})
    return reports


def single_booking(config: dict[str, Any], row: dict[str, Any]) -> float:
    """Book one row as the single book operator would (interactive budget); seconds taken."""
    from airflow_provider_qmatic.bulk.runner import SUCCEEDED, BulkRunner
    from airflow_provider_qmatic.client.client import build_client
    from airflow_provider_qmatic.config import ClientConfig

    cfg = ClientConfig.from_values(**config)
    client = build_client(cfg)
    started = time.perf_counter()
    result = BulkRunner(client, concurrency=1, progress_every_seconds=3600).book([row])
    elapsed = time.perf_counter() - started
    client.close()
    assert result.outcomes[0].status == SUCCEEDED, result.outcomes[0]
    return elapsed


def measure(
    box: Sandbox, hosts: int, redis: RedisServer | None, workdir: Path, *, reserve: bool = True
) -> dict[str, float]:
    box.reset()
    rows = booking_rows(box, ROWS + 1)
    single_row, rows = rows[0], rows[1:]
    env = redis.env if redis is not None else {}
    os.environ.update(env)

    def values(name: str) -> dict[str, Any]:
        extra = {"redis_conn_id": redis.conn_id} if redis is not None else {}
        return box.config_values(
            credential_cache="redis" if redis is not None else "file",
            credential_cache_dir=str(workdir / name),
            requests_per_minute=LIMIT,
            **extra,
        )

    parts = [rows[i::hosts] for i in range(hosts)]
    processes = start_hosts([values(f"host{i}") for i in range(hosts)], parts, env, reserve=reserve)
    single: dict[str, float] = {}

    def book_one() -> None:
        time.sleep(SINGLE_AFTER_S)
        single["s"] = single_booking(values("single"), single_row)

    thread = threading.Thread(target=book_one)
    go(processes)
    thread.start()
    reports = finish(processes)
    thread.join()
    if any("returncode" in r for r in reports):
        raise RuntimeError(f"a host failed: {reports}")
    # From the first host's start to the last host's end, as the hosts saw it (same machine clock);
    # interpreter start-up and exit are not part of the job.
    elapsed = max(r["ended"] for r in reports) - min(r["started"] for r in reports)
    stats = box.stats()
    limited = stats["rate_limited"]["api"]
    accepted = stats["api_requests"] - limited
    booked = sum(int(r["succeeded"]) for r in reports)
    return {
        "share": accepted / elapsed * 60 / LIMIT,
        "rate_limited": float(limited + stats["rate_limited"]["token"]),
        "token_requests": float(stats["token_requests"]),
        "single_s": single["s"],
        "booked": float(booked),
        "elapsed_s": elapsed,
    }


def run() -> Section:
    section = Section("cluster")
    results: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="qmatic-bench-cluster-") as tmp, sandbox_process(*FLAGS) as box:
        redis = RedisServer(Path(tmp)).start()
        try:
            for hosts in HOSTS:
                results["local", hosts] = measure(box, hosts, None, Path(tmp) / f"local{hosts}")
                results["redis", hosts] = measure(box, hosts, redis, Path(tmp) / f"redis{hosts}")
            most = HOSTS[-1]
            results["unfair", most] = measure(box, most, redis, Path(tmp) / "unfair", reserve=False)
        finally:
            redis.stop()
    for hosts in HOSTS:
        shared, local = results["redis", hosts], results["local", hosts]
        for label, key, digits in (
            ("share of the limit used", "share", 3),
            ("429 answers", "rate_limited", 0),
            ("token requests", "token_requests", 0),
            ("single booking during bulk (s)", "single_s", 2),
        ):
            section.rows.append(
                Row(
                    "cluster",
                    f"{hosts} host(s): {label}",
                    fmt(shared[key], digits),
                    fmt(local[key], digits),
                    _ratio(shared[key], local[key]),
                    "Redis vs host-local state",
                )
            )
        section.details.append(
            f"cluster, {hosts} host(s): Redis {shared['elapsed_s']:.1f} s for {shared['booked']:.0f} rows, "
            f"host-local {local['elapsed_s']:.1f} s for {local['booked']:.0f} rows"
        )
    fair, unfair = results["redis", HOSTS[-1]], results["unfair", HOSTS[-1]]
    section.rows.append(
        Row(
            "cluster",
            f"{HOSTS[-1]} hosts, Redis: single booking during bulk (s)",
            fmt(fair["single_s"], 2),
            fmt(unfair["single_s"], 2),
            _ratio(fair["single_s"], unfair["single_s"]),
            "bulk keeps a reserve for single calls vs no reserve",
        )
    )
    section.details.append(
        f"cluster: limit {LIMIT}/min, sandbox burst {API_BURST}, token endpoint 1/s, 20-50 ms answers; "
        f"{ROWS} rows per configuration split between the hosts (4 threads each, own credential cache "
        f"directory each); a single booking {SINGLE_AFTER_S:.0f} s into the bulk jobs from another host. "
        f"Without the reserve, {HOSTS[-1]} hosts: share {unfair['share']:.3f}, "
        f"{unfair['rate_limited']:.0f} answers of 429. Goals: Redis at 4 hosts >= 0.97 of the limit with "
        "no 429; a single booking within 5 s."
    )
    return section


def _ratio(ours: float, baseline: float) -> str:
    if baseline == 0:
        return "n/a" if ours == 0 else "inf"
    return f"{ours / baseline:.2f}"


if __name__ == "__main__":
    if sys.argv[1:] == ["worker"]:
        worker_main()
    else:
        print(run())
