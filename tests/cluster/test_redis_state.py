"""The Redis backends against a real redis-server: the connection, the token cache, the budget, the
journal, and what each does when Redis is missing, lost or restarted empty."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from airflow_provider_qmatic.api.contract import scope_string
from airflow_provider_qmatic.client.client import (
    BOOK_SCOPES,
    CANCEL_SCOPES,
    DEFAULT_ATTEMPTS,
    QmaticClient,
    build_client,
)
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.exceptions import (
    QmaticConfigError,
    QmaticCoordinationError,
    QmaticCoordinationTimeout,
    QmaticJournalBusyError,
)
from airflow_provider_qmatic.sandbox import SandboxServer
from airflow_provider_qmatic.state import _redis, request_budget
from airflow_provider_qmatic.state._redis import redis_for
from airflow_provider_qmatic.state.budget import RateLimiter, Spacing
from airflow_provider_qmatic.state.journal import DONE, RESERVED, RedisJournal
from airflow_provider_qmatic.state.tokens import make_cache_key
from benchmarks.cluster import RedisServer, free_port
from tests.bulk.conftest import make_config

from .conftest import config_values, redis_config

CHILD = Path(__file__).resolve().parent.parent / "bulk" / "bulk_child.py"


def _raw(server: RedisServer) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port)


# -- the connection ----------------------------------------------------------------------------


def test_config_reads_redis_choice_and_conn_id_with_its_default() -> None:
    base = {"client_id": "c", "client_secret": "s", "tenant": "t", "region": "eu-west-1"}
    assert ClientConfig.from_values(**base, credential_cache="redis").redis_conn_id == "redis_default"
    config = ClientConfig.from_values(**base, credential_cache="Redis", redis_conn_id=" cluster_redis ")
    assert (config.credential_cache, config.redis_conn_id) == ("redis", "cluster_redis")
    with pytest.raises(QmaticConfigError) as caught:
        ClientConfig.from_values(**base, redis_conn_id="a\nb")
    assert caught.value.field == "redis_conn_id"


@pytest.mark.airflow
def test_hook_reads_both_extras(monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer) -> None:
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    extra = {"tenant": "t", "region": "eu-west-1", "credential_cache": "redis"}
    extra["redis_conn_id"] = redis_server.conn_id
    monkeypatch.setenv(
        "AIRFLOW_CONN_QMATIC_REDIS",
        json.dumps({"conn_type": "qmatic", "login": "c", "password": "s", "extra": extra}),
    )
    config = QmaticHook("qmatic_redis").config
    assert (config.credential_cache, config.redis_conn_id) == ("redis", redis_server.conn_id)


@pytest.mark.airflow
def test_connection_form_offers_redis() -> None:
    from airflow_provider_qmatic.hooks.connection_fields import EXTRA_FIELDS, PLACEHOLDERS

    assert "redis" in EXTRA_FIELDS["credential_cache"][2]["enum"]
    assert EXTRA_FIELDS["redis_conn_id"][2]["default"] == "redis_default"
    assert PLACEHOLDERS["redis_conn_id"] == "redis_default"


def test_unreachable_redis_at_start_names_the_connection_and_address(
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("AIRFLOW_CONN_QMATIC_DEAD_REDIS", f"redis://127.0.0.1:{port}/0")
    config = redis_config(sandbox, tmp_path / "tokens", "qmatic_dead_redis")
    for build in (lambda: QmaticClient(config), lambda: request_budget(config, bulk=True)):
        with pytest.raises(QmaticConfigError) as caught:
            build()
        message = str(caught.value)
        assert caught.value.field == "redis_conn_id"
        assert "'qmatic_dead_redis'" in message
        assert f"127.0.0.1:{port}" in message
        assert "no fallback" in message
    assert sandbox.stats()["token_requests"] == 0
    assert sandbox.stats()["api_requests"] == 0


def test_missing_redis_connection_is_a_config_error(sandbox: SandboxServer, tmp_path: Path) -> None:
    with pytest.raises(QmaticConfigError) as caught:
        QmaticClient(redis_config(sandbox, tmp_path / "tokens", "qmatic_no_such_connection"))
    assert caught.value.field == "redis_conn_id"
    assert "'qmatic_no_such_connection'" in str(caught.value)


# -- tokens ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_token_fetch_for_many_processes_and_hosts(
    sandbox: SandboxServer, tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Four processes, each with its own credential cache directory (four hosts), start together."""
    sandbox.configure(latency_ms=200)  # a slow token endpoint: the others must wait, not fetch
    children = []
    for i in range(4):
        values = config_values(redis_config(sandbox, tmp_path / f"host{i}", redis_server.conn_id))
        args = json.dumps({"config": values})
        children.append(
            subprocess.Popen(
                [sys.executable, str(CHILD), "one_call", args], stdout=subprocess.PIPE, text=True
            )
        )
    fetched = []
    for child in children:
        out, _ = child.communicate(timeout=240)
        assert child.returncode == 0
        fetched.append(json.loads(out.strip().splitlines()[-1])["token_requests"])
    assert sorted(fetched) == [0, 0, 0, 1]
    stats = sandbox.stats()
    assert stats["token_requests"] == 1
    assert stats["rate_limited"]["token"] == 0

    # Key names hold hashes only; the one token entry expires before the token does.
    raw = _raw(redis_server)
    keys = [k.decode() for k in raw.keys("*")]
    config = redis_config(sandbox, tmp_path / "x", redis_server.conn_id)
    for key in keys:
        for secret in (config.client_id, config.client_secret, config.tenant, config.base_url):
            assert secret not in key
    [entry] = [k for k in keys if k.startswith("qmatic:token:") and not k.endswith(":lock")]
    token = QmaticClient(config).tokens.token(BOOK_SCOPES)  # read from Redis (sealed), not fetched
    assert sandbox.stats()["token_requests"] == 1
    assert token not in " ".join(keys)
    assert token.encode() not in raw.get(entry)
    assert 0 < raw.pttl(entry) <= (3600 - 300) * 1000  # the sandbox's hour, less the refresh margin
    assert token not in caplog.text


def test_refused_token_is_dropped_cluster_wide_but_a_newer_one_is_kept(
    sandbox: SandboxServer, tmp_path: Path, redis_server: RedisServer
) -> None:
    first = QmaticClient(redis_config(sandbox, tmp_path / "a", redis_server.conn_id))
    second = QmaticClient(redis_config(sandbox, tmp_path / "b", redis_server.conn_id))
    token = first.tokens.token(BOOK_SCOPES)
    assert second.tokens.token(BOOK_SCOPES) == token
    first.tokens.invalidate(BOOK_SCOPES, token)
    renewed = second.tokens.token(BOOK_SCOPES)  # second's own memory still has it; drop that too
    second.tokens.invalidate(BOOK_SCOPES, renewed)
    fresh = second.tokens.token(BOOK_SCOPES)
    assert fresh != token
    first.tokens.invalidate(BOOK_SCOPES, token)  # a stale invalidation must not drop the newer token
    third = QmaticClient(redis_config(sandbox, tmp_path / "c", redis_server.conn_id))
    assert third.tokens.token(BOOK_SCOPES) == fresh
    assert sandbox.stats()["requests"]["token"]["200"] == 2  # granted; a jittered 429 may add a retry


def test_lost_redis_fails_a_token_look_up_retryably_without_fetching(
    sandbox: SandboxServer, tmp_path: Path, redis_server: RedisServer
) -> None:
    client = QmaticClient(redis_config(sandbox, tmp_path / "a", redis_server.conn_id), max_attempts=2)
    redis_server.stop()
    with pytest.raises(QmaticCoordinationError) as caught:
        client.call("branches", BOOK_SCOPES)
    assert caught.value.retryable
    assert redis_server.conn_id in str(caught.value)
    assert sandbox.stats()["token_requests"] == 0
    assert sandbox.stats()["api_requests"] == 0


# -- the budget --------------------------------------------------------------------------------


def _limiter(server: RedisServer, rpm: float, **kwargs: float) -> RateLimiter:
    return RateLimiter(rpm, key="test-budget", redis=redis_for(server.conn_id), **kwargs)


def _spacing(server: RedisServer, interval: float) -> Spacing:
    return Spacing(interval, key="test-endpoint", redis=redis_for(server.conn_id))


def test_token_endpoint_spacing_and_its_429_pause_hold_on_every_host(redis_server: RedisServer) -> None:
    """Two hosts' token providers book moments one interval apart; a 429 seen by one holds both."""
    one, other = _spacing(redis_server, 0.5), _spacing(redis_server, 0.5)
    slept: list[float] = []
    assert one.wait(slept.append) == 0.0
    other.wait(slept.append)
    assert 0.4 < slept[-1] <= 0.5  # the other host waits for the next free moment
    one.hold_off(3.0)
    other.wait(slept.append)
    assert 2.5 < slept[-1] <= 3.0
    redis_server.stop()
    with pytest.raises(QmaticCoordinationError):
        one.wait(slept.append)
    one.hold_off(1.0)  # after an answer: a warning, not an error


def test_budget_starts_empty_and_restarts_empty_after_redis_loses_it(redis_server: RedisServer) -> None:
    limiter = _limiter(redis_server, 600, burst=5)  # 9.9 a second once paced
    started = time.monotonic()
    for _ in range(5):
        limiter.acquire()
    # A full bucket would have let five through at once; an empty one paces them (~0.5 s).
    assert time.monotonic() - started >= 0.4
    redis_server.stop()
    with pytest.raises(QmaticCoordinationError):
        limiter.acquire()
    redis_server.start()
    started = time.monotonic()
    for _ in range(5):
        limiter.acquire()
    assert time.monotonic() - started >= 0.4


def test_a_429_pauses_every_process_and_halves_the_shared_rate(redis_server: RedisServer) -> None:
    one, other = _limiter(redis_server, 600, burst=5), _limiter(redis_server, 600, burst=5)
    one.acquire()
    one.on_rate_limited(1.0)
    assert other.current_rate == 300
    started = time.monotonic()
    other.acquire()
    assert time.monotonic() - started >= 0.9
    # Reports after an answer arrived never raise, even with Redis gone.
    redis_server.stop()
    one.on_rate_limited(None)
    one.on_success()


def test_reports_after_an_answer_survive_a_lost_redis(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = _limiter(redis_server, 600, burst=5)
    limiter.on_rate_limited(0.0)
    redis_server.stop()
    with caplog.at_level(logging.WARNING):
        limiter.on_success()
    assert "request budget" in caplog.text
    assert limiter.current_rate == 300  # the last value seen


@pytest.mark.parametrize("where", ["host", "redis"])
def test_single_calls_do_not_queue_behind_bulk(where: str, tmp_path: Path, redis_server: RedisServer) -> None:
    """Eight bulk threads saturate a 120/min budget (one request every half second); a single
    booking's three requests still go through at once, from the reserve bulk may not touch."""
    if where == "host":
        shared = tmp_path / "budget"

        def make(reserve: float) -> RateLimiter:
            return RateLimiter(120, burst=5, reserve=reserve, shared_dir=shared, key="fair")
    else:

        def make(reserve: float) -> RateLimiter:
            return _limiter(redis_server, 120, burst=5, reserve=reserve)

    taken_before, waited = _three_single_requests_among_bulk(make(3), make(0), threads=8, warm_up_s=4.0)
    assert taken_before >= 2  # the reserve filled, and bulk ran at the pace
    # Behind eight bulk threads without a reserve, three requests would take about 3 * 8 * 0.5 s.
    assert waited < 1.5, waited


@pytest.mark.parametrize("cache", ["file", "redis"])
def test_single_calls_go_first_at_a_low_limit_too(
    cache: str, sandbox: SandboxServer, tmp_path: Path, redis_server: RedisServer
) -> None:
    """At 30 requests a minute the burst is 1.5, too small for "all but two": the bulk budget still
    leaves half a request, so a single call takes each next refill (one every 2.1 s) before four
    saturating bulk threads. Without it, each of the three would wait behind the threads (about
    5 refills, 10 s, each)."""
    tokens = tmp_path / "tokens"
    config = (
        redis_config(sandbox, tokens, redis_server.conn_id, rpm=30)
        if cache == "redis"
        else make_config(sandbox, tokens, rpm=30)
    )
    bulk, single = request_budget(config, bulk=True), request_budget(config)
    assert (bulk.reserve, single.reserve) == (0.5, 0.0)
    _, waited = _three_single_requests_among_bulk(bulk, single, threads=4, warm_up_s=3.0)
    assert waited < 9.0, waited  # three refills of 2.1 s, with room for a loaded machine


def _three_single_requests_among_bulk(
    bulk: RateLimiter, single: RateLimiter, *, threads: int, warm_up_s: float
) -> tuple[int, float]:
    """``threads`` threads take requests from ``bulk`` without pause; after ``warm_up_s`` three
    are taken from ``single``. Returns the bulk requests taken by then and the seconds the three
    took."""
    stop = threading.Event()
    taken = [0]

    def saturate() -> None:
        # ``bulk.acquire()``'s own loop, with a wait the test can end at once (at a low limit a
        # thread blocked in ``acquire`` would hold the test for a refill per thread).
        while not stop.is_set():
            wait = bulk.try_acquire()
            if wait > 0:
                stop.wait(wait)
            else:
                taken[0] += 1

    workers = [threading.Thread(target=saturate, daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(warm_up_s)
        taken_before = taken[0]
        started = time.monotonic()
        for _ in range(3):
            single.acquire()
        waited = time.monotonic() - started
    finally:
        stop.set()
    for worker in workers:
        worker.join(timeout=10)
    return taken_before, waited


# -- the journal -------------------------------------------------------------------------------


def test_journal_in_redis_is_read_by_another_worker_and_leased(redis_server: RedisServer) -> None:
    link = redis_for(redis_server.conn_id)
    first = RedisJournal(link, "task-1.jsonl")
    assert first.open().entries == 0
    first.record(RESERVED, fingerprint="f1", row=1, reservation_id="r1")
    first.record(DONE, fingerprint="f1", row=1, reservation_id="r1", appointment_id="a1")
    first.record(RESERVED, fingerprint="f2", row=2, reservation_id="r2")
    second = RedisJournal(link, "task-1.jsonl")
    with pytest.raises(QmaticJournalBusyError) as caught:  # the first attempt still runs
        second.open()
    assert caught.value.retryable
    first.close()
    state = second.open()
    assert state.done == {"f1": "a1"}
    assert set(state.open_reservations) == {"r2"}
    second.close()
    # Nothing personal or secret in Redis: hashes, row numbers and Qmatic ids only.
    assert all(k.startswith(b"qmatic:journal:{") for k in _raw(redis_server).keys("qmatic:journal:*"))


def test_journal_append_refused_once_the_lease_is_lost(redis_server: RedisServer) -> None:
    journal = RedisJournal(redis_for(redis_server.conn_id), "task-2.jsonl")
    journal.open()
    redis_server.stop()
    with pytest.raises(QmaticCoordinationError):
        journal.record(RESERVED, fingerprint="f", row=1, reservation_id="r")
    redis_server.start()  # restarted empty: the lease is gone, so this attempt may no longer write
    with pytest.raises(QmaticJournalBusyError):
        journal.record(RESERVED, fingerprint="f", row=1, reservation_id="r")
    journal.close()


@pytest.mark.airflow
def test_bulk_operators_draw_with_a_reserve_and_single_operators_without(
    qmatic_sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_qmatic.operators.appointments import QmaticCancelAppointmentOperator
    from airflow_provider_qmatic.operators.bulk import QmaticBulkBookAppointmentsOperator

    monkeypatch.setenv("QMATIC_TOKEN_CACHE_DIR", str(tmp_path / "tokens"))
    bulk = QmaticBulkBookAppointmentsOperator(task_id="bulk", rows="bookings.csv")
    single = QmaticCancelAppointmentOperator(task_id="single", appointment_id="x")
    assert bulk.hook.client.limiter.reserve == 3  # of a burst of 5 at 100 requests a minute
    assert single.hook.client.limiter.reserve == 0


# -- issue 20: the database, tokens at rest, bounded waits, state that heals ---------------------


def _token_entry(raw: redis.Redis) -> str:
    [entry] = [k.decode() for k in raw.keys("qmatic:token:*") if not k.endswith(b":lock")]
    return entry


@pytest.mark.parametrize(
    "form",
    ["url-path", "url-query", "extra"],
)
def test_the_redis_database_of_the_connection_is_the_one_written(
    form: str,
    sandbox: SandboxServer,
    tmp_path: Path,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``redis://host:port/1``, ``?db=1`` and the extra ``db`` all mean database 1; database 0 stays
    empty, so two deployments on databases of their own never meet."""
    conn_id = f"{redis_server.conn_id}_{form.replace('-', '_')}"
    address = f"127.0.0.1:{redis_server.port}"
    value = {
        "url-path": f"redis://{address}/1",
        "url-query": f"redis://{address}?db=1",
        "extra": json.dumps(
            {"conn_type": "redis", "host": "127.0.0.1", "port": redis_server.port, "extra": {"db": 1}}
        ),
    }[form]
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)
    config = redis_config(sandbox, tmp_path / "tokens", conn_id)
    build_client(config).list_branches()
    db0 = redis.Redis(host="127.0.0.1", port=redis_server.port, db=0)
    db1 = redis.Redis(host="127.0.0.1", port=redis_server.port, db=1)
    assert db0.keys("qmatic:*") == []
    assert {k.split(b":")[1] for k in db1.keys("qmatic:*")} >= {b"token", b"budget", b"tokspace"}


def test_two_databases_named_at_once_are_a_config_error(
    sandbox: SandboxServer, tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = f"{redis_server.conn_id}_two_dbs"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", f"redis://127.0.0.1:{redis_server.port}/2?db=1")
    with pytest.raises(QmaticConfigError) as caught:
        QmaticClient(redis_config(sandbox, tmp_path / "tokens", conn_id))
    assert caught.value.field == "redis_conn_id"
    assert "database" in str(caught.value)
    assert sandbox.stats()["token_requests"] == 0


def test_a_token_in_redis_is_encrypted_and_bound_to_its_identity(
    sandbox: SandboxServer, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Redis read access alone yields no usable token: the entry is sealed with a key derived from the
    client secret, and an entry moved to another identity's key cannot be opened there."""
    client = QmaticClient(redis_config(sandbox, tmp_path / "a", redis_server.conn_id))
    token = client.tokens.token(BOOK_SCOPES)
    raw = _raw(redis_server)
    entry = _token_entry(raw)
    stored = raw.get(entry)
    assert stored is not None
    dump = b" ".join(raw.get(k) or b"" for k in raw.keys("qmatic:*") if raw.type(k) == b"string")
    for start in range(len(token) - 8 + 1):  # not even 8 characters of it, in any case
        assert token[start : start + 8].lower().encode() not in dump.lower()
    config = redis_config(sandbox, tmp_path / "x", redis_server.conn_id)
    assert config.client_secret.encode() not in dump

    # The same sealed value under the key of other scopes (another identity) is not accepted there:
    # dropped, and a token fetched for those scopes, without an error.
    QmaticClient(redis_config(sandbox, tmp_path / "b", redis_server.conn_id)).tokens.token(CANCEL_SCOPES)
    [cancel_entry] = [
        k for k in raw.keys("qmatic:token:*") if not k.endswith(b":lock") and k.decode() != entry
    ]
    raw.set(cancel_entry, stored, px=600_000)
    fetched_before = sandbox.stats()["token_requests"]
    third = QmaticClient(redis_config(sandbox, tmp_path / "c", redis_server.conn_id))
    assert third.tokens.token(CANCEL_SCOPES) != token
    assert sandbox.stats()["token_requests"] == fetched_before + 1


@pytest.mark.parametrize("damage", ["garbage", "wrong-type", "other-secret"])
def test_a_token_entry_that_cannot_be_used_is_replaced_not_fatal(
    damage: str, sandbox: SandboxServer, tmp_path: Path, redis_server: RedisServer
) -> None:
    first = QmaticClient(redis_config(sandbox, tmp_path / "a", redis_server.conn_id))
    token = first.tokens.token(BOOK_SCOPES)
    raw = _raw(redis_server)
    entry = _token_entry(raw)
    if damage == "garbage":
        raw.set(entry, b"\x00not a sealed token", px=600_000)
    elif damage == "wrong-type":
        raw.delete(entry)
        raw.hset(entry, "access_token", token)
    else:  # a value sealed for the same key with another secret (or by an older version in clear)
        raw.set(entry, json.dumps({"access_token": "planted-token", "expires_at": time.time() + 3000}))
    second = QmaticClient(redis_config(sandbox, tmp_path / "b", redis_server.conn_id))
    assert second.list_branches()  # works, with a token fetched afresh
    assert sandbox.stats()["token_requests"] == 2
    assert raw.type(entry) == b"string"
    third = QmaticClient(redis_config(sandbox, tmp_path / "c", redis_server.conn_id))
    third.list_branches()
    assert sandbox.stats()["token_requests"] == 2  # the rebuilt entry is shared again


def test_a_token_lock_left_without_a_ttl_is_not_waited_on_forever(
    sandbox: SandboxServer, tmp_path: Path, redis_server: RedisServer
) -> None:

    config = redis_config(sandbox, tmp_path / "a", redis_server.conn_id)
    key = make_cache_key(
        base_url=config.base_url,
        tenant=config.tenant,
        client_id=config.client_id,
        scopes=scope_string(BOOK_SCOPES),
        secret_fingerprint=config.secret_fingerprint,
    )
    raw = _raw(redis_server)
    raw.set(f"qmatic:token:{{{key}}}:lock", "left-by-a-crashed-tool")  # no TTL
    client = QmaticClient(config)
    done: list[str] = []
    worker = threading.Thread(target=lambda: done.append(client.tokens.token(BOOK_SCOPES)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert done, "still polling a lock that never expires"
    assert raw.pttl(f"qmatic:token:{{{key}}}:lock") != -1  # repaired or gone, never immortal


# Redis commands' deadline in the tests that wait for it (the product's is 5 s): what they prove is
# that the deadline holds, not how long it is, and at 5 s each of them waits ten seconds.
DEADLINE_S = 1.0


def _drip_server(stop: threading.Event, every: float) -> int:
    """A TCP server that answers every connection with an endless Redis bulk string, one byte every
    ``every`` seconds: each read gets a byte well within a per-read timeout longer than that."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)

    def serve(conn: socket.socket) -> None:
        with conn:
            for byte in b"$1000000\r\n" + b"x" * 1000:
                if stop.wait(0 if byte == ord("$") else every):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def accept() -> None:
        with listener:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return int(listener.getsockname()[1])


def test_a_redis_that_drips_its_answer_byte_by_byte_fails_in_bounded_time(
    sandbox: SandboxServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A byte every 0.4 s never lets a read time out (each socket read waits at most the deadline, 1 s
    here): only the deadline on the whole command ends it, and the answer would take 400 s."""
    monkeypatch.setattr(_redis, "SOCKET_TIMEOUT_S", DEADLINE_S)
    stop = threading.Event()
    port = _drip_server(stop, every=0.4 * DEADLINE_S)
    conn_id = f"qmatic_dripping_redis_{port}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", f"redis://127.0.0.1:{port}/0")
    outcome: list[BaseException] = []

    def build() -> None:
        try:
            QmaticClient(redis_config(sandbox, tmp_path / "tokens", conn_id))
        except Exception as exc:
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=build, daemon=True)
    worker.start()
    worker.join(timeout=40)
    elapsed = time.monotonic() - started
    stop.set()
    assert outcome, "a dripping Redis held the task past 40 s"
    assert isinstance(outcome[0], QmaticConfigError), outcome
    assert "does not answer" in str(outcome[0])
    assert elapsed < 6 * DEADLINE_S, elapsed  # the ping, repeated once: two deadlines


@pytest.mark.parametrize("fault", ["frozen", "stopped"])
def test_a_redis_lost_mid_run_fails_a_call_within_seconds(
    fault: str,
    sandbox: SandboxServer,
    tmp_path: Path,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A frozen Redis costs one command deadline (and redis-py's one repetition), not one per client
    attempt; a stopped one is retried with the client's backoff (to bridge a restart), then fails.
    The client's backoff pauses are recorded instead of slept and counted in the time taken."""
    monkeypatch.setattr(_redis, "SOCKET_TIMEOUT_S", DEADLINE_S)
    slept: list[float] = []
    client = build_client(redis_config(sandbox, tmp_path / "a", redis_server.conn_id), sleep=slept.append)
    client.list_branches()
    assert redis_server.process is not None
    if fault == "frozen":
        redis_server.process.send_signal(signal.SIGSTOP)
    else:
        redis_server.stop()
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            client.list_branches()
        except Exception as exc:
            outcome.append(exc)

    started = time.monotonic()
    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(timeout=60)
    elapsed = time.monotonic() - started
    if fault == "frozen":
        redis_server.process.send_signal(signal.SIGCONT)
    assert outcome, "the call still waits on Redis after 60 s"
    assert isinstance(outcome[0], QmaticCoordinationError), outcome
    assert "request budget" in str(outcome[0])  # what was waited for
    taken = elapsed + sum(slept)
    if fault == "frozen":
        # Two deadlines; the client's six attempts would take twelve, and backoff on top.
        assert isinstance(outcome[0], QmaticCoordinationTimeout), outcome
        assert slept == []
        assert taken < 6 * DEADLINE_S, taken
    else:
        assert len(slept) == DEFAULT_ATTEMPTS - 1  # repeated: a restarting Redis refuses too
        assert taken < 25, taken


def test_two_limits_on_one_tenant_run_its_budget_at_the_lowest_without_blaming_a_429(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    fast, slow = _limiter(redis_server, 600, burst=5), _limiter(redis_server, 60)
    fast.acquire()
    assert (fast.limit, fast.current_rate) == (600, 600)
    with caplog.at_level(logging.WARNING):
        slow.acquire()
        fast.acquire()
    # The tenant's one budget now runs at the lowest limit declared, and says so; no 429 happened,
    # so nothing reports a rate lowered below the limit in force.
    assert (fast.limit, fast.current_rate) == (60, 60)
    assert (slow.limit, slow.current_rate) == (60, 60)
    assert fast.stats()["rate_limited_events"] == 0
    assert "60" in caplog.text
    assert "lowest" in caplog.text
    # A real 429 still lowers the rate below the limit in force.
    fast.on_rate_limited(0.0)
    assert fast.current_rate == 30


class _Lines(logging.Logger):
    """A logger that keeps what the runner logs at INFO (Airflow's logging set-up, once loaded,
    may route records past pytest's capture)."""

    def __init__(self) -> None:
        super().__init__("test.progress", logging.INFO)
        self.lines: list[str] = []

    def info(self, msg: object, *args: object, **kwargs: object) -> None:
        self.lines.append(str(msg) % args if args else str(msg))


def test_the_progress_line_shows_the_tenants_lower_limit_and_blames_no_429(
    sandbox: SandboxServer, tmp_path: Path, redis_server: RedisServer
) -> None:
    """A bulk job at 600 a minute whose tenant budget runs at the 300 another connection declared:
    every progress line reads the limit in force again (300) and none blames a 429 that never came;
    a real 429 is still named."""
    from airflow_provider_qmatic.bulk.progress import ProgressReporter
    from airflow_provider_qmatic.bulk.runner import BulkRunner
    from tests.bulk.conftest import booking_rows

    request_budget(redis_config(sandbox, tmp_path / "other", redis_server.conn_id, rpm=300)).acquire()
    client = build_client(redis_config(sandbox, tmp_path / "job", redis_server.conn_id, rpm=600))
    logger = _Lines()
    result = BulkRunner(client, logger=logger, progress_every_fraction=0.01).book(booking_rows(sandbox, 4))
    first, *lines = [line for line in logger.lines if line.startswith("Qmatic bulk book: ")]
    assert "pace 300 requests/min" in first
    assert result.summary.succeeded == 4
    assert len(lines) >= 4, logger.lines
    assert all("(limit 300)" in line for line in lines if " rows (" in line), lines
    assert not any("429" in line for line in lines), lines
    assert sandbox.stats()["rate_limited"]["api"] == 0
    assert result.summary.limit_per_minute == 300

    client.limiter.on_rate_limited(0.0)  # a real one halves the rate in force, and the line says so
    line = ProgressReporter(action="book", total=4, requests=lambda: 9, limiter=client.limiter, logger=logger)
    assert "(limit 300, lowered to 150 after 429)" in line.line(4, {})


@pytest.mark.parametrize("damage", ["field-not-a-number", "wrong-type", "infinite"])
def test_a_damaged_budget_is_rebuilt_not_fatal(
    damage: str, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = _limiter(redis_server, 600, burst=5)
    limiter.acquire()
    raw = _raw(redis_server)
    [budget] = raw.keys("qmatic:budget:*")
    if damage == "field-not-a-number":
        raw.hset(budget, "tokens", "lots")
    elif damage == "wrong-type":
        raw.delete(budget)
        raw.set(budget, "oops")
    else:
        raw.hset(budget, "updated", "inf")
    with caplog.at_level(logging.WARNING):
        limiter.acquire()
        limiter.acquire()
    assert limiter.current_rate == 600
    assert raw.type(budget) == b"hash"
    assert "rebuilt" in caplog.text


def test_waiting_sensors_of_every_host_share_one_waiting_budget(
    sandbox: SandboxServer, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two hosts (own state directories) draw as fast as they can from the tenant's waiting budget
    in Redis (half of 1,200 a minute: about 10 a second, starting empty) for two seconds: together
    they get one bucket's worth, not one each, and each gets some."""
    from airflow_provider_qmatic.state import waiting_budget

    hosts = [
        waiting_budget(redis_config(sandbox, tmp_path / name, redis_server.conn_id, rpm=1200))
        for name in ("host-a", "host-b")
    ]
    assert hosts[0] is not hosts[1]
    taken = [0, 0]
    deadline = time.monotonic() + 2.0
    started = time.monotonic()
    turn = 0
    while time.monotonic() < deadline:
        turn += 1
        for number in (turn % 2, 1 - turn % 2):  # who asks first alternates, as on two real hosts
            if hosts[number].try_acquire() == 0:
                taken[number] += 1
        time.sleep(0.005)
    elapsed = time.monotonic() - started
    assert sum(taken) <= elapsed * 599 / 60 + 1  # one bucket: refill (600 - 1) a minute, from empty
    assert min(taken) >= 1  # both hosts were served
