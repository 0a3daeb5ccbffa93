"""`make demo`: the main job end to end on the embedded default, the local Qmatic sandbox.

Starts the sandbox on a free loopback port (Qmatic's real limits: 100 requests per minute, one
token request per second), gives Airflow a throwaway home with SQLite, points ``qmatic_default`` at
the sandbox, and runs the three bulk example DAGs with ``airflow dags test``: book everyone in
``example_dags/data/bulk_customers.csv``, move them to the next free
slots, cancel them. Then it prints what happened, read from the results files and from the
sandbox's own counters, and stops the sandbox, also when a step fails. Re-running it starts from scratch.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_DIR = REPO / ".demo"
DAGS = ("example_qmatic_bulk_book", "example_qmatic_bulk_reschedule", "example_qmatic_bulk_cancel")
RESULTS = {
    "example_qmatic_bulk_book": "bulk_book_results.csv",
    "example_qmatic_bulk_reschedule": "bulk_reschedule_results.jsonl",
    "example_qmatic_bulk_cancel": "bulk_cancel_results.csv",
}


def airflow(*args: str, env: dict[str, str], log: Path) -> None:
    """Run the Airflow CLI of this interpreter; its output goes to ``log``, failures stop the demo."""
    command = [str(Path(sys.executable).with_name("airflow")), *args]
    with log.open("w") as out:
        result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-40:])
        raise SystemExit(
            f"`airflow {' '.join(args)}` failed (exit {result.returncode}); last lines of {log}:\n{tail}"
        )


def outcomes(path: Path) -> Counter[str]:
    """Row outcomes by status from a bulk results file (CSV or JSON Lines)."""
    if not path.exists():
        return Counter()
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    else:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    return Counter(str(row.get("status")) for row in rows)


def main() -> int:
    from airflow_provider_qmatic.sandbox import SandboxServer

    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    home, output, logs = DEMO_DIR / "airflow-home", DEMO_DIR / "output", DEMO_DIR / "logs"
    for directory in (home, output, logs):
        directory.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "example_dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        QMATIC_EXAMPLE_OUTPUT_DIR=str(output),
        QMATIC_TOKEN_CACHE_DIR=str(DEMO_DIR / "token-cache"),
    )
    print("== Setting up a throwaway Airflow home (SQLite) in .demo/")
    airflow("db", "migrate", env=env, log=logs / "db-migrate.log")

    started = time.monotonic()
    timings: dict[str, float] = {}
    with SandboxServer() as sandbox:
        print(f"== Qmatic sandbox on {sandbox.base_url} (tenant {sandbox.tenant}, 100 requests/minute)")
        env.update(sandbox.connection_env("qmatic_default"))
        for dag_id in DAGS:
            print(f"== airflow dags test {dag_id}")
            t0 = time.monotonic()
            airflow("dags", "test", dag_id, env=env, log=logs / f"{dag_id}.log")
            timings[dag_id] = time.monotonic() - t0
            print(f"   done in {timings[dag_id]:.1f} s; log: {logs / (dag_id + '.log')}")
        stats = sandbox.stats()
        confirmed = sandbox.appointments(status="CONFIRMED")
        cancelled = sandbox.appointments(status="CANCELLED")
        held = sandbox.appointments(status="RESERVED")
    elapsed = time.monotonic() - started

    book = outcomes(output / RESULTS["example_qmatic_bulk_book"])
    moved = outcomes(output / RESULTS["example_qmatic_bulk_reschedule"])
    gone = outcomes(output / RESULTS["example_qmatic_bulk_cancel"])
    print()
    print("== Summary")
    print(f"   booked       {book.get('succeeded', 0):>4} rows   {dict(book)}")
    print(f"   rescheduled  {moved.get('succeeded', 0):>4} rows   {dict(moved)}")
    print(f"   cancelled    {gone.get('succeeded', 0):>4} rows   {dict(gone)}")
    print(
        f"   sandbox      {stats['api_requests']} API requests, {stats['token_requests']} token requests, "
        f"{stats['rate_limited']['api'] + stats['rate_limited']['token']} answered 429"
    )
    print(
        f"   appointments {len(cancelled)} cancelled, {len(confirmed)} still confirmed, {len(held)} reservations held"
    )
    per_dag = ", ".join(f"{dag_id.rsplit('_', 1)[-1]} {seconds:.0f} s" for dag_id, seconds in timings.items())
    print(f"   time         {elapsed:.1f} s ({per_dag})")
    print(f"   results      {output}")
    if not book.get("succeeded") or held:
        print("The demo did not end as expected: see the logs above.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
