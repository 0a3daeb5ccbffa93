"""Helpers of the probe tests: run ``qmatic-probe`` in this process or as a real command, with a
connection given the way a deployment gives it (an ``AIRFLOW_CONN_*`` variable)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.probe import main


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err

    def report(self) -> dict[str, Any]:
        return json.loads(self.out)  # type: ignore[no-any-return]

    def rows(self) -> dict[str, dict[str, Any]]:
        return {row["operation"]: row for row in self.report()["rows"]}


def conn_json(base_conn_json: str, **extra: Any) -> str:
    """A sandbox connection's JSON with extras merged in (``endpoints``, say)."""
    conn = json.loads(base_conn_json)
    conn["extra"] = {**conn["extra"], **extra}
    return json.dumps(conn)


def run_probe(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str, conn: str | None = None
) -> Run:
    """``main(args)`` in this process, the connection from ``AIRFLOW_CONN_QMATIC_DEFAULT``."""
    if conn is not None:
        monkeypatch.setenv("AIRFLOW_CONN_QMATIC_DEFAULT", conn)
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return Run(code, captured.out, captured.err)


def probe_command() -> str:
    """The ``qmatic-probe`` console script of the interpreter running the tests."""
    path = Path(sys.executable).with_name("qmatic-probe")
    if not path.exists():
        pytest.fail(
            "qmatic-probe is not installed in this environment: run `make setup` (or reinstall the "
            "provider editable) so the console script exists",
            pytrace=False,
        )
    return str(path)


def run_command(*args: str, env: dict[str, str]) -> Run:
    """``qmatic-probe`` as a real process, with the test environment plus ``env``."""
    full_env = {**os.environ, **env}
    result = subprocess.run(
        [probe_command(), *args], capture_output=True, text=True, env=full_env, timeout=300, check=False
    )
    return Run(result.returncode, result.stdout, result.stderr)
