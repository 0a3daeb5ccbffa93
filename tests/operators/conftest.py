"""Shared helpers of the operator tests: a sandbox with scope-limited clients, and real DAG runs.

Every test that runs a task does it through Airflow itself: ``dag.test()`` in this process (the
Task SDK's in-process execution on Airflow 3, the classic task runner on 2.11) or the ``airflow``
CLI in a subprocess. Results are read back from the DagRun, its task instances and XCom, and from
the sandbox's own store and request counters (the ground truth of what reached "Qmatic").
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest

from airflow_provider_qmatic.api.contract import ALL_SCOPES, Scope
from airflow_provider_qmatic.sandbox import SandboxClient, SandboxServer, SandboxSettings
from airflow_provider_qmatic.sandbox.settings import derive_system_id
from tests.conftest import run_dag  # noqa: F401  (re-exported for the operator tests)

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG  # type: ignore[attr-defined,no-redef]

START_DATE = datetime(2025, 1, 1)
TENANT = "demo"

# The seeded catalogue (seed 0): Stockholm City (Europe/Stockholm) and its 15-minute service.
STOCKHOLM = "e3e70682-c209-4cac-a29f-6fbed82c07cd"
PASSPORT = "c8a70639-eb11-47b3-a7a9-c3787c65c1e5"
PICK_UP = "e87a1613-e443-4f78-9558-867f5ba91faf"  # combinable with PASSPORT at Stockholm City
UNKNOWN_GUID = "0b6a1c4e-9d1f-4e7a-8f3c-2a5b6c7d8e9f"

# One client per scope set, all of one tenant: a task that asked for a scope its client lacks
# would fail, which is how the tests prove least privilege.
CLIENTS = (
    SandboxClient("all-scopes", "secret-all-0123456789abcdef", TENANT, scopes=ALL_SCOPES),
    SandboxClient("book-only", "secret-book-0123456789abcdef", TENANT, scopes=frozenset({Scope.BOOK})),
    SandboxClient(
        "reschedule-only", "secret-resched-0123456789abcdef", TENANT, scopes=frozenset({Scope.RESCHEDULE})
    ),
    SandboxClient("cancel-only", "secret-cancel-0123456789abcdef", TENANT, scopes=frozenset({Scope.CANCEL})),
)
CONN_BY_CLIENT = {
    "all-scopes": "qmatic_default",
    "book-only": "qmatic_book_only",
    "reschedule-only": "qmatic_reschedule_only",
    "cancel-only": "qmatic_cancel_only",
}
# The all-scopes client's credentials, but another tenant's system id: every API call is 403.
WRONG_TENANT_CONN = "qmatic_wrong_tenant"


@dataclass
class Sandbox:
    """A private sandbox for one test, with a connection per client (set in the environment)."""

    server: SandboxServer
    env: dict[str, str]
    clients: tuple[SandboxClient, ...] = CLIENTS
    _client: Any = None

    def stats(self) -> dict[str, Any]:
        return self.server.stats()

    def requests(self, endpoint: str) -> int:
        """How many requests reached ``endpoint`` (any status)."""
        return sum(self.stats()["requests"].get(endpoint, {}).values())

    def appointments(self, status: str | None = None) -> list[dict[str, Any]]:
        return self.server.appointments(status=status)

    def of_customer(self, personal_identifier: str, status: str | None = None) -> list[dict[str, Any]]:
        return [
            a
            for a in self.appointments(status)
            if (a.get("customer") or {}).get("personalIdentifier") == personal_identifier
        ]

    def free_slots(self, limit: int = 10, **kw: Any) -> list[dict[str, Any]]:
        return self.server.free_slots(
            kw.pop("branch_id", STOCKHOLM), kw.pop("service_id", PASSPORT), limit, **kw
        )

    def secrets(self) -> list[str]:
        """Every client secret and every token issued so far: none may reach XCom or a log."""
        return [c.client_secret for c in self.clients] + [t["access_token"] for t in self.server.tokens()]

    def book_directly(self, customer: dict[str, Any], slot: dict[str, Any]) -> dict[str, Any]:
        """Book outside Airflow (setting up a test), as a plain client of the all-scopes connection."""
        from airflow_provider_qmatic.api.models import BookingRequest

        request = BookingRequest.parse(
            {
                "branch_id": slot["branchId"],
                "service_id": slot["serviceId"],
                "start_time": slot["startTime"],
                "end_time": slot["endTime"],
                "customer": customer,
            }
        )
        from airflow_provider_qmatic.flows import Flows

        return Flows(self.client()).book(request).appointment.to_xcom()

    def client(self) -> Any:
        """One QmaticClient of the all-scopes client for set-up work (its token is reused)."""
        if self._client is None:
            from airflow_provider_qmatic.client.client import QmaticClient
            from airflow_provider_qmatic.config import ClientConfig

            who = self.clients[0]
            config = ClientConfig.from_values(
                client_id=who.client_id,
                client_secret=who.client_secret,
                tenant=who.tenant,
                base_url=self.server.base_url,
                system_id=who.system_id,
                credential_cache="memory",
            )
            self._client = QmaticClient(config)
        return self._client


# Client-side pacing at 100 requests per minute would make every test wait 0.6 s per request; the
# sandbox's own limit is turned off to match. Pacing and 429 handling have tests of their own.
FAST_EXTRA = {"requests_per_minute": 600000}


@pytest.fixture
def sandbox_clients() -> tuple[SandboxClient, ...]:
    """The sandbox's clients, the first one behind ``qmatic_default``: the ones above, unless a
    module overrides this fixture (the example DAG tests give ``qmatic_default`` a random secret)."""
    return CLIENTS


@pytest.fixture
def sandbox(
    make_qmatic_sandbox: Callable[..., SandboxServer],
    monkeypatch: pytest.MonkeyPatch,
    airflow_db: Any,
    qmatic_answer_shape: str | None,
    sandbox_clients: tuple[SandboxClient, ...],
) -> Iterator[Sandbox]:
    """A fresh sandbox (seed 0) with the clients above and their connections in the environment;
    in the public answer shape unless a test parametrizes ``qmatic_answer_shape``."""
    settings = SandboxSettings(
        clients=sandbox_clients,
        requests_per_minute=0,
        answer_shape=qmatic_answer_shape or "public",
        # A tenant with service combinations (every single-service test runs on one too).
        service_combinations=True,
        combination_branches={"Stockholm City": ("Passport application", "Document pick-up")},
    )
    server = make_qmatic_sandbox(settings, set_env=False)
    env: dict[str, str] = {}
    for client, conn_id in zip(sandbox_clients, CONN_BY_CLIENT.values(), strict=True):
        env.update(_fast(server.connection_env(conn_id, client=client)))
    wrong = json.loads(server.conn_json)
    wrong["extra"].update(FAST_EXTRA, system_id=derive_system_id("some-other-tenant"))
    env[f"AIRFLOW_CONN_{WRONG_TENANT_CONN.upper()}"] = json.dumps(wrong)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    box = Sandbox(server, env, sandbox_clients)
    yield box
    if box._client is not None:
        box._client.close()


def _fast(env: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, value in env.items():
        conn = json.loads(value)
        conn["extra"].update(FAST_EXTRA)
        out[name] = json.dumps(conn)
    return out


_counter = iter(range(10**9))


def customer(tag: str = "") -> dict[str, Any]:
    """A valid customer with a personal identifier unique to this test session."""
    number = next(_counter)
    ident = f"T{uuid.uuid4().hex[:12].upper()}{number:04d}"
    return {
        "personal_identifier": ident,
        "first_name": "Ada",
        "last_name": f"Lovelace{tag}",
        "email": f"ada{number}@example.com",
    }


def make_dag(name: str, **kwargs: Any) -> DAG:
    """A DAG with a unique id (runs never see each other's task instances)."""
    kwargs.setdefault("schedule", None)
    kwargs.setdefault("start_date", START_DATE)
    kwargs.setdefault("catchup", False)
    return DAG(dag_id=f"test_qmatic_{name}_{uuid.uuid4().hex[:8]}", **kwargs)


def task_instance(dag_run: Any, task_id: str, map_index: int = -1) -> Any:
    matches = [
        ti for ti in dag_run.get_task_instances() if ti.task_id == task_id and ti.map_index == map_index
    ]
    assert len(matches) == 1, f"{task_id}[{map_index}]: {len(matches)} task instances"
    return matches[0]


def state_of(dag_run: Any, task_id: str, map_index: int = -1) -> tuple[str, int]:
    """``(state, try_number)`` of one task instance, state as plain text."""
    ti = task_instance(dag_run, task_id, map_index)
    return str(getattr(ti.state, "value", ti.state)), int(ti.try_number)


def xcom_of(dag_run: Any, task_id: str, map_index: int = -1) -> Any:
    """The return value a task instance pushed (read back from Airflow's XCom table)."""
    ti = task_instance(dag_run, task_id, map_index)
    if map_index >= 0:
        return ti.xcom_pull(task_ids=task_id, map_indexes=map_index)
    return ti.xcom_pull(task_ids=task_id)


def mapped_states(dag_run: Any, task_id: str) -> dict[int, str]:
    return {
        ti.map_index: str(getattr(ti.state, "value", ti.state))
        for ti in dag_run.get_task_instances()
        if ti.task_id == task_id
    }
