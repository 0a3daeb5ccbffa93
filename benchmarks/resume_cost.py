"""Benchmark 6: what a killed bulk booking costs to finish, in requests per booked row.

A bulk booking of ``ROWS`` rows runs in a child process against the sandbox (own process, 20-50 ms
latency, limits off) with a journal, and is killed with SIGKILL once about ``KILL_AT`` of the rows
are booked; then its retry (try 2, same journal, ``skip_existing="auto"``) finishes the job. The
figure is every request the sandbox received over both runs (token requests included) per row
booked; each customer must end with exactly one CONFIRMED appointment.

* this provider: the retry looks up in Qmatic (searches) only the rows that were in flight at the
  kill (the journal shows a write started and no outcome); rows never started are simply booked;
* baseline, the old behaviour: the retry searched every row the journal did not show as done
  (reproduced with ``skip_existing="always"`` on the retry, which does exactly that).

A clean run (no kill) is measured too, against its floor of 2 requests per row (reserve, confirm).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.bulk_throughput import booking_rows
from benchmarks.common import REPO, Row, Sandbox, Section, fmt, ratio, sandbox_process

ROWS = 200
# The client paces itself at this limit (the sandbox enforces none), so the rows take seconds.
LIMIT = 60_000
KILL_AT = 0.3
FLAGS = (
    "--requests-per-minute",
    "0",
    "--token-requests-per-second",
    "0",
    "--latency-ms",
    "20",
    "--latency-jitter-ms",
    "30",
    "--slot-capacity",
    "1000000",
)


def _child(raw: str) -> None:
    """The killed task: one bulk booking, as a task process runs it (try 1, with its journal)."""
    from airflow_provider_qmatic.bulk.runner import BulkRunner
    from airflow_provider_qmatic.client.client import build_client
    from airflow_provider_qmatic.config import ClientConfig

    args = json.loads(raw)
    client = build_client(ClientConfig.from_values(**args["config"]))
    BulkRunner(client, attempt=1, journal_path=args["journal"], progress_every_seconds=3600).book(
        args["rows"]
    )


def _run(box: Sandbox, *, kill: bool, retry_skip: str) -> dict[str, float]:
    from airflow_provider_qmatic.bulk.runner import BulkRunner
    from airflow_provider_qmatic.client.client import build_client
    from airflow_provider_qmatic.config import ClientConfig

    box.reset()
    rows = booking_rows(box, ROWS)
    with tempfile.TemporaryDirectory(prefix="qmatic-bench-resume-") as tmp:
        work = Path(tmp)
        (work / "journals").mkdir(mode=0o700)
        values = box.config_values(
            credential_cache="file", credential_cache_dir=str(work / "tokens"), requests_per_minute=LIMIT
        )
        journal = work / "journals" / "task.jsonl"
        source = work / "rows.json"
        source.write_text(json.dumps({"config": values, "rows": rows, "journal": str(journal)}))
        child = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.resume_cost", "child", str(source)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        killed_at = 0
        try:
            if kill:
                deadline = time.monotonic() + 120
                while killed_at < KILL_AT * ROWS:
                    if child.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("the bulk child ended before it could be killed")
                    time.sleep(0.02)
                    killed_at = box.stats()["appointments"].get("CONFIRMED", 0)
                os.kill(child.pid, signal.SIGKILL)
            child.wait(600)
        finally:
            child.kill()
            child.wait()
        if kill:
            client = build_client(ClientConfig.from_values(**values))
            try:
                BulkRunner(
                    client,
                    attempt=2,
                    journal_path=journal,
                    skip_existing=retry_skip,
                    progress_every_seconds=3600,
                ).book(rows)
            finally:
                client.close()
    stats = box.stats()
    booked = Counter(
        a["customer"]["personalIdentifier"]
        for a in box.admin.appointments(status="CONFIRMED")
        if a.get("customer")
    )
    if set(booked.values()) != {1} or len(booked) != ROWS:
        raise RuntimeError("the job did not book every row exactly once")
    searches = sum(stats["requests"].get("search", {}).values())
    return {
        "per_row": (stats["api_requests"] + stats["token_requests"]) / ROWS,
        "searches": float(searches),
        "killed_at": float(killed_at),
    }


def run() -> Section:
    section = Section("resume")
    with sandbox_process(*FLAGS) as box:
        clean = _run(box, kill=False, retry_skip="auto")
        ours = _run(box, kill=True, retry_skip="auto")
        old = _run(box, kill=True, retry_skip="always")
    name = "6 resume cost"
    section.rows += [
        Row(
            name,
            f"requests per booked row, clean run of {ROWS}",
            fmt(clean["per_row"], 2),
            "2.00",
            ratio(clean["per_row"], 2.0),
            "baseline: the floor, reserve + confirm; token requests included",
        ),
        Row(
            name,
            f"requests per booked row, SIGKILL at ~{KILL_AT:.0%} then retry",
            fmt(ours["per_row"], 2),
            fmt(old["per_row"], 2),
            ratio(ours["per_row"], old["per_row"]),
            f"baseline: the retry searched every unfinished row (old behaviour); searches "
            f"{ours['searches']:.0f} vs {old['searches']:.0f}; killed at {ours['killed_at']:.0f} and "
            f"{old['killed_at']:.0f} rows booked",
        ),
    ]
    return section


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "child":
        _child(Path(sys.argv[2]).read_text())
    else:
        for row in run().rows:
            print(row)
