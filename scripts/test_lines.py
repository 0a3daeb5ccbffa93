"""make test-lines: the smoke suite on every supported Airflow line, each in its own venv.

For each ``AIRFLOW=PYTHON`` pair: a uv venv on that Python, the provider installed with that
Airflow under the line's ``constraints/airflow-X.Y.txt`` and checked to read an ``AIRFLOW_CONN_*``
connection (``scripts/airflow_line.py``, which names the line and the file to pin in when a new
dependency release breaks it), then ``pytest -m lines``: the provider as Airflow registers it (in-process and through
``airflow providers``), every example DAG file parsed, ``airflow connections test`` and
``airflow dags test`` of the Asset-triggered bulk example against the sandbox, with its metrics
received over StatsD, each ``airflow`` command a real console-script process (``make test`` forks
them from a process that imported Airflow once; see tests/airflow_cli.py). Runs two lines at a
time, prints each line's output when it ends and how long each took, and exits non-zero if any line
failed, after trying them all.

Airflow's constraints files live on GitHub, which CI cannot reach; the lines resolve from PyPI
alone, and a dependency that breaks a line is bounded in the line's file under ``constraints/``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from airflow_line import install

REPO = Path(__file__).resolve().parent.parent
# The latest patch release of each supported line, on the oldest and newest supported Pythons
# (3.10 and 3.13) and those between. Override with QMATIC_LINES="3.1.8=3.11 ...".
DEFAULT_LINES = "2.11.2=3.10 3.0.6=3.12 3.1.8=3.11 3.2.2=3.12 3.3.2=3.13"


def find_python(minor: str) -> str:
    """An interpreter of Python ``minor`` (e.g. "3.13"): on PATH, else under pyenv's versions."""
    candidates = [shutil.which(f"python{minor}")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True, check=False).stdout.strip()
        versions = sorted(
            Path(root, "versions").glob(f"{minor}.*"),
            key=lambda p: [int(n) for n in re.findall(r"\d+", p.name)],
        )
        candidates += [str(v / "bin" / "python") for v in reversed(versions)]
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == minor:
            return candidate
    sys.exit(f"test-lines: no Python {minor} found (neither python{minor} on PATH nor under pyenv)")


def run_line(uv: str, airflow: str, minor: str, log: Path) -> tuple[bool, float, float]:
    """Install and run the smoke suite for one line, its output in ``log``; (passed, install
    seconds, smoke seconds)."""
    venv = REPO / f".venv-line-{'.'.join(airflow.split('.')[:2])}"
    python = venv / "bin" / "python"
    started = time.monotonic()
    with open(log, "w") as output:
        create = [uv, "venv", "--quiet", "--allow-existing", "--python", find_python(minor), str(venv)]
        created = subprocess.run(create, cwd=REPO, check=False, stdout=output, stderr=subprocess.STDOUT)
        if (
            created.returncode != 0
            or install(uv, python, airflow, "", ["-e", ".[sandbox,test]"], output) != 0
        ):
            return False, time.monotonic() - started, 0.0
        installed = time.monotonic()
        smoke = subprocess.run(
            [
                str(python),
                "-m",
                "pytest",
                "-m",
                "lines",
                *smoke_files(),
                "-q",
                "-p",
                "no:cacheprovider",
                *sys.argv[1:],
            ],
            cwd=REPO,
            check=False,
            stdout=output,
            stderr=subprocess.STDOUT,
            # The `airflow` commands of these tests as real console-script processes, not forks of
            # a process that imported Airflow once as in `make test` (tests/airflow_cli.py).
            env={**os.environ, "QMATIC_TEST_AIRFLOW_PROCESS": "1"},
        )
    return smoke.returncode == 0, installed - started, time.monotonic() - installed


def smoke_files() -> list[str]:
    """The test files that hold a ``lines`` test: pytest collects only those, not the whole suite
    (a collection costs each line about ten seconds; tests/cluster would also need the [redis]
    extra, which the line venvs do not install)."""
    tests = sorted((REPO / "tests").rglob("test_*.py"))
    return [str(path.relative_to(REPO)) for path in tests if "pytest.mark.lines" in path.read_text()]


def main() -> int:
    """The lines two at a time (installing is mostly waiting on disk and network, and each line has
    its own venv and AIRFLOW_HOME); each line's output is printed whole when it ends."""
    uv = str(Path(sys.executable).with_name("uv"))
    lines = [pair.split("=") for pair in os.environ.get("QMATIC_LINES", DEFAULT_LINES).split()]
    logs = REPO / ".line-logs"
    logs.mkdir(exist_ok=True)

    def one(line: list[str]) -> tuple[str, str, bool, float, float]:
        airflow, minor = line
        log = logs / f"airflow-{airflow}-python-{minor}.log"
        passed, install_s, smoke_s = run_line(uv, airflow, minor, log)
        print(f"== Airflow {airflow} on Python {minor}\n{log.read_text()}", flush=True)
        return airflow, minor, passed, install_s, smoke_s

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, lines))
    print("\nAirflow  Python  install  smoke   result")
    for airflow, minor, passed, install_s, smoke_s in results:
        print(f"{airflow:<8} {minor:<7} {install_s:6.0f}s {smoke_s:6.0f}s  {'ok' if passed else 'FAILED'}")
    print(f"total {time.monotonic() - started:.0f}s (two lines at a time)")
    return 0 if all(r[2] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
