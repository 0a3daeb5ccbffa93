"""The one small Redis helper every cluster-wide state shares (``credential_cache: redis``).

``redis_conn_id`` (default ``redis_default``) names an Airflow connection of the official Redis
provider, whose :class:`~airflow.providers.redis.hooks.redis.RedisHook` builds the client (install
the extra ``airflow-provider-qmatic[redis]``). :func:`redis_for` gives the process's one
:class:`RedisLink` per connection: the client, and the ``call`` that turns a lost Redis into the
provider's error. The token cache (:mod:`.tokens`), the request budget and the token endpoint's
spacing (:mod:`.budget`) and the journals (:mod:`.journal`) each keep their Redis backend beside
their other backends, and build their keys with :meth:`RedisLink.key`.

Faults: a Redis that does not answer when the link is built raises
:class:`~airflow_provider_qmatic.exceptions.QmaticConfigError` naming ``redis_conn_id`` and the
address; there is no fallback to host-local state, which would overshoot the tenant's limit. Lost
later, it raises :class:`~airflow_provider_qmatic.exceptions.QmaticCoordinationError` before a
request is sent (which of those the client repeats: :mod:`airflow_provider_qmatic.client.retry`);
each command has a deadline however slowly its answer trickles (:func:`_bound`). Reports after an
answer arrived (success, 429) never turn that answer into an error. State that cannot be read (a
damaged budget, a key of the wrong type, a token entry that does not open, a lock without expiry)
is rebuilt or removed with a warning, never trusted and never fatal.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_qmatic.exceptions import (
    QmaticConfigError,
    QmaticCoordinationError,
    QmaticCoordinationTimeout,
)

if TYPE_CHECKING:
    from redis import Redis

PREFIX = "qmatic"
# Bounded waits on Redis itself, so a partitioned Redis fails a call instead of hanging a task: the
# time one command (sending, every read of its answer, and a reconnect on its way) may take in all,
# however the answer trickles in. redis-py repeats a failed command once, at once, so one Redis call
# fails within twice this.
SOCKET_TIMEOUT_S = 5.0
# KEYS[1] a lock or lease; ARGV[1] owner. Deletes it only if this process still owns it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_links: dict[str, RedisLink] = {}
_links_lock = threading.Lock()


@dataclass(frozen=True)
class RedisLink:
    """A Redis client, the Airflow connection it came from and its address (for messages)."""

    client: Redis
    conn_id: str
    address: str

    def __repr__(self) -> str:
        return f"RedisLink(redis_conn_id={self.conn_id!r}, address={self.address!r})"

    @contextmanager
    def call(self, what: str) -> Iterator[None]:
        """Turn a lost Redis into QmaticCoordinationError (retryable: nothing was sent to Qmatic)."""
        from redis.exceptions import RedisError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        try:
            yield
        except RedisTimeoutError:
            raise QmaticCoordinationTimeout(
                f"Redis of connection {self.conn_id!r} at {self.address} did not answer within "
                f"{SOCKET_TIMEOUT_S:g} s during {what}; nothing was sent to Qmatic, the task may be "
                "retried once Redis answers"
            ) from None
        except RedisError as exc:
            raise QmaticCoordinationError(
                f"Redis of connection {self.conn_id!r} at {self.address} failed during {what} "
                f"({type(exc).__name__}); nothing was sent to Qmatic, the task may be retried once "
                "Redis is back"
            ) from None

    @staticmethod
    def key(kind: str, name: str) -> str:
        """``qmatic:<kind>:{<name>}``: the braces keep a key's companions in one Redis Cluster slot."""
        return f"{PREFIX}:{kind}:{{{name}}}"


def digest(*parts: str) -> str:
    """A short one-way name for ``parts`` (identities, URLs), safe in a key and revealing nothing."""
    return hashlib.sha256(json.dumps(["qmatic-redis-v1", *parts]).encode()).hexdigest()[:32]


def redis_for(redis_conn_id: str) -> RedisLink:
    """The process's :class:`RedisLink` for ``redis_conn_id``, checked with ``PING``.

    Built once per process through the Redis provider's ``RedisHook``; raises QmaticConfigError
    naming the connection id and the address if the provider is missing or Redis does not answer.
    """
    with _links_lock:
        found = _links.get(redis_conn_id)
        if found is not None:
            return found
        try:
            from airflow.providers.redis.hooks.redis import RedisHook
            from redis.exceptions import RedisError
        except ImportError:
            raise QmaticConfigError(
                "credential_cache 'redis' needs the Redis provider: install "
                "airflow-provider-qmatic[redis] (apache-airflow-providers-redis) on every worker",
                field="credential_cache",
            ) from None
        hook = RedisHook(redis_conn_id=redis_conn_id)
        try:
            client = hook.get_conn()
            db = _database(hook.get_connection(redis_conn_id), redis_conn_id)
        except QmaticConfigError:
            raise
        except Exception as exc:  # the connection is missing or malformed: Airflow's own error types
            raise QmaticConfigError(
                f"credential_cache is 'redis' but the Redis connection {redis_conn_id!r} cannot be "
                f"used ({type(exc).__name__}): create it, or set the `redis_conn_id` extra",
                field="redis_conn_id",
            ) from None
        address = f"{hook.host or 'localhost'}:{hook.port or 6379}/{db}"
        # (A RedisCluster client has no single pool; its nodes keep redis-py's defaults, and it has
        # only database 0, which RedisHook checks.)
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            _bound(pool, db)
        try:
            client.ping()
        except RedisError as exc:
            raise QmaticConfigError(
                f"credential_cache is 'redis' but Redis of connection {redis_conn_id!r} at {address} does "
                f"not answer ({type(exc).__name__}); start it or fix the `redis_conn_id` extra. There is "
                "no fallback to host-local state: it would overshoot the tenant's limit",
                field="redis_conn_id",
            ) from None
        link = _links[redis_conn_id] = RedisLink(client, redis_conn_id, address)
        return link


def _database(conn: Any, conn_id: str) -> int:
    """The database the Redis connection names, however it names it: the URL's path
    (``redis://host:6379/1``, Airflow's ``schema``), or the extra ``db`` (also what ``?db=1`` becomes).

    RedisHook reads only the extra, so ``redis://host:6379/1`` alone would write to database 0,
    beside whatever else lives there. Two different databases named at once is an error.
    """
    given = {
        "the URL path (schema)": (conn.schema or "").strip("/ "),
        "the extra `db`": conn.extra_dejson.get("db"),
    }
    named = {where: value for where, value in given.items() if value is not None and str(value).strip()}
    values: set[int] = set()
    for where, value in named.items():
        text = str(value).strip()
        if isinstance(value, bool) or not text.isdigit():
            raise QmaticConfigError(
                f"the Redis connection {conn_id!r} names database {text[:20]!r} in {where}: a database "
                "is a number (redis://host:6379/1, or the extra db: 1)",
                field="redis_conn_id",
            )
        values.add(int(text))
    if len(values) > 1:
        raise QmaticConfigError(
            f"the Redis connection {conn_id!r} names two databases "
            f"({' and '.join(map(str, sorted(values)))}) in {' and '.join(named)}: keep one",
            field="redis_conn_id",
        )
    return values.pop() if values else 0


def _bound(pool: Any, db: int) -> None:
    """Point ``pool``'s future connections at database ``db`` and give each command a deadline.

    RedisHook sets no timeouts, and redis-py's timeouts are per socket read, so a Redis that answers
    a byte a second would hold a task for ever; and redis-py repeats a failed command three times
    with growing pauses. Here each command gets :data:`SOCKET_TIMEOUT_S` in all and one immediate
    repetition (a pooled connection Redis closed while idle is reopened and the command sent again).
    """
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    kwargs = pool.connection_kwargs
    kwargs["db"] = db
    for name in ("socket_timeout", "socket_connect_timeout"):
        if kwargs.get(name) is None or kwargs[name] > SOCKET_TIMEOUT_S:
            kwargs[name] = SOCKET_TIMEOUT_S
    kwargs["retry"] = Retry(NoBackoff(), 1)
    base = pool.connection_class
    pool.connection_class = type(f"Bounded{base.__name__}", (_CommandDeadline, base), {})


class _CommandDeadline:
    """Mixed into a redis-py ``Connection`` class: one deadline per command, for every read of it.

    The deadline starts when a command is sent (commands sent on the way, the connection's own
    handshake, share it) and every socket operation until the next command gets only what is left.
    """

    _deadline: float | None = None
    _sending = False

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if self._sending:  # the handshake or health check of a connection opened for this command
            super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        self._deadline = time.monotonic() + SOCKET_TIMEOUT_S
        self._sending = True
        try:
            super().send_packed_command(command, check_health)  # type: ignore[misc]
        finally:
            self._sending = False

    def _connect(self) -> Any:
        return _DeadlineSocket(super()._connect(), self)  # type: ignore[misc]


class _DeadlineSocket:
    """A connected socket whose every send and receive is cut to the time left of its
    connection's command deadline; everything else is the socket's own."""

    def __init__(self, sock: socket.socket, owner: _CommandDeadline) -> None:
        self._sock = sock
        self._owner = owner
        self._timeout = sock.gettimeout()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def settimeout(self, value: float | None) -> None:
        self._timeout = value
        self._sock.settimeout(value)

    def gettimeout(self) -> float | None:
        return self._timeout

    def _bound(self) -> None:
        deadline = self._owner._deadline
        if deadline is None:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the Redis command took longer than its deadline")
        self._sock.settimeout(left if self._timeout is None else min(left, self._timeout))

    def recv(self, *args: Any) -> bytes:
        self._bound()
        return self._sock.recv(*args)

    def recv_into(self, *args: Any) -> int:
        self._bound()
        return self._sock.recv_into(*args)

    def sendall(self, *args: Any) -> None:
        self._bound()
        self._sock.sendall(*args)
