"""The provider registers only real secrets with Airflow's masker, never a connection's plain values.

Airflow 3 skips any value shorter than ``[logging] min_length_masked_secret`` (5) and logs
"Skipping masking for a secret as it's too short (<5 chars)". The sandbox's tenant, ``demo``, is four
letters: if the provider offered it (or any other extra) to the masker, that warning would be the
provider's doing. The warning users still see comes from Airflow itself, which offers every Extra
value of a connection it reads to the masker (docs/troubleshooting.md explains it).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from airflow_provider_qmatic import compat
from airflow_provider_qmatic.operators.appointments import QmaticFindTimeslotsOperator
from tests.operators.conftest import (
    CLIENTS,
    PASSPORT,
    STOCKHOLM,
    TENANT,
    Sandbox,
    make_dag,
    run_dag,
    state_of,
)

pytestmark = pytest.mark.airflow


def _min_length() -> int:
    from airflow.configuration import conf

    return conf.getint("logging", "min_length_masked_secret", fallback=5)


def test_only_secrets_reach_the_masker(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(TENANT) < _min_length()  # the case that matters: a tenant too short to mask
    registered: list[Any] = []
    real = compat._mask_secret

    def spy(value: Any, name: str | None = None) -> None:
        registered.append(value)
        real(value, name)

    monkeypatch.setattr(compat, "_mask_secret", spy)
    with make_dag("masking") as dag:
        QmaticFindTimeslotsOperator(task_id="find", branch_id=STOCKHOLM, service_id=PASSPORT, limit=1)

    dag_run = run_dag(dag)

    assert state_of(dag_run, "find") == ("success", 1)
    who = CLIENTS[0]
    basic = base64.b64encode(f"{who.client_id}:{who.client_secret}".encode()).decode()
    tokens = {t["access_token"] for t in sandbox.server.tokens()}
    assert tokens
    assert who.client_secret in registered
    assert basic in registered
    assert tokens <= set(registered)
    assert set(registered) <= {who.client_secret, basic, *tokens}, "a non-secret was registered"
    extras = json.loads(sandbox.env["AIRFLOW_CONN_QMATIC_DEFAULT"])["extra"]
    assert not {str(v) for v in extras.values()} & set(registered)
    assert all(isinstance(v, str) and len(v) >= _min_length() for v in registered)
