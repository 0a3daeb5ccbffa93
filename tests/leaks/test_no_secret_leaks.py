"""No secret in anything Airflow keeps, after every example DAG ran against the sandbox.

Every DAG in example_dags/ runs once with ``dag.test()`` (what ``airflow dags test`` runs, in this
process, the sandbox connection in the environment), in the order their docstrings ask for: book,
reschedule, cancel, find-and-book, then bulk book, bulk reschedule and bulk cancel (which read the
bulk booking's results file), the bulk plan (its approval answered from the test), plus one run
with a wrong client secret through the real ``airflow dags test`` CLI, so that a raised exception's
text as the CLI prints it is in what gets searched. Then everything that was kept is searched:

* the output of every run (what pytest captured from this process; the CLI's stdout and stderr);
* every file under ``$AIRFLOW_HOME/logs`` written during the runs (task logs, where kept);
* the metadata database: XCom values, rendered template fields, the DAG runs' conf (read from the
  SQLite file directly, so the same code works on Airflow 3 and 2.11, where conf is a pickle),
  every cell of every table, and the raw bytes of the database file and its WAL;
* the bulk results and plan files, and the bulk journals;

for the client secret, the Basic header value (base64 of ``id:secret``) and every access token the
sandbox issued (``tokens()``), and for the wrong secret of the failing run and its Basic value.

``dag.test()`` runs tasks without Airflow's log masking (on both Airflow versions), so this checks
that the provider itself never emits a secret. The secrets are random per run and ASCII, so a plain
substring search finds them in JSON and in pickles alike; a self-check plants a canary through a
DAG run's conf and in files, and asserts the same search finds it in each kind of source, so a
search that silently looked nowhere would fail.
"""

from __future__ import annotations

import base64
import csv
import json
import pickle
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.sandbox import SandboxClient, SandboxServer, SandboxSettings
from tests.conftest import AIRFLOW_HOME, REPO, approving, run_airflow, run_dag
from tests.operators.test_example_dags import ASSET_WATCHERS, _load_examples

# The module fixture runs every example before the first test (about a minute, two on a loaded
# 2-core machine), which the suite-wide 300 s pytest-timeout would come close to cutting off.
pytestmark = [pytest.mark.airflow, pytest.mark.slow, pytest.mark.timeout(600)]

EXAMPLES = REPO / "example_dags"
TENANT = "demo"
RUN = uuid.uuid4().hex[:12]
CLIENT = SandboxClient(f"leak-client-{RUN}", f"leak-secret-{uuid.uuid4().hex}", TENANT)
WRONG_SECRET = f"wrong-secret-{uuid.uuid4().hex}"
CANARY = f"CANARY{uuid.uuid4().hex.upper()}"


def basic(client_id: str, secret: str) -> str:
    return base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def person(tag: str) -> dict[str, str]:
    return {
        "personal_identifier": f"LEAK{tag}{RUN}".upper(),
        "first_name": "Selma",
        "last_name": "Lagerlof",
        "email": f"selma.{tag}@example.com",
    }


@dataclass
class Corpus:
    """Named texts: every place something Airflow kept can be read from."""

    sources: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, text: str) -> None:
        self.sources[name] = self.sources.get(name, "") + text

    def find(self, value: str) -> list[str]:
        return sorted(name for name, text in self.sources.items() if value in text)

    def kinds(self, value: str) -> set[str]:
        return {name.split(":", 1)[0] + ":" + name.split(":", 2)[1] for name in self.find(value)}


@dataclass
class Runs:
    server: SandboxServer
    out_dir: Path
    journal_dir: Path
    outputs: dict[str, str]
    states: dict[str, str]
    started: float
    corpus: Corpus = field(default_factory=Corpus)


def _conn_env(server: SandboxServer, password: str = CLIENT.client_secret) -> dict[str, str]:
    conn = json.loads(server.conn_json)
    conn["password"] = password
    conn["extra"]["requests_per_minute"] = 600000
    return {"AIRFLOW_CONN_QMATIC_DEFAULT": json.dumps(conn)}


def _dag_state(dag_id: str, marker: str) -> str:
    """State of this module's run of ``dag_id``: the newest whose conf holds ``marker`` (other test
    runs may use the same database and DAG ids)."""
    with sqlite3.connect(AIRFLOW_HOME / "airflow.db", timeout=30) as db:
        rows = db.execute(
            "SELECT state, conf FROM dag_run WHERE dag_id = ? ORDER BY id DESC", (dag_id,)
        ).fetchall()
    for state, conf in rows:
        if marker in _text(conf):
            return str(state)
    return "missing"


@pytest.fixture(scope="module")
def runs(
    airflow_db: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Runs]:
    """Run every example DAG once (and one failing run); collect what Airflow kept.

    The examples run with ``dag.test()`` in this process, which is what ``airflow dags test`` runs,
    and their output is what pytest captured meanwhile (file descriptors and ``sys`` streams both).
    Only the failing run goes through the CLI, so that the text the CLI prints for an exception is
    searched too: one Airflow start instead of fifteen.
    """
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is None or not capture.is_globally_capturing():
        pytest.fail("the leak scan reads the runs' output through pytest's capture: run without -s")
    base = tmp_path_factory.mktemp("leaks")
    out_dir = base / "examples-output"
    cache = base / "token-cache"
    cache.mkdir(mode=0o700)
    # Task runs would otherwise share the suite's token cache; a private one keeps the bulk
    # journals of this module apart too.
    # The rich answer shape echoes notes (the canary) back into XCom, so the scan is shown to read
    # XCom; it is also the shape that echoes the most a leak could hide in.
    settings = SandboxSettings(
        clients=(CLIENT,),
        requests_per_minute=0,
        slot_capacity=4,
        answer_shape="rich",
        # The combination example books two services at Stockholm City.
        service_combinations=True,
        combination_branches={"Stockholm City": ("Passport application", "Document pick-up")},
    )
    server = SandboxServer(settings).start()
    started = time.time() - 1
    env = {
        **_conn_env(server),
        "QMATIC_TOKEN_CACHE_DIR": str(cache),
        "QMATIC_EXAMPLE_OUTPUT_DIR": str(out_dir),
    }
    outputs: dict[str, str] = {}
    states: dict[str, str] = {}

    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        examples = _load_examples()  # parsed with the output directory set

        def dags_test(name: str, dag_id: str, conf: dict[str, Any]) -> None:
            """``dag.test()`` of ``dag_id`` with ``conf``; its output and final state kept."""
            capture.read_global_capture()  # drop what came before
            try:
                dag_run = run_dag(examples.dags[dag_id], conf=conf)
                states[name] = str(getattr(dag_run.state, "value", dag_run.state))
            finally:
                out, err = capture.read_global_capture()
                outputs[name] = out + "\n" + err

        try:
            ada, grace, alan, wrong = person("a"), person("g"), person("t"), person("w")
            dags_test("book", "example_qmatic_book", {"customer": ada, "notes": CANARY})
            (booked,) = [
                a
                for a in server.appointments("CONFIRMED")
                if a["customer"]["personalIdentifier"] == ada["personal_identifier"]
            ]
            later = server.free_slots(limit=12)[-1]
            dags_test(
                "reschedule",
                "example_qmatic_reschedule",
                {
                    "appointment_id": booked["appointmentId"],
                    "new_start_time": datetime.fromisoformat(later["startTime"]).strftime("%Y-%m-%d %H:%M"),
                    "timezone": "Europe/Stockholm",
                },
            )
            pid = ada["personal_identifier"]
            dags_test("cancel", "example_qmatic_cancel", {"personal_identifier": pid})
            dags_test("find_and_book", "example_qmatic_find_and_book", {"customers": [grace, alan]})
            bulk_conf = {
                "output_dir": str(out_dir),
                "booking_results": str(out_dir / "bulk_book_results.csv"),
            }
            dags_test("bulk_book", "example_qmatic_bulk_book", {"output_dir": str(out_dir)})
            dags_test("bulk_reschedule", "example_qmatic_bulk_reschedule", bulk_conf)
            dags_test(
                "update_customers",
                "example_qmatic_update_customers",
                {"output_dir": str(out_dir), "customer": {**grace, "email": "grace.new@example.org"}},
            )
            dags_test("bulk_cancel", "example_qmatic_bulk_cancel", bulk_conf)
            # The Asset-triggered example books the file that arrived in incoming/.
            incoming = out_dir / "incoming"
            incoming.mkdir(parents=True, exist_ok=True)
            bea, slot = person("b"), server.free_slots(limit=24)[-1]
            with open(incoming / "bookings.csv", "w", newline="") as handle:
                writer = csv.DictWriter(handle, ["branch_id", "service_id", "start_time", *bea])
                writer.writeheader()
                writer.writerow(
                    {
                        "branch_id": slot["branchId"],
                        "service_id": slot["serviceId"],
                        "start_time": slot["startTime"],
                        **bea,
                    }
                )
            dags_test("bulk_book_on_asset", "example_qmatic_bulk_book_on_asset", {"delivery": str(incoming)})
            # The plan example waits for a person between its dry run and its real run: answered
            # from a thread here, as the REST API would, while the run waits for it.
            with approving("example_qmatic_bulk_plan"):
                dags_test("bulk_plan", "example_qmatic_bulk_plan", {"output_dir": str(out_dir)})
            kay, kim = person("k"), person("m")
            dags_test("wait_and_book", "example_qmatic_wait_and_book", {"customer": kay})
            dags_test(
                "move_earlier",
                "example_qmatic_move_earlier",
                {"personal_identifier": kim["personal_identifier"]},
            )
            dags_test("book_combination", "example_qmatic_book_combination", {"customer": person("l")})
            if ASSET_WATCHERS:  # run by hand: no asset event, nothing booked
                dags_test("book_on_free_slot", "example_qmatic_book_on_free_slot", {"customer": person("h")})
            # The failing run through the real CLI: what it prints for the exception is searched.
            result = run_airflow(
                "dags",
                "test",
                "example_qmatic_book",
                "-c",
                json.dumps({"customer": wrong}),
                env={**env, **_conn_env(server, password=WRONG_SECRET)},
            )
            outputs["wrong_secret"] = result.stdout + "\n" + result.stderr
            states["wrong_secret"] = _dag_state("example_qmatic_book", wrong["personal_identifier"])
            yield Runs(server, out_dir, cache / "bulk-journals", outputs, states, started)
        finally:
            server.stop()


# -- collecting -----------------------------------------------------------------------------------------


def _text(value: Any) -> str:
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


def _tables(db: sqlite3.Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


def collect(runs: Runs) -> Corpus:
    corpus = Corpus()
    for name, text in runs.outputs.items():
        corpus.add(f"output:{name}", text)
    for path in sorted((AIRFLOW_HOME / "logs").rglob("*")):
        if path.is_file() and path.stat().st_mtime >= runs.started:
            corpus.add(f"log:{path.relative_to(AIRFLOW_HOME)}", path.read_text(errors="replace"))
    db_path = AIRFLOW_HOME / "airflow.db"
    with sqlite3.connect(db_path, timeout=30) as db:
        for (value,) in db.execute("SELECT value FROM xcom"):
            corpus.add("db:xcom", _text(value) + "\n")
        for (value,) in db.execute("SELECT rendered_fields FROM rendered_task_instance_fields"):
            corpus.add("db:rendered_task_instance_fields", _text(value) + "\n")
        for (value,) in db.execute("SELECT conf FROM dag_run"):
            corpus.add("db:dag_run.conf", _text(value) + "\n")
        for table in _tables(db):
            for row in db.execute(f'SELECT * FROM "{table}"'):
                corpus.add(f"db:all-tables:{table}", "\t".join(_text(v) for v in row) + "\n")
    for suffix in ("", "-wal", "-journal"):
        raw = Path(f"{db_path}{suffix}")
        if raw.exists():
            corpus.add(f"db:raw-file:{raw.name}", raw.read_bytes().decode("latin-1"))
    for directory, kind in ((runs.out_dir, "results"), (runs.journal_dir, "journal")):
        for path in sorted(directory.rglob("*")) if directory.exists() else []:
            if path.is_file():
                corpus.add(f"{kind}:{path.name}", path.read_text(errors="replace"))
    return corpus


@pytest.fixture(scope="module")
def corpus(runs: Runs) -> Corpus:
    return collect(runs)


# -- the tests -------------------------------------------------------------------------------------------


def test_every_example_dag_ran_against_the_sandbox(runs: Runs) -> None:
    dag_files = {p.stem for p in EXAMPLES.glob("example_*.py")}
    if not ASSET_WATCHERS:  # the watcher example defines no DAG there
        dag_files.discard("example_qmatic_book_on_free_slot")
    ran = {f"example_qmatic_{name}" for name in runs.states if name != "wrong_secret"}
    assert dag_files <= ran, f"example DAGs not run: {dag_files - ran}"
    for name, state in runs.states.items():
        expected = "failed" if name == "wrong_secret" else "success"
        assert state == expected, (name, state, runs.outputs[name][-3000:])
    server = runs.server
    stats = server.stats()["requests"]
    assert stats["confirm"].get("201", 0) >= 3 + 12  # single books, find-and-book, the bulk file
    assert stats["reschedule"].get("200", 0) >= 2
    assert stats["cancel"].get("204", 0) >= 2
    assert stats["token"].get("401", 0) >= 1  # the wrong secret was refused
    assert server.appointments("RESERVED") == []
    assert len(server.tokens()) >= 3  # one per scope at least


def test_the_search_finds_a_planted_value_in_every_kind_of_source(runs: Runs, corpus: Corpus) -> None:
    """The canary went into a DAG run's conf (the book example's ``notes``), so Airflow keeps it in
    the conf, the rendered fields and the booked appointment's XCom; planted files stand for logs
    and results. If the search looked nowhere, this would fail."""
    found = corpus.find(CANARY)
    for source in ("db:dag_run.conf", "db:rendered_task_instance_fields", "db:xcom"):
        assert source in found, (source, found)
    assert any(s.startswith("db:all-tables:") for s in found), found
    assert any(s.startswith("db:raw-file:") for s in found), found
    planted = f"PLANTED{uuid.uuid4().hex}"
    log_file = AIRFLOW_HOME / "logs" / "leak-self-check" / f"{RUN}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text(f"a line with {planted}\n")
    runs.out_dir.mkdir(parents=True, exist_ok=True)
    (runs.out_dir / f"planted-{RUN}.csv").write_text(f"row,error\n1,{planted}\n")
    runs.outputs["planted"] = f"output {planted}"
    try:
        again = collect(runs)
        kinds = {name.split(":", 1)[0] for name in again.find(planted)}
        assert kinds == {"output", "log", "results"}, again.find(planted)
    finally:
        log_file.unlink()
        (runs.out_dir / f"planted-{RUN}.csv").unlink()
        del runs.outputs["planted"]
    # The searched text is the real thing, not empty: the runs' own traces are in it.
    assert corpus.find("Booked appointment"), "no run output collected"
    assert any(s.startswith("results:bulk_book_results") for s in corpus.sources)
    assert any(s.startswith("results:bulk_cancel_results") for s in corpus.sources)
    assert "Check the Client ID, Client Secret" in corpus.sources["output:wrong_secret"], "no exception text"


def test_no_secret_in_anything_airflow_kept(runs: Runs, corpus: Corpus) -> None:
    tokens = [t["access_token"] for t in runs.server.tokens()]
    assert tokens
    values = {
        "client secret": CLIENT.client_secret,
        "Basic value": basic(CLIENT.client_id, CLIENT.client_secret),
        "wrong secret": WRONG_SECRET,
        "wrong Basic value": basic(CLIENT.client_id, WRONG_SECRET),
        **{f"access token #{i}": token for i, token in enumerate(tokens)},
    }
    leaks = {what: corpus.find(value) for what, value in values.items()}
    assert {what: where for what, where in leaks.items() if where} == {}
