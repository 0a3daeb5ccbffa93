"""The example DAGs (example_dags/): every file loads; each runs green as-is
(no config) against a fresh seed-0 sandbox, twice, without booking anyone twice (``dag.test()``,
what ``airflow dags test`` runs; the update-customers and combination examples also through the real
CLI, the book example in tests/dag/test_metrics.py); the single-appointment ones run end to end with
a config. Then, from what those same runs left, the secret-leak scan.

The secret-leak scan: every run here (and one more, the book example through the real ``airflow dags
test`` CLI with a wrong client secret, so that a raised exception's text as the CLI prints it is
searched too) uses ``qmatic_default`` with a client secret random per session, and everything Airflow
kept is searched (tests/leaks/scan.py lists the sources: the runs' output, task logs, the metadata
database cell by cell and as raw bytes, bulk files and journals) for the client secret, the Basic
header value (base64 of ``id:secret``), every access token the sandboxes issued, and the wrong secret
and its Basic value. ``dag.test()`` runs tasks without Airflow's log masking (on both Airflow
versions), so this checks that the provider itself never emits a secret. A self-check plants a canary
through a DAG run's conf (the book example's ``notes``, which the rich answer shape echoes back into
XCom) and in files, and asserts the same search finds it in each kind of source, so a search that
silently looked nowhere would fail. The scan reads the runs of the tests before it, so it comes last
and needs the whole module (``make test`` hands whole files to a process).
"""

from __future__ import annotations

import contextlib
import csv
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.api.contract import ALL_SCOPES
from airflow_provider_qmatic.sandbox import SandboxClient, SandboxServer
from tests.conftest import AIRFLOW_HOME, REPO, approving, run_airflow
from tests.leaks.scan import basic, collect, dag_run_state
from tests.operators.conftest import (
    CLIENTS,
    PASSPORT,
    PICK_UP,
    STOCKHOLM,
    TENANT,
    Sandbox,
    customer,
    mapped_states,
    run_dag,
    state_of,
    xcom_of,
)

pytestmark = pytest.mark.airflow

EXAMPLES = REPO / "example_dags"
try:
    from airflow.sdk import AssetWatcher  # noqa: F401

    ASSET_WATCHERS = True
except ImportError:  # Airflow 2.11
    ASSET_WATCHERS = False
OURS = {
    "example_qmatic_book": "example_qmatic_book.py",
    "example_qmatic_reschedule": "example_qmatic_reschedule.py",
    "example_qmatic_cancel": "example_qmatic_cancel.py",
    "example_qmatic_find_and_book": "example_qmatic_find_and_book.py",
    "example_qmatic_update_customers": "example_qmatic_update_customers.py",
    "example_qmatic_wait_and_book": "example_qmatic_wait_and_book.py",
    "example_qmatic_move_earlier": "example_qmatic_move_earlier.py",
    "example_qmatic_book_combination": "example_qmatic_book_combination.py",
}


def _load_examples() -> Any:
    from airflow.models import DagBag

    try:
        return DagBag(dag_folder=str(EXAMPLES), include_examples=False)
    except TypeError:  # Airflow 3's DagBag never loads Airflow's own examples
        return DagBag(dag_folder=str(EXAMPLES))


@pytest.fixture(scope="module")
def dag_bag() -> Any:
    return _load_examples()


# ``qmatic_default``'s client in this module: its secret is random per session, so that the leak scan
# finds only what these runs left (other test files share the process's database).
RUN = uuid.uuid4().hex[:12]
DEFAULT_CLIENT = SandboxClient(
    f"leak-client-{RUN}", f"leak-secret-{uuid.uuid4().hex}", TENANT, scopes=ALL_SCOPES
)
WRONG_SECRET = f"wrong-secret-{uuid.uuid4().hex}"
CANARY = f"CANARY{uuid.uuid4().hex.upper()}"


@dataclass
class Kept:
    """What this module's runs left for the leak scan: their output, the directories they wrote,
    and what each sandbox saw before it stopped (tokens issued, requests answered)."""

    started: float
    capture: Any
    output_dirs: list[Path]
    journal_dir: Path
    outputs: dict[str, str] = field(default_factory=dict)
    ran: set[str] = field(default_factory=set)
    tokens: list[str] = field(default_factory=list)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    reserved_left: list[dict[str, Any]] = field(default_factory=list)

    def run(self, bag: Any, dag_id: str, conf: dict[str, Any] | None = None) -> Any:
        """One successful run with ``dag.test()`` (what ``airflow dags test`` runs); the DagRun.

        Its output is what pytest captured meanwhile (file descriptors and ``sys`` streams both);
        it is kept, then handed back to the capture, so that a failing test still shows it.
        """
        out_before, err_before = self.capture.read_global_capture()
        try:
            dag_run = run_dag(bag.dags[dag_id], conf=conf)
        finally:
            out, err = self.capture.read_global_capture()
            self.outputs[f"{len(self.outputs)}:{dag_id}"] = out + "\n" + err
            sys.stdout.write(out_before + out)
            sys.stderr.write(err_before + err)
        assert str(getattr(dag_run.state, "value", dag_run.state)) == "success", (dag_id, _states(dag_run))
        self.ran.add(dag_id)
        return dag_run

    def cli(self, name: str, *args: str, env: dict[str, str]) -> Any:
        """``airflow *args`` (tests/airflow_cli.py); its stdout and stderr kept under ``name``."""
        result = run_airflow(*args, env=env)
        self.outputs[name] = result.stdout + "\n" + result.stderr
        return result

    def seen(self, server: SandboxServer) -> None:
        self.tokens += [t["access_token"] for t in server.tokens()]
        for endpoint, statuses in server.stats()["requests"].items():
            for status, n in statuses.items():
                self.requests[endpoint, status] += n
        self.reserved_left += server.appointments("RESERVED")


@pytest.fixture(scope="module")
def kept(
    airflow_db: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Kept]:
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if capture is None or not capture.is_globally_capturing():
        pytest.fail("the leak scan reads the runs' output through pytest's capture: run without -s")
    base = tmp_path_factory.mktemp("examples")
    cache = base / "token-cache"
    cache.mkdir(mode=0o700)
    output = base / "output"
    # Task runs would otherwise share the suite's token cache; a private one keeps this module's
    # bulk journals apart too.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("QMATIC_TOKEN_CACHE_DIR", str(cache))
        patch.setenv("QMATIC_EXAMPLE_OUTPUT_DIR", str(output))
        yield Kept(time.time() - 1, capture, [output], cache / "bulk-journals")


@pytest.fixture
def sandbox_clients() -> tuple[SandboxClient, ...]:
    return (DEFAULT_CLIENT, *CLIENTS[1:])


@pytest.fixture
def sandbox(sandbox: Sandbox, kept: Kept) -> Iterator[Sandbox]:
    """The operator tests' sandbox; what it saw is kept for the leak scan before it stops."""
    yield sandbox
    kept.seen(sandbox.server)


@pytest.mark.lines
def test_every_example_dag_file_loads(dag_bag: Any) -> None:
    assert dag_bag.import_errors == {}
    files = {Path(p).name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    if not ASSET_WATCHERS:  # the watcher example defines no DAG there, and says why
        files.discard("example_qmatic_book_on_free_slot.py")
    loaded = {Path(dag.fileloc).name for dag in dag_bag.dags.values()}
    assert files <= loaded, f"files without a DAG: {files - loaded}"


@pytest.mark.parametrize("dag_id", sorted(OURS))
def test_operator_examples_follow_the_house_rules(dag_bag: Any, dag_id: str) -> None:
    dag = dag_bag.dags[dag_id]
    assert Path(dag.fileloc).name == OURS[dag_id]
    assert dag.catchup is False
    assert type(dag.timetable).__name__ == "NullTimetable"  # schedule=None: triggered on demand
    assert dag.start_date is not None
    assert dag.start_date.year == 2025
    qmatic_tasks = [t for t in dag.tasks if _operator_class(t).startswith("Qmatic")]
    assert qmatic_tasks, dag_id
    for t in qmatic_tasks:
        kwargs = getattr(t, "partial_kwargs", None) or vars(t)
        assert kwargs["qmatic_conn_id"] == "qmatic_default", t.task_id
        assert t.retries >= 1, t.task_id


def _operator_class(task: Any) -> str:
    cls = getattr(task, "operator_class", None) or type(task)
    return cls.__name__ if isinstance(cls, type) else str(cls)


def _last_run(dag_id: str) -> tuple[str, dict[tuple[str, int], str]]:
    """State of the newest run of ``dag_id`` and of its task instances, read from Airflow's DB."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc())
        ).first()
        assert run is not None, dag_id
        states = {
            (ti.task_id, ti.map_index): str(getattr(ti.state, "value", ti.state))
            for ti in run.get_task_instances(session=session)
        }
        return str(getattr(run.state, "value", run.state)), states


def _dags_test(kept: Kept, sandbox: Sandbox, dag_id: str, conf: dict[str, Any] | None = None) -> str:
    """``airflow dags test`` (with ``conf``, or as-is without); the run must succeed."""
    args = ["dags", "test", dag_id] + (["-c", json.dumps(conf)] if conf is not None else [])
    result = kept.cli(f"{len(kept.outputs)}:cli {dag_id}", *args, env=sandbox.env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    state, tasks = _last_run(dag_id)
    assert state == "success", (tasks, output[-4000:])
    for secret in sandbox.secrets():
        assert secret not in output
    kept.ran.add(dag_id)
    return output


def test_find_and_book_maps_a_booking_over_twenty_slots(dag_bag: Any, sandbox: Sandbox, kept: Kept) -> None:
    people = [customer(str(i)) for i in range(20)]

    dag_run = kept.run(dag_bag, "example_qmatic_find_and_book", {"customers": people})

    assert mapped_states(dag_run, "book_appointment") == dict.fromkeys(range(20), "success")
    confirmed = sandbox.appointments("CONFIRMED")
    assert len(confirmed) == 20
    assert {a["customer"]["personalIdentifier"] for a in confirmed} == {
        p["personal_identifier"] for p in people
    }
    assert len({a["timeSlot"]["startTime"] for a in confirmed}) == 20  # one slot each
    assert {(a["branch"]["id"], a["appointmentId"] != "") for a in confirmed} == {(STOCKHOLM, True)}
    assert sandbox.appointments("RESERVED") == []
    requests = sandbox.stats()["requests"]
    assert requests["timeslots"] == {"200": 1}
    assert requests["reserve"] == {"201": 20}
    assert requests["confirm"] == {"201": 20}


@pytest.mark.parametrize("qmatic_answer_shape", ["rich"])
def test_book_reschedule_and_cancel_examples_end_to_end(dag_bag: Any, sandbox: Sandbox, kept: Kept) -> None:
    """The three single-appointment examples in a row, each run with ``dag.test()`` and a config.

    The book run's notes are the leak scan's canary: Airflow keeps them in the run's conf and
    rendered fields, and the rich answer shape (the one that echoes the most a leak could hide in)
    echoes them into the booked appointment's XCom. (The as-is runs book with the default notes.)
    """
    who = customer()
    first_free = sandbox.free_slots(limit=1)[0]

    kept.run(dag_bag, "example_qmatic_book", {"customer": who, "notes": CANARY})

    (booked,) = sandbox.of_customer(who["personal_identifier"])
    assert booked["status"] == "CONFIRMED"
    assert booked["timeSlot"]["startTime"] == first_free["startTime"]
    assert (booked["branch"]["id"], booked["service"]["id"]) == (STOCKHOLM, PASSPORT)
    assert booked["notes"] == CANARY

    later = sandbox.free_slots(limit=10)[-1]
    local = datetime.fromisoformat(later["startTime"]).strftime("%Y-%m-%d %H:%M")  # wall clock, no offset
    kept.run(
        dag_bag,
        "example_qmatic_reschedule",
        {"appointment_id": booked["appointmentId"], "new_start_time": local, "timezone": "Europe/Stockholm"},
    )

    (moved,) = sandbox.of_customer(who["personal_identifier"])
    assert moved["appointmentId"] == booked["appointmentId"]
    assert moved["timeSlot"] == {"startTime": later["startTime"], "endTime": later["endTime"]}

    dag_run = kept.run(dag_bag, "example_qmatic_cancel", {"personal_identifier": who["personal_identifier"]})

    (cancelled,) = sandbox.of_customer(who["personal_identifier"])
    assert cancelled["status"] == "CANCELLED"
    assert state_of(dag_run, "cancel_appointment", 0) == ("success", 1)
    assert xcom_of(dag_run, "upcoming_appointment_ids") == [booked["appointmentId"]]
    assert sandbox.appointments("RESERVED") == []


def _states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()}


# Every example, as a user would press Trigger on it: in this order (the bulk reschedule and cancel
# read what the bulk booking wrote), each twice in a row, against one fresh sandbox.
AS_IS_ORDER = (
    "example_qmatic_book",
    "example_qmatic_find_and_book",
    "example_qmatic_reschedule",
    "example_qmatic_cancel",
    "example_qmatic_bulk_book",
    "example_qmatic_bulk_reschedule",
    "example_qmatic_update_customers",
    "example_qmatic_bulk_cancel",
    "example_qmatic_bulk_book_on_asset",
    "example_qmatic_bulk_plan",
    "example_qmatic_wait_and_book",
    "example_qmatic_move_earlier",
    "example_qmatic_book_combination",
    # Airflow 3 only (asset watchers); run by hand it has no asset event and books nothing.
    *(("example_qmatic_book_on_free_slot",) if ASSET_WATCHERS else ()),
)
# The DAGs whose runs wait for a person to approve; the as-is runs answer for them (approving).
WAITS_FOR_APPROVAL = ("example_qmatic_bulk_plan",)
ACTIVE = ("CONFIRMED", "RESERVED")


def _active_by_customer(sandbox: Sandbox) -> Counter[str]:
    """Active appointments per customer, from the sandbox's own store (``/_sandbox/appointments``)."""
    return Counter(
        a["customer"]["personalIdentifier"] for status in ACTIVE for a in sandbox.appointments(status)
    )


def test_update_customers_example_runs_as_is(sandbox: Sandbox, kept: Kept) -> None:
    """As-is with nothing booked (nothing to update; through the CLI, whose output must not show
    Ada's identifier), then after the book example: Ada's appointment gets the param's new email;
    a second run sends nothing, as her appointment already shows it (in-process runs)."""
    output = _dags_test(kept, sandbox, "example_qmatic_update_customers")
    assert sandbox.requests("update_customer") == 0
    assert "19800430ADA01" not in output

    # Parsed afresh: a DAG object that ran with a conf keeps its values as params in this process.
    as_is = _load_examples()
    kept.run(as_is, "example_qmatic_book")
    for _ in range(2):
        kept.run(as_is, "example_qmatic_update_customers")
        (booked,) = sandbox.of_customer("19800430ADA01")
        assert booked["customer"]["email"] == "ada.lovelace@example.org"
        assert sandbox.requests("update_customer") == 1
    assert sandbox.requests("search") >= 2 + 2 * 12  # Ada, and each row of the file, every run


def test_combination_example_runs_as_is_and_books_once_when_triggered_twice(
    dag_bag: Any, sandbox: Sandbox, kept: Kept
) -> None:
    """Through the CLI as-is, then again in-process: one appointment of both services."""
    _dags_test(kept, sandbox, "example_qmatic_book_combination")
    kept.run(dag_bag, "example_qmatic_book_combination")
    (booked,) = sandbox.appointments("CONFIRMED")
    assert booked["customer"]["personalIdentifier"] == "19361117MARGARET1"
    assert [s["id"] for s in booked["services"]] == [PASSPORT, PICK_UP]
    assert sandbox.requests("combination_reserve") == 1
    assert sandbox.requests("combination_search") == 2
    assert sandbox.appointments("RESERVED") == []


def test_as_is_order_covers_every_example(dag_bag: Any) -> None:
    assert set(AS_IS_ORDER) == set(dag_bag.dags)


def _examples_writing_to(out: Path, monkeypatch: pytest.MonkeyPatch, kept: Kept) -> Any:
    """The example DAGs parsed afresh with their output directory at ``out`` (searched by the scan)."""
    monkeypatch.setenv("QMATIC_EXAMPLE_OUTPUT_DIR", str(out))
    kept.output_dirs.append(out)
    return _load_examples()


@pytest.mark.slow
def test_every_example_runs_as_is_twice_and_books_nobody_twice(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: Kept
) -> None:
    out = tmp_path / "examples"
    bag = _examples_writing_to(out, monkeypatch, kept)
    seen: dict[str, int] = {}
    for dag_id in AS_IS_ORDER:
        for _ in range(2):
            with approving(dag_id) if dag_id in WAITS_FOR_APPROVAL else contextlib.nullcontext():
                kept.run(bag, dag_id)
            twice = {who: n for who, n in _active_by_customer(sandbox).items() if n > 1}
            assert twice == {}, (dag_id, twice)
        if dag_id == "example_qmatic_book":  # Ada, with the notes the example's param defaults to
            assert [a["notes"] for a in sandbox.of_customer("19800430ADA01")] == ["Booked by Airflow"]
        seen[dag_id] = sum(_active_by_customer(sandbox).values())
    # What each example left behind: Ada booked once by the book example; Grace added by
    # find-and-book; Ada's appointment moved, then cancelled; the bulk customers booked once each,
    # moved, then cancelled; no file of bookings arrived, so the Asset-triggered DAG booked nothing;
    # Alan waited for a free slot and was booked; Katherine, booked two weeks out, moved earlier;
    # Margaret booked once for a passport application and a document pick-up together.
    with open(EXAMPLES / "data" / "bulk_customers.csv", newline="") as handle:
        bulk = len(list(csv.DictReader(handle)))
    assert seen == {
        "example_qmatic_book": 1,
        "example_qmatic_find_and_book": 2,
        "example_qmatic_reschedule": 2,
        "example_qmatic_cancel": 1,
        "example_qmatic_bulk_book": 1 + bulk,
        "example_qmatic_bulk_reschedule": 1 + bulk,
        "example_qmatic_update_customers": 1 + bulk,
        "example_qmatic_bulk_cancel": 1,
        "example_qmatic_bulk_book_on_asset": 1,
        "example_qmatic_bulk_plan": 1 + 3,  # its own three customers, booked once after approval
        "example_qmatic_wait_and_book": 1 + 3 + 1,  # Alan, booked once when a slot was free
        "example_qmatic_move_earlier": 1 + 3 + 2,  # Katherine, booked late once, then moved earlier once
        "example_qmatic_book_combination": 1 + 3 + 2 + 1,  # Margaret, two services in one, once
        **({"example_qmatic_book_on_free_slot": 1 + 3 + 2 + 1} if ASSET_WATCHERS else {}),
    }
    with open(out / "bulk_book_results.csv", newline="") as handle:
        statuses = Counter(row["status"] for row in csv.DictReader(handle))
    assert statuses == {"skipped_existing": bulk}  # the second run found every row booked
    assert sandbox.appointments("RESERVED") == []


@pytest.mark.slow
def test_asset_triggered_example_books_a_file_once_however_often_it_runs(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: Kept
) -> None:
    out = tmp_path / "examples"
    bag = _examples_writing_to(out, monkeypatch, kept)
    dag = bag.dags["example_qmatic_bulk_book_on_asset"]
    # Scheduled on the one asset, the file's location (an Asset on 3.x, a Dataset on 2.11).
    condition = getattr(dag.timetable, "asset_condition", None) or dag.timetable.dataset_condition
    (uri,) = [asset.uri for asset in condition.objects]
    assert uri == (out / "incoming" / "bookings.csv").as_uri()

    nothing_yet = kept.run(bag, dag.dag_id)
    assert _states(nothing_yet) == {"bookings_file": "success", "bulk_book": "skipped"}

    (out / "incoming").mkdir(parents=True)
    people = [customer(str(i)) for i in range(3)]
    slots = sandbox.free_slots(limit=3)
    with open(out / "incoming" / "bookings.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["branch_id", "service_id", "start_time", *people[0]])
        writer.writeheader()
        for person, slot in zip(people, slots, strict=True):
            writer.writerow(
                {"branch_id": STOCKHOLM, "service_id": PASSPORT, "start_time": slot["startTime"], **person}
            )

    for _ in range(2):  # the same file twice, e.g. two asset events for one delivery
        assert _states(kept.run(bag, dag.dag_id)) == {"bookings_file": "success", "bulk_book": "success"}

    for person, slot in zip(people, slots, strict=True):
        (booked,) = sandbox.of_customer(person["personal_identifier"], "CONFIRMED")
        assert booked["timeSlot"]["startTime"] == slot["startTime"]
    assert sandbox.stats()["requests"]["confirm"] == {"201": 3}
    with open(out / "incoming" / "bookings_results.csv", newline="") as handle:
        assert [row["status"] for row in csv.DictReader(handle)] == ["skipped_existing"] * 3


def test_plan_example_books_only_what_a_person_approved_and_as_planned(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kept: Kept
) -> None:
    """The plan example as-is: rejected, the plan wrote nothing and nobody is booked; approved, the
    real run books every row the plan planned, on the same file."""
    out = tmp_path / "examples"
    bag = _examples_writing_to(out, monkeypatch, kept)
    dag = bag.dags["example_qmatic_bulk_plan"]

    with approving(dag.dag_id, "Reject") as answered:
        rejected = kept.run(bag, dag.dag_id)
    if answered != ["approve_plan"]:
        pytest.skip("this Airflow line approves through a Variable, which has no Reject")
    assert _states(rejected) == {
        "bookings_file": "success",
        "plan": "success",
        "approve_plan": "success",
        "book": "skipped",
    }
    assert sandbox.appointments() == []
    assert not set(sandbox.stats()["requests"]) & {"reserve", "confirm", "release", "cancel", "reschedule"}
    plan = xcom_of(rejected, "plan")
    assert (plan["dry_run"], plan["planned"], plan["failed"], plan["invalid"]) == (True, 3, 0, 0)

    with approving(dag.dag_id) as answered:
        approved = kept.run(bag, dag.dag_id)
    assert answered == ["approve_plan"]
    assert _states(approved)["book"] == "success"
    assert xcom_of(approved, "book")["succeeded"] == xcom_of(approved, "plan")["planned"] == 3
    with open(out / f"bulk_plan_{date.today().isoformat()}.plan.csv", newline="") as handle:
        planned = [row["status"] for row in csv.DictReader(handle)]
    with open(out / f"bulk_plan_{date.today().isoformat()}.results.csv", newline="") as handle:
        done = [row["status"] for row in csv.DictReader(handle)]
    assert done == ["succeeded" if status == "planned" else status for status in planned] == ["succeeded"] * 3
    assert len(sandbox.appointments("CONFIRMED")) == 3


# -- the secret-leak scan, over what the runs above left ----------------------------------------------


def test_a_wrong_secret_fails_through_the_cli(sandbox: Sandbox, kept: Kept) -> None:
    """The book example through the real CLI with a wrong client secret: refused, the run failed,
    and what the CLI printed for the exception is kept for the scan."""
    who = customer("wrong")
    conn = json.loads(sandbox.env["AIRFLOW_CONN_QMATIC_DEFAULT"])
    conn["password"] = WRONG_SECRET
    env = {**sandbox.env, "AIRFLOW_CONN_QMATIC_DEFAULT": json.dumps(conn)}

    result = kept.cli(
        "wrong_secret", "dags", "test", "example_qmatic_book", "-c", json.dumps({"customer": who}), env=env
    )

    assert dag_run_state("example_qmatic_book", who["personal_identifier"]) == "failed", result.stderr[-3000:]
    assert sandbox.stats()["requests"]["token"].get("401", 0) >= 1
    assert "Check the Client ID, Client Secret" in result.stdout + result.stderr, "no exception text"


@pytest.fixture(scope="module")
def corpus(kept: Kept) -> Any:
    return _collect(kept)


def _collect(kept: Kept) -> Any:
    files = [(d, "results") for d in kept.output_dirs] + [(kept.journal_dir, "journal")]
    return collect(kept.outputs, kept.started, files)


@pytest.mark.slow
def test_every_example_dag_ran_here_against_the_sandbox(kept: Kept) -> None:
    """The scan below searches what the tests above left: every example ran (their own assertions
    saw each run succeed), and the runs did real work; run this module whole."""
    dag_files = {p.stem for p in EXAMPLES.glob("example_*.py")}
    if not ASSET_WATCHERS:  # the watcher example defines no DAG there
        dag_files.discard("example_qmatic_book_on_free_slot")
    assert dag_files <= kept.ran, f"example DAGs not run in this module: {dag_files - kept.ran}"
    assert kept.requests["confirm", "201"] >= 3 + 12  # single books, find-and-book, the bulk file
    assert kept.requests["reschedule", "200"] >= 2
    assert kept.requests["cancel", "204"] >= 2
    assert kept.requests["token", "401"] >= 1  # the wrong secret was refused
    assert kept.reserved_left == []
    assert len(kept.tokens) >= 3


@pytest.mark.slow
def test_the_search_finds_a_planted_value_in_every_kind_of_source(kept: Kept, corpus: Any) -> None:
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
    results = kept.output_dirs[0]
    results.mkdir(parents=True, exist_ok=True)
    (results / f"planted-{RUN}.csv").write_text(f"row,error\n1,{planted}\n")
    kept.outputs["planted"] = f"output {planted}"
    try:
        again = _collect(kept)
        kinds = {name.split(":", 1)[0] for name in again.find(planted)}
        assert kinds == {"output", "log", "results"}, again.find(planted)
    finally:
        log_file.unlink()
        (results / f"planted-{RUN}.csv").unlink()
        del kept.outputs["planted"]
    # The searched text is the real thing, not empty: the runs' own traces are in it.
    assert corpus.find("Booked appointment"), "no run output collected"
    assert any(s.startswith("results:bulk_book_results") for s in corpus.sources)
    assert any(s.startswith("results:bulk_cancel_results") for s in corpus.sources)
    assert "Check the Client ID, Client Secret" in corpus.sources["output:wrong_secret"], "no exception text"


@pytest.mark.slow
def test_no_secret_in_anything_airflow_kept(kept: Kept, corpus: Any) -> None:
    assert kept.tokens
    values = {
        "client secret": DEFAULT_CLIENT.client_secret,
        "Basic value": basic(DEFAULT_CLIENT.client_id, DEFAULT_CLIENT.client_secret),
        "wrong secret": WRONG_SECRET,
        "wrong Basic value": basic(DEFAULT_CLIENT.client_id, WRONG_SECRET),
        **{f"access token #{i}": token for i, token in enumerate(kept.tokens)},
    }
    leaks = {what: corpus.find(value) for what, value in values.items()}
    assert {what: where for what, where in leaks.items() if where} == {}
