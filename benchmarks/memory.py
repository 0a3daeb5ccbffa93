"""Benchmark 5: memory of a bulk job as its input grows.

Each measurement is a fresh process. It imports the runner, builds its client (sandbox in its own
process: no limits, no latency, slots with room for everyone), warms up by validating a 10-row
file, and reads its peak resident set (``resource.getrusage(RUSAGE_SELF).ru_maxrss``); then it runs
the stage under test on a CSV file of N rows and reads the peak again. The growth (peak after minus
peak before) is the stage's cost; divided by the rows it should be close to the size of a row held
once (the parsed request), not a copy per stage.

* validation and planning (``BulkRunner.prepare``: read the file, validate every row, dedupe):
  10,000 rows vs 100 rows, no request sent;
* the full run (``BulkRunner.book`` with a results file): 10,000 rows vs 100 rows, every row
  reserved and confirmed against the sandbox (about 20 s for the 10,000 on the reference machine).
"""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

from benchmarks.common import Row, Sandbox, Section, fmt, ratio, run_child, sandbox_process

PREPARE_SIZES = (100, 10_000)
RUN_SIZES = (100, 10_000)

CHILD = r"""
import json, resource, sys, tempfile
from airflow_provider_qmatic.bulk import SUCCEEDED, BulkRunner, build_bulk_client
from airflow_provider_qmatic.config import ClientConfig

mode, path, warm, values = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
config = ClientConfig.from_values(**values)
client = build_bulk_client(config)
BulkRunner(client).prepare("book", warm)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if mode == "prepare":
    items, invalid, total = BulkRunner(client).prepare("book", path)
    ok = len(items) == total and not invalid
else:
    with tempfile.TemporaryDirectory() as tmp:
        result = BulkRunner(client, progress_every_seconds=3600).book(path, results_path=tmp + "/results.csv")
    total = len(result.outcomes)
    ok = all(o.status == SUCCEEDED for o in result.outcomes)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kib": before, "after_kib": after, "rows": total, "ok": ok}))
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
        values = json.dumps(box.config_values(token_cache="memory", requests_per_minute=1_000_000))
        warm = Path(tmp) / "warm.csv"
        write_rows(box, warm, 10)
        measured: dict[tuple[str, int], dict[str, float]] = {}
        sizes: dict[int, int] = {}
        for mode, counts in (("prepare", PREPARE_SIZES), ("run", RUN_SIZES)):
            for n in counts:
                path = Path(tmp) / f"rows-{mode}-{n}.csv"
                sizes[n] = write_rows(box, path, n)
                box.reset()
                result = run_child(CHILD, mode, str(path), str(warm), values)
                if not result["ok"] or result["rows"] != n:
                    raise RuntimeError(f"memory benchmark {mode} {n}: {result}")
                measured[(mode, n)] = {
                    "peak_mib": result["after_kib"] / 1024,
                    "growth_kib": max(0, result["after_kib"] - result["before_kib"]),
                }
    for mode, (small, big), label in (
        ("prepare", PREPARE_SIZES, "validate + plan"),
        ("run", RUN_SIZES, "full run"),
    ):
        a, b = measured[(mode, big)], measured[(mode, small)]
        per_row = (a["growth_kib"] - b["growth_kib"]) * 1024 / (big - small)
        section.rows.append(
            Row(
                "5 memory",
                f"{label}: peak RSS MiB, {big:,} rows (ours) vs {small:,} rows (baseline)",
                fmt(a["peak_mib"], 1),
                fmt(b["peak_mib"], 1),
                ratio(a["peak_mib"], b["peak_mib"]),
                f"growth {a['growth_kib'] / 1024:.1f} MiB vs {b['growth_kib'] / 1024:.1f} MiB: "
                f"{per_row:,.0f} bytes per extra row (CSV row: {sizes[big] / big:.0f} bytes)",
            )
        )
    return section


if __name__ == "__main__":
    for row in run().rows:
        print(row)
