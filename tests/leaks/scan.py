"""The secret-leak scan's reading side: everything Airflow kept after DAG runs, as named texts.

The runs themselves are the example DAG tests' (tests/operators/test_example_dags.py, which ends with
the scan): what they printed, their task logs, the metadata database, their bulk files and journals.
Sources searched:

* the output of every run (what pytest captured from the test process; the CLI's stdout and stderr);
* every file under ``$AIRFLOW_HOME/logs`` written since the runs started (task logs, where kept);
* the metadata database: XCom values, rendered template fields, the DAG runs' conf (read from the
  SQLite file directly, so the same code works on Airflow 3 and 2.11, where conf is a pickle),
  every cell of every table, and the raw bytes of the database file and its WAL;
* the bulk results and plan files, and the bulk journals.

The secrets searched for are random per session and ASCII, so a plain substring search finds them in
JSON and in pickles alike.
"""

from __future__ import annotations

import base64
import contextlib
import pickle
import sqlite3
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import AIRFLOW_HOME


def basic(client_id: str, secret: str) -> str:
    """The Basic header value (base64 of ``id:secret``) the token request sends."""
    return base64.b64encode(f"{client_id}:{secret}".encode()).decode()


@dataclass
class Corpus:
    """Named texts: every place something Airflow kept can be read from."""

    sources: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, text: str) -> None:
        self.sources[name] = self.sources.get(name, "") + text

    def find(self, value: str) -> list[str]:
        return sorted(name for name, text in self.sources.items() if value in text)


def text_of(value: Any) -> str:
    """A database cell as text: JSON and plain text as they are, pickles (2.11's conf) unpickled."""
    if value is None:
        return ""
    if isinstance(value, (bytes, memoryview)):
        raw = bytes(value)
        if raw[:1] == b"\x80":
            try:
                return repr(pickle.loads(raw))  # our own test database
            except Exception:
                pass
        return raw.decode("utf-8", errors="replace")
    return str(value)


def dag_run_state(dag_id: str, marker: str) -> str:
    """State of the newest run of ``dag_id`` whose conf holds ``marker`` (other tests may use the
    same database and DAG ids), read from the SQLite file as the scan reads it."""
    with contextlib.closing(sqlite3.connect(AIRFLOW_HOME / "airflow.db", timeout=30)) as db:
        rows = db.execute(
            "SELECT state, conf FROM dag_run WHERE dag_id = ? ORDER BY id DESC", (dag_id,)
        ).fetchall()
    for state, conf in rows:
        if marker in text_of(conf):
            return str(state)
    return "missing"


def _raw_bytes(path: Path) -> bytes:
    """The file's bytes, read by a child process: closing a descriptor of a database file in this
    process would drop the POSIX locks this process's SQLite connections hold on it, which SQLite's
    "How To Corrupt An SQLite Database File" (section 2.2) names as a way to corrupt it."""
    return subprocess.run(["cat", str(path)], capture_output=True, check=True).stdout


def collect(outputs: Mapping[str, str], since: float, files: Iterable[tuple[Path, str]]) -> Corpus:
    """Everything kept: ``outputs`` (name to printed text), the logs written since ``since`` (a
    timestamp), the whole metadata database, and the files under each ``(directory, kind)``."""
    corpus = Corpus()
    for name, text in outputs.items():
        corpus.add(f"output:{name}", text)
    for path in sorted((AIRFLOW_HOME / "logs").rglob("*")):
        if path.is_file() and path.stat().st_mtime >= since:
            corpus.add(f"log:{path.relative_to(AIRFLOW_HOME)}", path.read_text(errors="replace"))
    db_path = AIRFLOW_HOME / "airflow.db"
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as db:
        for (value,) in db.execute("SELECT value FROM xcom"):
            corpus.add("db:xcom", text_of(value) + "\n")
        for (value,) in db.execute("SELECT rendered_fields FROM rendered_task_instance_fields"):
            corpus.add("db:rendered_task_instance_fields", text_of(value) + "\n")
        for (value,) in db.execute("SELECT conf FROM dag_run"):
            corpus.add("db:dag_run.conf", text_of(value) + "\n")
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                corpus.add(f"db:all-tables:{table}", "\t".join(text_of(v) for v in row) + "\n")
    for suffix in ("", "-wal", "-journal"):
        raw = Path(f"{db_path}{suffix}")
        if raw.exists():
            corpus.add(f"db:raw-file:{raw.name}", _raw_bytes(raw).decode("latin-1"))
    for directory, kind in files:
        for path in sorted(directory.rglob("*")) if directory.exists() else []:
            if path.is_file():
                corpus.add(f"{kind}:{path.relative_to(directory)}", path.read_text(errors="replace"))
    return corpus
