"""The 16 MiB answer cap holds for what is *decoded*: a compressed answer that inflates past it is cut
off while it inflates, for API and token answers alike, and never held in memory whole.

A loopback server sends a small gzip or deflate body (well under the cap on the wire) that inflates
to far more; the peak of Python's allocations during the call (``tracemalloc``) shows whether it
was inflated in full.
"""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.client.transport import MAX_ANSWER_BYTES
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.exceptions import QmaticError, QmaticServerError, QmaticUnknownOutcomeError
from tests.scripted_server import Reply, ScriptedServer, scripted, token_reply

TOKEN_PATH = "/oauth2/token"
BRANCHES = "/external/v1/branches"
RESERVE = "/external/v1/reservations"
MIB = 1024 * 1024
# Inflated, the answer is eight times the cap: valid JSON (an empty list padded with spaces), so
# only the cap can refuse it.
INFLATED = b"[" + b" " * (8 * MAX_ANSWER_BYTES) + b"]"
ENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda raw: gzip.compress(raw, compresslevel=9),
    "deflate": lambda raw: zlib.compress(raw, 9),
}


@pytest.fixture
def origin() -> Iterator[ScriptedServer]:
    yield from scripted()


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {name: encode(INFLATED) for name, encode in ENCODINGS.items()}


def _client(server: ScriptedServer) -> QmaticClient:
    config = ClientConfig.from_values(
        client_id="zip-client",
        client_secret="zip-SECRET-9e41d7c2",
        tenant="demo",
        system_id="sys-1",
        base_url=server.base_url,
        requests_per_minute=600000,
        credential_cache="memory",
        timeout=60,
    )
    return QmaticClient(config, sleep=lambda _s: None, max_attempts=2)


def _peak_during(call: Callable[[], Any]) -> tuple[BaseException | None, int]:
    """The error ``call`` raised (or None) and the peak of traced allocations meanwhile."""
    tracemalloc.start()
    try:
        call()
    except QmaticError as exc:
        return exc, tracemalloc.get_traced_memory()[1]
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return None, peak


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize(
    ("path", "operation", "error", "attempts"),
    [
        pytest.param(BRANCHES, "list_branches", QmaticServerError, 2, id="read-retried"),
        pytest.param(RESERVE, "reserve", QmaticUnknownOutcomeError, 1, id="write-answer-lost"),
    ],
)
def test_a_compressed_api_answer_is_capped_as_it_inflates(
    origin: ScriptedServer,
    bombs: dict[str, bytes],
    encoding: str,
    path: str,
    operation: str,
    error: type[QmaticError],
    attempts: int,
) -> None:
    body = bombs[encoding]
    assert len(body) < MAX_ANSWER_BYTES // 16  # far under the cap on the wire
    origin.script(TOKEN_PATH, token_reply("TOKEN-zip-4c1f"))
    origin.script(path, Reply(200, body, headers={"Content-Encoding": encoding}))
    client = _client(origin)
    client.tokens.token(frozenset())  # the token first, so only the answer's memory is measured
    if operation == "reserve":
        caught, peak = _peak_during(lambda: client.reserve({"branchId": "b", "serviceId": "s"}))
    else:
        caught, peak = _peak_during(client.list_branches)
    assert isinstance(caught, error), caught
    assert "cut off at 16 MiB" in str(caught)
    assert origin.paths().count(path) == attempts
    # Inflated in full, the answer alone is 128 MiB (and requests joins a second copy).
    assert peak < 3 * MAX_ANSWER_BYTES, f"peak {peak / MIB:.0f} MiB"


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_a_compressed_token_answer_is_capped_as_it_inflates(
    origin: ScriptedServer, bombs: dict[str, bytes], encoding: str
) -> None:
    origin.script(TOKEN_PATH, Reply(200, bombs[encoding], headers={"Content-Encoding": encoding}))
    client = _client(origin)
    caught, peak = _peak_during(client.list_branches)
    assert isinstance(caught, QmaticServerError), caught
    assert "cut off at 16 MiB" in str(caught)
    assert origin.paths() == [TOKEN_PATH] * 6  # retried as any failed token request is
    assert peak < 3 * MAX_ANSWER_BYTES, f"peak {peak / MIB:.0f} MiB"


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_a_compressed_answer_under_the_cap_is_read_as_usual(origin: ScriptedServer, encoding: str) -> None:
    branches = b'[{"id": "b-1", "name": "' + b"x" * (2 * MIB) + b'"}]'
    token = b'{"access_token": "TOKEN-zip-4c1f", "expires_in": 3600, "token_type": "Bearer"}'
    encode = ENCODINGS[encoding]
    origin.script(TOKEN_PATH, Reply(200, encode(token), headers={"Content-Encoding": encoding}))
    origin.script(BRANCHES, Reply(200, encode(branches), headers={"Content-Encoding": encoding}))
    client = _client(origin)
    for _ in range(2):  # the connection is reused after a decoded answer
        [branch] = client.list_branches()
        assert branch.id == "b-1"
