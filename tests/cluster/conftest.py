"""A real ``redis-server`` per test (Debian's package; ``make pytest`` installs it when missing).

:class:`~benchmarks.cluster.RedisServer` listens on 127.0.0.1 at a free port with its data in the
test's temporary directory and nothing persisted, so a restart loses every key: exactly the fault
the provider must survive. ``AIRFLOW_CONN_<ID>`` points Airflow's Redis connection at it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.sandbox import SandboxServer
from benchmarks.cluster import RedisServer
from tests.bulk.conftest import make_config


@pytest.fixture
def redis_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RedisServer]:
    if RedisServer.BINARY is None:
        pytest.skip("redis-server is not installed (make pytest installs Debian's redis-server package)")
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(workdir).start()
    for name, value in server.env.items():
        monkeypatch.setenv(name, value)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def sandbox(qmatic_sandbox: SandboxServer) -> SandboxServer:
    """The session sandbox, reset, with Qmatic's limit shape scaled to 600 requests a minute: a bucket
    of 8 (a client that overshoots the shared budget is refused within a second; the client keeps 5, leaving room for jitter) and tokens at 1 per second."""
    qmatic_sandbox.configure(
        slot_capacity=1000, requests_per_minute=600, api_burst=8, token_requests_per_second=1.0
    )
    return qmatic_sandbox


def redis_config(
    server: SandboxServer, token_dir: Path, redis_conn_id: str, *, rpm: float = 600
) -> ClientConfig:
    """The sandbox connection with ``credential_cache: redis`` on the Redis of ``redis_conn_id``."""
    return replace(
        make_config(server, token_dir, rpm=rpm, credential_cache="redis"), redis_conn_id=redis_conn_id
    )


def config_values(config: ClientConfig) -> dict[str, object]:
    """ClientConfig.from_values arguments that rebuild ``config`` in another process."""
    return {
        "client_id": config.client_id,
        "client_secret": config.client_secret,
        "tenant": config.tenant,
        "base_url": config.base_url,
        "system_id": config.system_id,
        "requests_per_minute": config.requests_per_minute,
        "credential_cache": config.credential_cache,
        "credential_cache_dir": config.credential_cache_dir,
        "redis_conn_id": config.redis_conn_id,
    }
