"""Entry point of ``make bench``: run every benchmark, print one markdown table, write results.md.

Usage: ``python -m benchmarks.run [--only NAME ...] [--output PATH]``; names: tokens, bulk,
overhead, parse, memory, resume, cluster, waiting. See the package docstring (``benchmarks/__init__.py``) and
``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import (
    bulk_throughput,
    client_overhead,
    cluster,
    memory,
    parse_cost,
    resume_cost,
    token_stampede,
    waiting,
)
from benchmarks.common import Section, machine

BENCHMARKS: dict[str, Callable[[], Section]] = {
    "tokens": token_stampede.run,
    "bulk": bulk_throughput.run,
    "overhead": client_overhead.run,
    "parse": parse_cost.run,
    "memory": memory.run,
    "resume": resume_cost.run,
    "cluster": cluster.run,
    "waiting": waiting.run,
}
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results.md"


def render(sections: list[Section], info: dict[str, str], total_s: float) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC with `make bench` "
        f"(`python -m benchmarks.run`) in {total_s:.0f} s. What each figure means and its baseline: "
        "docs/performance.md.",
        "",
        "| Machine and versions | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in info.items()),
        "",
        "Ratio = this provider / baseline (below 1: less time, fewer requests, less memory; for "
        "shares of the limit and rows per second, above 1 is better).",
        "",
        "| Benchmark | Measure | This provider | Baseline | Ratio | Notes |",
        "|---|---|---:|---:|---:|---|",
    ]
    for section in sections:
        for r in section.rows:
            lines.append(f"| {r.benchmark} | {r.measure} | {r.ours} | {r.baseline} | {r.ratio} | {r.note} |")
    details = [d for s in sections for d in s.details]
    timings = ", ".join(f"{s.name} {s.seconds:.0f} s" for s in sections)
    lines += ["", "Details:", "", *(f"- {d}" for d in details), f"- Time per benchmark: {timings}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the markdown")
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    info = machine()
    print("Machine and versions:", ", ".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    sections: list[Section] = []
    started = time.perf_counter()
    for name in names:
        print(f"running {name} ...", flush=True)
        begin = time.perf_counter()
        section = BENCHMARKS[name]()
        section.seconds = time.perf_counter() - begin
        sections.append(section)
        print(f"  {name}: {section.seconds:.1f} s", flush=True)
    text = render(sections, info, time.perf_counter() - started)
    print()
    print(text)
    args.output.write_text(text)
    print(f"written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
