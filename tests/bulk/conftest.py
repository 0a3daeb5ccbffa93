"""Helpers of the bulk tests: clients built like the operators build them, rows from free slots.

Every test talks to the sandbox (the ground truth of what reached "Qmatic": its store and its
request counters) through the real client, token cache and rate limiter. Rate limits are scaled up
(thousands of requests per minute) so that jobs of hundreds of rows take seconds; the sandbox's
fake clock stands in for waiting (reservation holds, token lifetimes).
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.bulk.io import as_path, csv_records, file_format, jsonl_objects
from airflow_provider_qmatic.client.client import QmaticClient, build_client
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.sandbox import SandboxServer

_numbers = itertools.count()


def make_config(
    server: SandboxServer, token_dir: Path, *, rpm: float = 60_000, credential_cache: str = "file"
) -> ClientConfig:
    """The sandbox connection's values, as the hook would validate them."""
    return ClientConfig.from_values(
        client_id=server.client_id,
        client_secret=server.client_secret,
        tenant=server.tenant,
        base_url=server.base_url,
        system_id=server.system_id,
        requests_per_minute=rpm,
        credential_cache=credential_cache,
        credential_cache_dir=str(token_dir),
    )


def make_client(server: SandboxServer, tmp_path: Path, *, rpm: float = 60_000, **kwargs: Any) -> QmaticClient:
    """A bulk client (file token cache and shared limiter in a private dir under ``tmp_path``)."""
    return build_client(make_config(server, tmp_path / "tokens", rpm=rpm), **kwargs)


def customer_id(prefix: str = "B") -> str:
    """A personal identifier (10-48 letters/digits) unique to this test session."""
    return f"{prefix}{uuid.uuid4().hex[:10].upper()}{next(_numbers):06d}"


def booking_rows(server: SandboxServer, n: int, *, with_end: bool = True) -> list[dict[str, Any]]:
    """``n`` flat booking rows, each on its own free slot, each for a new customer."""
    slots = server.free_slots(limit=n)
    assert len(slots) == n, f"the sandbox has only {len(slots)} free slots"
    rows = []
    for slot in slots:
        pid = customer_id()
        row = {
            "branch_id": slot["branchId"],
            "service_id": slot["serviceId"],
            "start_time": slot["startTime"],
            "personal_identifier": pid,
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": f"{pid.lower()}@example.com",
        }
        if with_end:
            row["end_time"] = slot["endTime"]
        rows.append(row)
    return rows


def statuses(server: SandboxServer) -> Counter[str]:
    return Counter(a["status"] for a in server.appointments())


def confirmed_by_customer(server: SandboxServer) -> Counter[str]:
    """How many CONFIRMED appointments each customer has."""
    return Counter(
        a["customer"]["personalIdentifier"]
        for a in server.appointments(status="CONFIRMED")
        if a.get("customer")
    )


def requests_to(server: SandboxServer, endpoint: str) -> int:
    return sum(server.stats()["requests"].get(endpoint, {}).values())


@pytest.fixture
def sandbox(qmatic_sandbox: SandboxServer) -> SandboxServer:
    """The session sandbox, reset, with room for bulk jobs and its own limit off unless a test sets one."""
    qmatic_sandbox.configure(slot_capacity=5, requests_per_minute=0)
    return qmatic_sandbox


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    path = tmp_path / "journals"
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)
    return path


@pytest.fixture
def connection(
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_db: Any
) -> str:
    """``qmatic_default`` pointing at the sandbox, paced at 60000/min, with private token and
    journal directories."""
    conn = json.loads(sandbox.conn_json)
    conn["extra"].update(requests_per_minute=60000, credential_cache_dir=str(tmp_path / "tokens"))
    monkeypatch.setenv("AIRFLOW_CONN_QMATIC_DEFAULT", json.dumps(conn))
    monkeypatch.setenv("QMATIC_BULK_JOURNAL_DIR", str(tmp_path / "journals"))
    return "qmatic_default"


def read_outcomes(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read back a results file as the runner wrote it (row as int, empty as None, a formula-like
    cell's leading ``'`` taken off again)."""
    target = as_path(path)
    if file_format(target, what="results_path") == "jsonl":
        return list(jsonl_objects(target, what="results file"))
    out: list[dict[str, Any]] = []
    records = csv_records(target, what="results file")
    header = next(records)
    for record in records:
        item: dict[str, Any] = {k: (_restore(v) if v else None) for k, v in zip(header, record, strict=False)}
        item["row"] = int(record[0])
        out.append(item)
    return out


def _restore(value: str) -> str:
    if value.startswith("'") and value[1:].startswith(("=", "+", "-", "@", "\t", "\r")):
        return value[1:]
    return value
