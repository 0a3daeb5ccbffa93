"""Benchmark 5: memory of a bulk job as its input grows.

Each measurement is a fresh process. It imports the runner, builds its client (sandbox in its own
process: no limits, no latency, slots with room for everyone), warms up by validating a 10-row
file, and reads its peak resident set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``); then it runs
the stage under test on a CSV file of N rows and reads the peak again. The growth (peak after minus
peak before) is the stage's cost; divided by the rows it should be close to the size of a row held
once (the parsed request), not a copy per stage.

* validation and planning (``BulkRunner.prepare``: read the file, validate every row, dedupe):
  10,000, 100,000 and 1,000,000 rows vs 100 rows, no request sent; also the time it takes (wall
  clock, and the CPU time of this process and of the validation helper that files above 8 MiB get,
  see :mod:`airflow_provider_qmatic.bulk_helper`). Goals: at most 1 KB of peak RSS per row, and
  1,000,000 rows validated within 30 s;
* the full run (``BulkRunner.book`` with a results file): 10,000 rows vs 100 rows, every row
  reserved and confirmed against the sandbox (about 20 s for the 10,000 on the reference machine).

``python -m benchmarks.run --only memory`` runs this alone (about 2 minutes, most of it the
million rows, validated twice: with the validation helper, and in one process as the baseline).
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
if mode == "prepare-one-process":  # the baseline: no validation helper, however big the file
    import airflow_provider_qmatic.bulk_helper
    airflow_provider_qmatic.bulk_helper.MIN_FILE_BYTES = 1 << 62
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
helper = resource.getrusage(resource.RUSAGE_CHILDREN)  # the validation helper, if one ran
print(json.dumps({
    "before_kib": before, "after_kib": after, "rows": total, "ok": ok, "wall_s": wall, "cpu_s": cpu,
    "helper_cpu_s": helper.ru_utime + helper.ru_stime, "helper_peak_kib": helper.ru_maxrss,
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
        plan = (("prepare", PREPARE_SIZES), ("prepare-one-process", PREPARE_SIZES[-1:]), ("run", RUN_SIZES))
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
                    "helper_cpu_s": result["helper_cpu_s"],
                    "helper_peak_mib": result["helper_peak_kib"] / 1024,
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
                f"CPU {m['cpu_s']:.1f} s here + {m['helper_cpu_s']:.1f} s in the validation helper "
                f"(peak {m['helper_peak_mib']:.0f} MiB): {(m['cpu_s'] + m['helper_cpu_s']) * 1e6 / n:.0f} µs "
                f"per row in all; wall above this process's CPU means it waited for the helper or the "
                f"machine was busy (load average {os.getloadavg()[0]:.1f} at the end)",
            )
        )
    helped, alone = (
        measured[("prepare", PREPARE_SIZES[-1])],
        measured[("prepare-one-process", PREPARE_SIZES[-1])],
    )
    section.rows.append(
        Row(
            "5 memory",
            f"validate + plan: seconds for {PREPARE_SIZES[-1]:,} rows, with the validation helper (ours) vs "
            "in one process (baseline)",
            fmt(helped["wall_s"], 1),
            fmt(alone["wall_s"], 1),
            ratio(helped["wall_s"], alone["wall_s"]),
            f"one process: CPU {alone['cpu_s']:.1f} s, peak RSS {alone['peak_mib']:.0f} MiB; with the "
            f"helper: CPU {helped['cpu_s']:.1f} s + {helped['helper_cpu_s']:.1f} s, peak RSS "
            f"{helped['peak_mib']:.0f} MiB + {helped['helper_peak_mib']:.0f} MiB",
        )
    )
    return section


if __name__ == "__main__":
    for row in run().rows:
        print(row)
