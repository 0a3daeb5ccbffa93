"""What every benchmark shares: the machine, a sandbox in its own process, medians, table rows."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TENANT = "bench"
# The seeded catalogue of the sandbox (seed 0): Stockholm City and its passport service.
STOCKHOLM = "e3e70682-c209-4cac-a29f-6fbed82c07cd"
PASSPORT = "c8a70639-eb11-47b3-a7a9-c3787c65c1e5"


@dataclass
class Row:
    """One line of the results table: a figure of this provider beside its baseline."""

    benchmark: str
    measure: str
    ours: str
    baseline: str
    ratio: str
    note: str = ""


@dataclass
class Section:
    """A benchmark's rows plus the details printed under the table."""

    name: str
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    seconds: float = 0.0


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def ratio(ours: float, baseline: float, digits: int = 2) -> str:
    """``ours / baseline``; small ratios also as a fraction (``0.002 (1/528)``)."""
    if baseline == 0:
        return "n/a" if ours == 0 else "inf"
    value = ours / baseline
    if value == 0:
        return "0"
    if value < 0.1:
        return f"{value:.{digits}g} (1/{1 / value:,.0f})"
    return f"{value:.{digits}f}"


# -- the machine --------------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return {
        "CPUs (nproc)": str(os.cpu_count()),
        "CPU model": cpu,
        "RAM": ram,
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "apache-airflow": _version("apache-airflow"),
        "airflow-provider-qmatic": _version("airflow-provider-qmatic"),
        "requests": _version("requests"),
        "pydantic": _version("pydantic"),
        "uvicorn (sandbox)": _version("uvicorn"),
    }


# -- a sandbox in its own process ---------------------------------------------------------------------


@dataclass
class Sandbox:
    """A ``python -m airflow_provider_qmatic.sandbox`` process and how to reach it."""

    process: subprocess.Popen[str]
    base_url: str
    client_id: str
    client_secret: str
    tenant: str
    system_id: str
    admin: Any

    def stats(self) -> dict[str, Any]:
        return dict(self.admin.stats())

    def reset(self) -> None:
        self.admin.reset()

    def config_values(self, **overrides: Any) -> dict[str, Any]:
        """ClientConfig.from_values arguments for this sandbox's client."""
        values: dict[str, Any] = {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "tenant": self.tenant,
            "base_url": self.base_url,
            "system_id": self.system_id,
        }
        values.update(overrides)
        return values


@contextlib.contextmanager
def sandbox_process(*flags: str) -> Iterator[Sandbox]:
    """Start the sandbox CLI on a free loopback port with ``flags``; stop it afterwards."""
    from airflow_provider_qmatic.sandbox.server import SandboxAdmin
    from airflow_provider_qmatic.sandbox.settings import derive_system_id

    client_id = "bench-client"
    secret = secrets.token_urlsafe(24)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_qmatic.sandbox",
            "--port",
            "0",
            "--client-env",  # the secret stays out of the process list
            f"{client_id}:QMATIC_BENCH_SECRET:{TENANT}",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        env={**os.environ, "QMATIC_BENCH_SECRET": secret},
    )
    base_url = None
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            base_url = found.group(1)
            break
    if base_url is None:
        process.kill()
        raise RuntimeError("the sandbox did not start:\n" + "".join(lines))
    admin = SandboxAdmin(base_url)
    try:
        yield Sandbox(process, base_url, client_id, secret, TENANT, derive_system_id(TENANT), admin)
    finally:
        admin.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_child(code: str, *args: str, stdin: str | None = None, timeout: float = 600) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter (``sys.argv[1:]`` = ``args``); its last stdout line is JSON."""
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"benchmark child failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))
