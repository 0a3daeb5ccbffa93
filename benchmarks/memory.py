"""Benchmark 5: memory of a bulk job as its input grows.

Each measurement is a fresh process. It imports the runner, builds its client (sandbox in its own
process: no limits, no latency, slots with room for everyone), warms up by validating a 10-row
file, and reads its peak resident set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``); then it runs
the stage under test on a CSV file of N rows and reads the peak again. The growth (peak after minus
peak before) is the stage's cost; divided by the rows it should be close to the size of a row held
once (the parsed request), not a copy per stage.

* validation and planning (``BulkRunner.prepare``: read the file, validate every row, dedupe):
  10,000, 100,000 and 1,000,000 rows vs 100 rows, no request sent; also the time it takes (wall
  clock and the process's CPU time, which a machine busy with other work does not inflate). Goals:
  at most 1 KB of peak RSS per row, and 1,000,000 rows validated within 30 s;
* the full run (``BulkRunner.book`` with a results file): 10,000 rows vs 100 rows, every row
  reserved and confirmed against the sandbox (about 20 s for the 10,000 on the reference machine).

``python -m benchmarks.run --only memory`` runs this alone (about 3 minutes, most of it the
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
GOAL_MILLION_ROWS_S = 30.0

CHILD = r"""
import json, resource, sys, tempfile, time
from airflow_provider_qmatic.bulk import SUCCEEDED, BulkRunner
from airflow_provider_qmatic.client import build_client
from airflow_provider_qmatic.config import ClientConfig

mode, path, warm, values = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
config = ClientConfig.from_values(**values)
client = build_client(config)
BulkRunner(client).prepare("book", warm)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
wall, cpu = time.perf_counter(), time.process_time()
if mode == "prepare":
    items, invalid, total = BulkRunner(client).prepare("book", path)
    ok = len(items) == total and not invalid
else:
    with tempfile.TemporaryDirectory() as tmp:
        result = BulkRunner(client, progress_every_seconds=3600).book(path, results_path=tmp + "/results.csv")
    total = len(result.outcomes)
    ok = all(o.status == SUCCEEDED for o in result.outcomes)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "after_kib": after, "rows": total, "ok": ok, "wall_s": wall, "cpu_s": cpu}))
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
        for mode, counts in (("prepare", PREPARE_SIZES), ("run", RUN_SIZES)):
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
        goal_s = GOAL_MILLION_ROWS_S * n / 1_000_000
        section.rows.append(
            Row(
                "5 memory",
                f"validate + plan: seconds for {n:,} rows (ours) vs the goal ({GOAL_MILLION_ROWS_S:.0f} s per million)",
                fmt(m["wall_s"], 1),
                fmt(goal_s, 1),
                ratio(m["wall_s"], goal_s),
                f"CPU {m['cpu_s']:.1f} s ({m['cpu_s'] * 1e6 / n:.0f} µs per row); wall above CPU means the "
                f"machine was busy with other work (load average {os.getloadavg()[0]:.1f} at the end)",
            )
        )
    return section


if __name__ == "__main__":
    for row in run().rows:
        print(row)
