"""Token requests are spaced per Qmatic host: the token endpoint takes one request per second.

Against the sandbox at its documented limit (1 token request per second per client): two clients
of one process (a book task's and a reschedule task's scopes) and two processes of one host start
together, and the token endpoint never answers 429.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from airflow_provider_qmatic.api.contract import BOOK_SCOPES, CANCEL_SCOPES, RESCHEDULE_SCOPES
from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.sandbox import SandboxServer
from airflow_provider_qmatic.state.tokens import MemoryTokenCache


def _values(sandbox: SandboxServer, **extra: object) -> dict[str, object]:
    who = sandbox.client
    return {
        "client_id": who.client_id,
        "client_secret": who.client_secret,
        "tenant": who.tenant,
        "base_url": sandbox.base_url,
        "system_id": who.system_id,
        **extra,
    }


def _together(actions: list[Callable[[], object]]) -> None:
    barrier = threading.Barrier(len(actions))
    errors: list[BaseException] = []

    def run(action: Callable[[], object]) -> None:
        barrier.wait()
        try:
            action()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(a,)) for a in actions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors


def test_two_clients_of_one_process_never_meet_the_token_limit(
    make_qmatic_sandbox: Callable[..., SandboxServer],
) -> None:
    sandbox = make_qmatic_sandbox(set_env=False)  # token endpoint: 1 request per second per client
    config = ClientConfig.from_values(**_values(sandbox, credential_cache="memory"))  # type: ignore[arg-type]
    clients = [QmaticClient(config, token_cache=MemoryTokenCache()) for _ in range(3)]
    _together(
        [
            lambda c=c, s=s: c.tokens.token(s)
            for c, s in zip(clients, (BOOK_SCOPES, RESCHEDULE_SCOPES, CANCEL_SCOPES), strict=True)
        ]
    )
    stats = sandbox.stats()
    assert stats["rate_limited"]["token"] == 0, stats
    assert stats["token_requests"] == 3
    assert sum(c.token_requests for c in clients) == 3  # each asked once: no 429 made anyone repeat


CHILD = r"""
import json, sys
from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.api.contract import Scope

values, scope = json.loads(sys.argv[1]), sys.argv[2]
client = QmaticClient(ClientConfig.from_values(**values))
print("ready", flush=True)
sys.stdin.readline()
client.tokens.token(frozenset({Scope[scope]}))
print(client.token_requests, flush=True)
"""


def test_two_processes_of_one_host_never_meet_the_token_limit(
    make_qmatic_sandbox: Callable[..., SandboxServer], tmp_path: Path
) -> None:
    sandbox = make_qmatic_sandbox(set_env=False)
    values = json.dumps(
        _values(sandbox, credential_cache="file", credential_cache_dir=str(tmp_path / "cache"))
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, values, scope],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for scope in ("BOOK", "RESCHEDULE")
    ]
    for child in children:  # both have imported everything and built their client
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    counts = [int(child.communicate(timeout=60)[0].strip()) for child in children]
    assert [child.returncode for child in children] == [0, 0]
    stats = sandbox.stats()
    assert stats["rate_limited"]["token"] == 0, stats
    assert stats["token_requests"] == 2
    assert counts == [1, 1]
