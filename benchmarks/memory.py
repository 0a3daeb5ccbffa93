"""Benchmark 5: memory of a bulk job as its input grows.

Each measurement is a fresh process. It imports the runner, builds its client (sandbox in its own
process: no limits, no latency, slots with room for everyone), warms up by validating a 10-row
file, and reads its peak resident set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``); then it runs
the stage under test on a CSV file of N rows and reads the peak again. The growth (peak after minus
peak before) is the stage's cost; divided by the rows it should be close to the size of a row held
once (the parsed request), not a copy per stage.

* validation and planning (``BulkRunner.prepare``: read the file, validate every row, dedupe):
  10,000, 100,000 and 1,000,000 rows vs 100 rows, no request sent. Goal: at most 1 KB of peak RSS
  per row. Its speed is given as rows per second beside a plain ``csv.reader`` pass over the same
  file in the same process right after (the floor of any CSV reading in Python): the ratio is what
  validation costs on top of reading, on whatever machine runs the benchmark. Validation runs in
  one process: a tenant books about 50 rows a minute, so a second faster is noise beside the job;
* the full run (``BulkRunner.book`` with a results file): 10,000 rows vs 100 rows, every row
  reserved and confirmed against the sandbox (about 20 s for the 10,000 on the reference machine).

``python -m benchmarks.run --only memory`` runs this alone (about 2 minutes, most of it the
million rows).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

from benchmarks.common import Row, Sandbox, Section, fmt, ratio, run_child, sandbox_process

PREPARE_SIZES = (100, 10_000, 100_000, 1_000_000)
RUN_SIZES = (100, 10_000)
GOAL_BYTES_PER_ROW = 1024

CHILD = r"""
import csv, json, resource, sys, tempfile, time
from airflow_provider_qmatic.bulk.runner import SUCCEEDED, BulkRunner
from airflow_provider_qmatic.client.client import build_client
from airflow_provider_qmatic.config import ClientConfig

mode, path, warm, values = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
config = ClientConfig.from_values(**values)
client = build_client(config)
BulkRunner(client).prepare("book", warm)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
wall, cpu = time.perf_counter(), time.process_time()
if mode.startswith("prepare"):
    items, invalid, total = BulkRunner(client).prepare("book", path)
    ok = len(items) == total and not invalid
else:
    with tempfile.TemporaryDirectory() as tmp:
        result = BulkRunner(client, progress_every_seconds=3600).book(path, results_path=tmp + "/results.csv")
    total = len(result.outcomes)
    ok = all(o.status == SUCCEEDED for o in result.outcomes)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
plain_s = 0.0
if mode == "prepare":  # the baseline: csv.reader over the same file, no validation
    plain_s = time.perf_counter()
    with open(path, newline="", encoding="utf-8") as handle:
        plain_rows = sum(1 for _ in csv.reader(handle)) - 1
    plain_s = time.perf_counter() - plain_s
    ok = ok and plain_rows == total
print(json.dumps({
    "before_kib": before, "after_kib": after, "rows": total, "ok": ok, "wall_s": wall, "cpu_s": cpu,
    "plain_s": plain_s,
}))
"""


def write_rows(box: Sandbox, path: Path, n: int) -> int:
    slots = box.admin.free_slots(limit=50)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "branch_id",
                "service_id",
                "start_time",
                "end_time",
                "personal_identifier",
                "first_name",
                "last_name",
                "email",
                "phone_number",
                "notes",
            ]
        )
        for i in range(n):
            slot = slots[i % len(slots)]
            pid = f"MEMORY{i:012d}"
            writer.writerow(
                [
                    slot["branchId"],
                    slot["serviceId"],
                    slot["startTime"],
                    slot["endTime"],
                    pid,
                    "Margaret",
                    "Hamilton",
                    f"{pid.lower()}@example.com",
                    "+46 8 123 456 78",
                    f"Bulk row {i}: bring the confirmation letter",
                ]
            )
    return path.stat().st_size


def run() -> Section:
    section = Section("memory")
    with (
        sandbox_process(
            "--requests-per-minute", "0", "--token-requests-per-second", "0", "--slot-capacity", "1000000"
        ) as box,
        tempfile.TemporaryDirectory(prefix="qmatic-bench-memory-") as tmp,
    ):
        values = json.dumps(box.config_values(credential_cache="memory", requests_per_minute=1_000_000))
        warm = Path(tmp) / "warm.csv"
        write_rows(box, warm, 10)
        measured: dict[tuple[str, int], dict[str, float]] = {}
        sizes: dict[int, int] = {}
        plan = (("prepare", PREPARE_SIZES), ("run", RUN_SIZES))
        for mode, counts in plan:
            for n in counts:
                path = Path(tmp) / f"rows-{mode}-{n}.csv"
                sizes[n] = write_rows(box, path, n)
                box.reset()
                result = run_child(CHILD, mode, str(path), str(warm), values, timeout=1800)
                path.unlink()  # the million-row file is about 250 MB
                if not result["ok"] or result["rows"] != n:
                    raise RuntimeError(f"memory benchmark {mode} {n}: {result}")
                measured[(mode, n)] = {
                    "peak_mib": result["after_kib"] / 1024,
                    "growth_kib": max(0, result["after_kib"] - result["before_kib"]),
                    "wall_s": result["wall_s"],
                    "cpu_s": result["cpu_s"],
                    "plain_s": result["plain_s"],
                }
    cases = [("prepare", PREPARE_SIZES[0], big, "validate + plan") for big in PREPARE_SIZES[1:]]
    cases.append(("run", RUN_SIZES[0], RUN_SIZES[-1], "full run"))
    for mode, small, big, label in cases:
        a, b = measured[(mode, big)], measured[(mode, small)]
        per_row = (a["growth_kib"] - b["growth_kib"]) * 1024 / (big - small)
        goal = f" (goal <= {GOAL_BYTES_PER_ROW:,})" if big >= 100_000 else ""
        section.rows.append(
            Row(
                "5 memory",
                f"{label}: peak RSS MiB, {big:,} rows (ours) vs {small:,} rows (baseline)",
                fmt(a["peak_mib"], 1),
                fmt(b["peak_mib"], 1),
                ratio(a["peak_mib"], b["peak_mib"]),
                f"growth {a['growth_kib'] / 1024:.1f} MiB vs {b['growth_kib'] / 1024:.1f} MiB: "
                f"{per_row:,.0f} bytes per extra row{goal} (CSV row: {sizes[big] / big:.0f} bytes)",
            )
        )
    for n in PREPARE_SIZES[2:]:
        m = measured[("prepare", n)]
        ours, plain = n / m["wall_s"], n / m["plain_s"]
        section.rows.append(
            Row(
                "5 memory",
                f"validate + plan: rows per second, {n:,} rows (ours) vs a plain csv.reader pass over the "
                "same file (baseline)",
                fmt(ours, 0),
                fmt(plain, 0),
                ratio(ours, plain),
                f"{m['wall_s']:.1f} s vs {m['plain_s']:.1f} s; CPU {m['cpu_s']:.1f} s, "
                f"{m['cpu_s'] * 1e6 / n:.0f} µs per row in one process (load average "
                f"{os.getloadavg()[0]:.1f} at the end)",
            )
        )
    return section


if __name__ == "__main__":
    for row in run().rows:
        print(row)
