"""Fixtures of the sandbox contract tests: one server for the session, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sandbox_helpers import SETTINGS, Api

from airflow_provider_qmatic.sandbox import SandboxServer


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    with SandboxServer(SETTINGS) as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> SandboxServer:
    sandbox_server.reset()
    return sandbox_server


@pytest.fixture
def api(sandbox: SandboxServer) -> Api:
    return Api(sandbox)


@pytest.fixture
def slot(sandbox: SandboxServer) -> dict[str, Any]:
    return sandbox.free_slots(limit=1)[0]
