"""Benchmark 4: what the provider adds to DAG parsing, which the scheduler repeats every few seconds.

Airflow 3's DAG processor parses each file in a process forked from a parent that has Airflow
imported (it pre-imports ``airflow.*`` modules a file names, not ``airflow_provider_qmatic``).
The benchmark does the same: a fresh interpreter per repetition imports ``airflow.sdk`` (Airflow 3)
or ``airflow`` (2.x) and ``DagBag``, parses an empty DAG file once to warm up, and then forks one
child per measurement:

* import time of each operator module (and of the standard ``PythonOperator`` module, as a
  yardstick), timed with ``time.perf_counter`` around the import; the child also reports which
  heavy modules the import pulled in (pydantic, requests, the provider's models and client);
* ``DagBag`` of each example DAG file, vs the same for an empty DAG file (one ``DAG`` and no tasks).

Figures are medians over the repetitions, in milliseconds.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from benchmarks.common import REPO, Row, Section, fmt, median, ratio, run_child

REPETITIONS = 5
EXAMPLES = sorted((REPO / "example_dags").glob("example_*.py"))
EMPTY_DAG = """
import pendulum
try:
    from airflow.sdk import DAG
except ImportError:
    from airflow import DAG

with DAG("bench_empty", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False):
    pass
"""
TASKFLOW_DAG = """
import pendulum
try:
    from airflow.sdk import DAG, task
except ImportError:
    from airflow import DAG
    from airflow.decorators import task

with DAG("bench_taskflow", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False):

    @task
    def hello() -> str:
        return "hello"

    hello()
"""
MODULES = {
    "operators.appointments": "airflow_provider_qmatic.operators.appointments",
    "operators.bulk": "airflow_provider_qmatic.operators.bulk",
}
HEAVY = (
    "pydantic",
    "requests",
    "fastapi",
    "uvicorn",
    "airflow_provider_qmatic.api.models",
    "airflow_provider_qmatic.client.client",
    "airflow_provider_qmatic.bulk.runner",
)

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
try:
    import airflow.sdk
except ImportError:
    import airflow
from airflow.models import DagBag
airflow_s = time.perf_counter() - t0
try:
    import airflow.providers.standard.operators.python  # noqa: just to locate it
    yardstick = "airflow.providers.standard.operators.python"
except ImportError:
    yardstick = "airflow.operators.python"
del sys.modules[yardstick]
empty = sys.argv[1]
modules, files, heavy = (json.loads(a) for a in sys.argv[2:5])

def bag(path):
    try:
        return DagBag(dag_folder=path, include_examples=False)
    except TypeError:  # Airflow 3's DagBag has no include_examples
        return DagBag(dag_folder=path)

bag(empty)  # warm up DagBag itself

def in_child(fn):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            out = fn()
        except BaseException as exc:
            out = {"error": repr(exc)}
        os.write(write, json.dumps(out).encode())
        os._exit(0)
    os.close(write)
    data = b""
    while chunk := os.read(read, 65536):
        data += chunk
    os.close(read)
    os.waitpid(pid, 0)
    return json.loads(data)

def time_import(name):
    def fn():
        before = set(sys.modules)
        t = time.perf_counter()
        __import__(name)
        ms = (time.perf_counter() - t) * 1000
        return {"ms": ms, "heavy": [m for m in heavy if m in sys.modules and m not in before]}
    return fn

def time_parse(path):
    def fn():
        before = set(sys.modules)
        t = time.perf_counter()
        result = bag(path)
        ms = (time.perf_counter() - t) * 1000
        new = [m for m in sys.modules if m not in before]
        return {
            "ms": ms,
            "dags": len(result.dags),
            "errors": len(result.import_errors),
            "heavy": [m for m in heavy if m in new],
            "provider_modules": sorted(m for m in new if m.startswith("airflow_provider_qmatic")),
            "new_modules": len(new),
        }
    return fn

out = {"airflow_import_ms": airflow_s * 1000, "imports": {}, "parses": {}}
out["imports"]["yardstick"] = in_child(time_import(yardstick))
for label, name in modules.items():
    out["imports"][label] = in_child(time_import(name))
out["parses"]["empty"] = in_child(time_parse(empty))
for path in files:
    out["parses"][os.path.basename(path)] = in_child(time_parse(path))
print(json.dumps(out))
"""


def run() -> Section:
    section = Section("parse")
    with tempfile.TemporaryDirectory(prefix="qmatic-bench-parse-") as tmp:
        empty = Path(tmp) / "bench_empty_dag.py"
        empty.write_text(EMPTY_DAG)
        taskflow = Path(tmp) / "bench_taskflow_dag.py"
        taskflow.write_text(TASKFLOW_DAG)
        results = [
            run_child(
                CHILD,
                str(empty),
                json.dumps(MODULES),
                json.dumps([str(p) for p in (*EXAMPLES, taskflow)]),
                json.dumps(HEAVY),
            )
            for _ in range(REPETITIONS)
        ]
    imports = {k: median([r["imports"][k]["ms"] for r in results]) for k in results[0]["imports"]}
    for result in results:
        for name, parse in result["parses"].items():
            if "error" in parse or parse["errors"] or parse["dags"] != 1:
                raise RuntimeError(f"parsing {name} failed in the benchmark: {parse}")
    parses = {k: median([r["parses"][k]["ms"] for r in results]) for k in results[0]["parses"]}
    heavy = {k: results[0]["imports"][k]["heavy"] for k in MODULES}
    first = results[0]["parses"]
    for label in MODULES:
        section.rows.append(
            Row(
                "4 parse cost",
                f"import {label} after airflow (ms)",
                fmt(imports[label], 1),
                fmt(imports["yardstick"], 1),
                ratio(imports[label], imports["yardstick"]),
                "baseline: PythonOperator module; heavy modules loaded: "
                + (", ".join(heavy[label]) or "none"),
            )
        )
    for name in (p.name for p in EXAMPLES):
        section.rows.append(
            Row(
                "4 parse cost",
                f"DagBag {name} (ms)",
                fmt(parses[name], 1),
                fmt(parses["empty"], 1),
                ratio(parses[name], parses["empty"]),
                f"baseline: empty DAG file; modules imported: {first[name]['new_modules']}, heavy: "
                + (", ".join(first[name]["heavy"]) or "none"),
            )
        )
        section.details.append(
            f"{name}: provider modules imported while parsing: "
            + ", ".join(m.removeprefix("airflow_provider_qmatic.") for m in first[name]["provider_modules"])
        )
    section.details.append(
        f"Parse cost yardstick: a DAG file with one TaskFlow ``@task`` and nothing from this provider "
        f"parses in {parses['bench_taskflow_dag.py']:.1f} ms (Airflow's own cost of ``@task``, "
        "paid by every TaskFlow DAG; the examples that use ``@task`` include it)."
    )
    section.details.append(
        f"Parse cost: {REPETITIONS} fresh interpreters, medians; importing Airflow itself took "
        f"{median([r['airflow_import_ms'] for r in results]):.0f} ms in each (not part of any figure)."
    )
    return section


if __name__ == "__main__":
    for row in run().rows:
        print(row)
