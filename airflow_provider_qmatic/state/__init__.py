"""Where state lives between requests, threads, task processes and hosts, chosen in one place.

Three concerns, each a module with its interface and its backends (in the process, in files on the
host, in Redis for the cluster): :mod:`.tokens` (the token cache), :mod:`.budget` (the tenant's
request budget and the token endpoint's spacing) and :mod:`.journal` (a task instance's journal).
The connection's ``credential_cache`` decides where all of them live, and it is read here alone
(:func:`_home`): ``file`` (default) shares them through a private directory on the host, ``memory``
keeps them in the process (journals still go to files, since a retry must read them), ``redis``
shares them through the Redis of ``redis_conn_id`` (:mod:`._redis`), where a retry on another worker
reads the journal too. Nothing above this package knows which.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from airflow_provider_qmatic.state._files import default_cache_dir, flock_available

if TYPE_CHECKING:
    from airflow_provider_qmatic.config import ClientConfig
    from airflow_provider_qmatic.state._redis import RedisLink
    from airflow_provider_qmatic.state.budget import RateLimiter, Spacing
    from airflow_provider_qmatic.state.journal import Journal
    from airflow_provider_qmatic.state.tokens import TokenCache

_T = TypeVar("_T")
log = logging.getLogger(__name__)


def _home(config: ClientConfig) -> tuple[Path | None, RedisLink | None]:
    """Where the connection keeps its shared state: a host directory, Redis, or (neither) this
    process, as with ``file`` where ``flock`` does not exist (Windows)."""
    if config.credential_cache == "redis":
        from airflow_provider_qmatic.state._redis import redis_for

        return None, redis_for(config.redis_conn_id)
    if config.credential_cache != "file":
        return None, None
    if not flock_available():
        log.warning(
            "file locks (fcntl.flock) are unavailable on this system: Qmatic tokens and pacing are "
            "kept per process, in memory, not shared through %s",
            shared_dir(config),
        )
        return None, None
    return shared_dir(config), None


def shared_dir(config: ClientConfig) -> Path:
    """The host directory of the connection's files: ``credential_cache_dir``, or the default."""
    chosen = config.credential_cache_dir
    return Path(chosen).expanduser() if chosen else default_cache_dir()


def token_cache(config: ClientConfig) -> TokenCache:
    """The token cache the connection's ``credential_cache`` names: memory, host files or Redis."""
    from airflow_provider_qmatic.state.tokens import FileTokenCache, MemoryTokenCache, RedisTokenCache

    directory, redis = _home(config)
    if redis is not None:
        return RedisTokenCache(redis, key=config.derived_key("token-cache"))
    return MemoryTokenCache() if directory is None else FileTokenCache(directory)


def token_spacing(config: ClientConfig, interval: float) -> Spacing:
    """The token endpoint's one request per ``interval``, per Qmatic host (it counts per client
    address, not per tenant): for every client of this process (one :class:`Spacing` for all), and
    every process of the host (``file``) or of the cluster (``redis``)."""
    from airflow_provider_qmatic.state.budget import Spacing

    key = "token-" + _digest(config.base_url)
    directory, redis = _home(config)
    return _one_per_process(
        ("spacing", key, interval, directory, redis),
        lambda: Spacing(interval, key=key, shared_dir=directory, redis=redis),
    )


def request_budget(config: ClientConfig, *, bulk: bool = False) -> RateLimiter:
    """The tenant's request budget at ``requests_per_minute``.

    Qmatic counts requests per tenant, so the key is the host and tenant, not the client: with
    ``file`` every process of this user on the host draws from one budget, so mapped tasks and
    parallel bulk jobs together stay under the limit; with ``memory`` each process paces itself
    alone; with ``redis`` every process of every host shares one. A ``bulk`` budget leaves a reserve
    for single calls.
    """
    from airflow_provider_qmatic.state.budget import RateLimiter

    # A small burst lets a single booking (token, reserve, confirm) go without pauses while no
    # 60-second window can exceed the limit (the limiter refills at (limit - burst) / 60 per second).
    burst = max(1.0, min(5.0, config.requests_per_minute / 20))
    # Bulk leaves all but two of the burst to single calls: one spare keeps its refill from being
    # capped (and lost) while a bulk thread is late to wake. Below 60 requests a minute (a burst
    # under 3) that would leave nothing, and a single booking would queue behind every bulk thread
    # (minutes, at 30 a minute): there bulk leaves one request, or all the burst holds beyond one.
    reserve = max(burst - 2.0, min(burst - 1.0, 1.0)) if bulk else 0.0
    directory, redis = _home(config)
    return RateLimiter(
        config.requests_per_minute,
        burst=burst,
        reserve=reserve,
        key="rate-" + _digest(f"{config.base_url}|{config.tenant}"),
        shared_dir=directory,
        redis=redis,
    )


#: The part of the tenant's requests per minute that waiting sensors and triggers may spend together.
WAITING_SHARE = 0.5


def waiting_budget(config: ClientConfig, share: float = WAITING_SHARE) -> RateLimiter:
    """The budget every sensor and trigger waiting on the tenant draws from before each poll, at
    ``share`` of ``requests_per_minute``, kept where the tenant's budget is (this process, the
    host's files, or Redis for the cluster) under its own key.

    A poll still draws from the tenant's budget (:func:`request_budget`) too, so waiters together
    never take more than ``share`` of it, and bookings always find the rest. One limiter per
    tenant and share in a process: with ``memory`` that is what makes the triggers of one triggerer
    share it at all. The tenant has one such bucket whatever share each waiter names; in files each
    process refills it at its own share, in Redis the lowest share declared wins.
    """
    from airflow_provider_qmatic.state.budget import RateLimiter

    if not 0 < share <= 1:
        raise ValueError(f"share must be above 0 and at most 1, got {share}")
    # One bucket per tenant, whatever share each waiter was given: their sum must stay bounded.
    key = "wait-" + _digest(f"{config.base_url}|{config.tenant}")
    rate = config.requests_per_minute * share
    directory, redis = _home(config)
    where = (config.credential_cache, config.credential_cache_dir, config.redis_conn_id)
    return _one_per_process(
        ("waiting", key, rate, *where),
        lambda: RateLimiter(rate, key=key, shared_dir=directory, redis=redis),
    )


def task_journal(
    config: ClientConfig,
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int | None = None,
    journal_dir: str | os.PathLike[str] | None = None,
) -> Journal:
    """A task instance's journal through this connection, which its retries read: in Redis with
    ``redis`` (a retry may run on another worker), else a file in ``journal_dir``, or the default
    journal directory. Its name (:func:`~.journal.journal_name`) holds the connection's identity, so
    a journal another tenant or deployment wrote for the same task instance is never this one."""
    from airflow_provider_qmatic.state.journal import (
        FileJournal,
        RedisJournal,
        default_journal_dir,
        journal_name,
    )

    name = journal_name(config, dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index)
    _, redis = _home(config)
    if redis is not None:
        return RedisJournal(redis, name)
    directory = Path(journal_dir) if journal_dir else default_journal_dir(shared_dir(config))
    return FileJournal(directory / name)


_built: dict[tuple[object, ...], Any] = {}
_built_lock = threading.Lock()


def _one_per_process(key: tuple[object, ...], build: Callable[[], _T]) -> _T:
    """The process's one object for ``key``, built on first use."""
    with _built_lock:
        if key not in _built:
            _built[key] = build()
        return cast(_T, _built[key])


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]
