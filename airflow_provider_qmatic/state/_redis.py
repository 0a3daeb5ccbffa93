"""Cluster-wide state in Redis: one token fetch, one request budget and the bulk journals per tenant.

Selected by the connection extra ``credential_cache: redis``; ``redis_conn_id`` (default
``redis_default``) names an Airflow connection of the official Redis provider, whose
:class:`~airflow.providers.redis.hooks.redis.RedisHook` builds the client (install the extra
``airflow-provider-qmatic[redis]``). The three classes here implement the interfaces the host-local
versions implement, so nothing above them knows where the state lives:

- :class:`RedisTokenCache` (a :class:`~airflow_provider_qmatic.state.tokens.TokenCache`): the first
  process to miss takes a lock (``SET NX PX``), fetches and stores; the others poll until the token
  appears. The entry's TTL is the token's usable life (``expires_in`` minus the refresh margin), so it
  disappears before the token dies. Keys are the cache key (a SHA-256 of the identity, never the
  secret); values are sealed with a key derived from the client secret (Redis read access yields no
  token) and never logged. Token requests are also spaced cluster-wide (one per
  :data:`~airflow_provider_qmatic.client.auth.TOKEN_ENDPOINT_INTERVAL_S` per Qmatic host).
- :class:`RedisRateLimiter` (the :class:`~airflow_provider_qmatic.state.budget.RateLimiter` interface):
  the same token bucket, burst rule, 429 pause and AIMD as the host-local limiter, run by one Lua
  script inside Redis with Redis's own ``TIME``: atomic, no read-modify-write from a client, and the
  hosts' clocks never matter. A missing bucket (new, or lost in a Redis restart) starts **empty**,
  which keeps every 60-second window under the limit across the restart.
- :class:`RedisJournal` (a :class:`~airflow_provider_qmatic.state.journal.Journal`): the same JSON
  lines in a Redis list per task instance, guarded by a lease that is renewed while the attempt runs,
  so a retry on another worker reads what the killed attempt wrote.

Fair sharing: a limiter built with ``reserve`` (the bulk runner's) takes a request only if
``reserve`` more stay in the bucket; the single operators' limiter may take those. A single booking
therefore waits for at most its own requests' refill, never behind a bulk job's queue.

Faults: Redis unreachable when a client is built raises
:class:`~airflow_provider_qmatic.exceptions.QmaticConfigError` naming ``redis_conn_id`` and the address;
there is no fallback to host-local state, which would overshoot the tenant's limit. The database is
the one the connection names (URL path or extra ``db``). Each Redis command has a deadline of
:data:`SOCKET_TIMEOUT_S` for all its reads, however slowly they trickle, and one immediate
reconnect. Redis lost later raises
:class:`~airflow_provider_qmatic.exceptions.QmaticCoordinationError` before a request is sent: a
refused connection (Redis restarting) is repeated with the client's backoff, a Redis that did not
answer in time (:class:`~airflow_provider_qmatic.exceptions.QmaticCoordinationTimeout`) is not, so
the task fails retryably within seconds. Reports after an answer
arrived (success, 429) never turn that answer into an error. State that cannot be read (a damaged
budget, a key of the wrong type, a token entry that does not open, a lock without expiry) is rebuilt
or removed with a warning, never trusted and never fatal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from airflow_provider_qmatic.exceptions import (
    QmaticConfigError,
    QmaticCoordinationError,
    QmaticCoordinationTimeout,
    QmaticJournalBusyError,
)
from airflow_provider_qmatic.state.budget import BACKOFF_BASE_S, BACKOFF_CAP_S, DECREASE_FACTOR, MAX_PAUSE_S
from airflow_provider_qmatic.state.journal import RETENTION_DAYS, Journal, JournalState
from airflow_provider_qmatic.state.tokens import CachedToken

if TYPE_CHECKING:
    from redis import Redis

    from airflow_provider_qmatic.config import ClientConfig

log = logging.getLogger(__name__)

PREFIX = "qmatic"
# How long a process may hold the token lock; a fetch is bounded well below this (timeouts, retries).
TOKEN_LOCK_S = 60.0
TOKEN_POLL_S = 0.05
# A bucket left alone this long expires; it is then recreated empty (the conservative start).
BUCKET_IDLE_TTL_S = 86400
JOURNAL_LEASE_S = 30.0
# Bounded waits on Redis itself, so a partitioned Redis fails a call instead of hanging a task: the
# time one command (sending, every read of its answer, and a reconnect on its way) may take in all,
# however the answer trickles in. redis-py repeats a failed command once, at once, so one Redis call
# fails within twice this.
SOCKET_TIMEOUT_S = 5.0
# A connection of the tenant declaring a lower requests_per_minute clamps the tenant's one budget
# until it has not been seen for this long.
DECLARED_LIMIT_TTL_S = 600

_clients: dict[str, tuple[Redis, str]] = {}
_clients_lock = threading.Lock()


def redis_for(redis_conn_id: str) -> tuple[Redis, str]:
    """The process's Redis client for ``redis_conn_id`` and its ``host:port``, checked with ``PING``.

    Built once per process through the Redis provider's ``RedisHook``; raises QmaticConfigError
    naming the connection id and the address if the provider is missing or Redis does not answer.
    """
    with _clients_lock:
        found = _clients.get(redis_conn_id)
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
        _clients[redis_conn_id] = (client, address)
        return client, address


def _database(conn: Any, conn_id: str) -> int:
    """The database the Redis connection names, however it names it: the URL's path
    (``redis://host:6379/1``, Airflow's ``schema``), or the extra ``db`` (also what ``?db=1`` becomes).

    RedisHook reads only the extra, so ``redis://host:6379/1`` alone would write to database 0,
    beside whatever else lives there. Two different databases named at once is an error.
    """
    named: dict[str, object] = {}
    schema = (conn.schema or "").strip().strip("/")
    if schema:
        named["the URL path (schema)"] = schema
    extra_db = conn.extra_dejson.get("db")
    if extra_db is not None and str(extra_db).strip() != "":
        named["the extra `db`"] = extra_db
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


@contextmanager
def _redis_call(conn_id: str, address: str, what: str) -> Iterator[None]:
    """Turn a lost Redis into QmaticCoordinationError (retryable: nothing was sent to Qmatic)."""
    from redis.exceptions import RedisError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    try:
        yield
    except RedisTimeoutError:
        raise QmaticCoordinationTimeout(
            f"Redis of connection {conn_id!r} at {address} did not answer within {SOCKET_TIMEOUT_S:g} s "
            f"during {what}; nothing was sent to Qmatic, the task may be retried once Redis answers"
        ) from None
    except RedisError as exc:
        raise QmaticCoordinationError(
            f"Redis of connection {conn_id!r} at {address} failed during {what} ({type(exc).__name__}); "
            "nothing was sent to Qmatic, the task may be retried once Redis is back"
        ) from None


def _digest(*parts: str) -> str:
    return hashlib.sha256(json.dumps(["qmatic-redis-v1", *parts]).encode()).hexdigest()[:32]


# -- tokens --------------------------------------------------------------------------------------

# KEYS[1] lock; ARGV[1] owner. Deletes the lock only if this process still owns it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS[1] token entry; ARGV[1] the sealed value read. Deletes the entry only if it still holds that
# value (the dead token), never a newer one stored meanwhile.
_DELETE_IF = """
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# KEYS[1] token lock. This provider always takes the lock with an expiry (SET NX PX); a key there
# without one was left by something else and would be waited on for ever: it is removed.
_CLEAR_IMMORTAL = """
if redis.call('PTTL', KEYS[1]) == -1 then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS[1] next free moment of the token endpoint; ARGV[1] 'wait' (book the next moment, ARGV[2]
# the interval) or 'hold' (nobody before now + ARGV[2] s: a 429). Returns the seconds to wait (as
# text: Lua numbers come back from Redis as integers).
_SPACE = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' and kind ~= 'string' then redis.call('DEL', KEYS[1]) end
-- Damaged by hand (not a number, NaN, far future): rebuilt as "free now".
local next_at = tonumber(redis.call('GET', KEYS[1])) or 0
if next_at ~= next_at or next_at > now + {MAX_PAUSE_S} then next_at = now end
local start, after
if ARGV[1] == 'hold' then
  start, after = now, math.max(next_at, now + tonumber(ARGV[2]))
else
  start = math.max(now, next_at)
  after = start + tonumber(ARGV[2])
end
redis.call('SET', KEYS[1], tostring(after), 'PX', math.ceil((after - now) * 1000) + 1000)
return tostring(start - now)
"""


class RedisSpacing:
    """The token endpoint's one request per ``interval``, kept by every process on every host: the
    :class:`~airflow_provider_qmatic.state.budget.Spacing` interface, in Redis."""

    def __init__(self, client: Redis, *, key: str, interval: float, conn_id: str, address: str) -> None:
        self.interval = interval
        self._key = f"{PREFIX}:tokspace:{{{key}}}"
        self._conn_id = conn_id
        self._address = address
        self._script = client.register_script(_SPACE)

    def __repr__(self) -> str:
        return f"RedisSpacing(interval={self.interval:g}, address={self._address!r})"

    def wait(self, sleep: Callable[[float], None] = time.sleep) -> float:
        """Book the next free moment cluster-wide and sleep until it; returns the seconds slept.
        Raises QmaticCoordinationError if Redis is lost (nothing is sent then)."""
        with _redis_call(self._conn_id, self._address, "the token endpoint's spacing"):
            delay = float(self._script(keys=[self._key], args=["wait", self.interval]))
        if delay > 0:
            sleep(delay)
        return delay

    def hold_off(self, seconds: float) -> None:
        """Nobody on any host starts before ``seconds`` from now (the endpoint answered 429)."""
        pause = min(max(0.0, seconds), MAX_PAUSE_S)
        try:  # an answer has arrived; losing Redis now must not replace it with another error
            with _redis_call(self._conn_id, self._address, "the token endpoint's spacing"):
                self._script(keys=[self._key], args=["hold", pause])
        except QmaticCoordinationError as exc:
            log.warning("Qmatic token endpoint spacing: %s", exc.message)


class RedisTokenCache:
    """Tokens shared by every process on every host (see the module documentation), sealed.

    An entry holds the token encrypted with AES-GCM under a key derived (HKDF-SHA256) from the
    client secret, with the entry's name (the cache key: a hash of Qmatic host, tenant, client id,
    scopes and secret fingerprint) as associated data. Whoever can read Redis but does not hold the
    client secret learns no token; an entry copied under another identity's name does not open
    there. An entry that does not open, does not parse, or is not a Redis string is a miss: a
    token is fetched and stored over it, never an error.

    :param client: a Redis client (from :func:`redis_for`).
    :param secret: the client secret of the connection whose tokens this cache holds.
    """

    def __init__(
        self,
        client: Redis,
        *,
        secret: str,
        conn_id: str,
        address: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        self._redis = client
        self._conn_id = conn_id
        self._address = address
        self._sleep = sleep
        key = HKDF(hashes.SHA256(), 32, salt=_SEAL_SALT, info=b"token-cache").derive(secret.encode())
        self._aead = AESGCM(key)
        self._release = client.register_script(_RELEASE)
        self._delete_if = client.register_script(_DELETE_IF)
        self._clear_immortal = client.register_script(_CLEAR_IMMORTAL)
        self._thread_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __repr__(self) -> str:
        return f"RedisTokenCache(redis_conn_id={self._conn_id!r}, address={self._address!r})"

    def get_or_fetch(
        self, key: str, fetch: Callable[[], CachedToken], *, min_ttl: float
    ) -> tuple[CachedToken, bool]:
        """See :meth:`~airflow_provider_qmatic.state.tokens.TokenCache.get_or_fetch`.

        Another process's fetch is waited for at most :data:`TOKEN_LOCK_S` (its lock expires then
        anyway); after that this process fetches without the lock, which costs at most one more
        token request.
        """
        entry, lock = f"{PREFIX}:token:{{{key}}}", f"{PREFIX}:token:{{{key}}}:lock"
        owner = secrets.token_hex(16)
        with self._thread_lock(key), _redis_call(self._conn_id, self._address, "the token cache look-up"):
            deadline = time.monotonic() + TOKEN_LOCK_S
            locked = False
            while True:
                cached, _ = self._load(entry)
                if cached is not None and cached.ttl() > min_ttl:
                    return cached, False
                if self._redis.set(lock, owner, nx=True, px=int(TOKEN_LOCK_S * 1000)):
                    locked = True
                    break
                if self._clear_immortal(keys=[lock]):
                    log.warning(
                        "removed a Qmatic token lock in Redis at %s that had no expiry (not set by this "
                        "provider); fetching the token",
                        self._address,
                    )
                    continue
                if time.monotonic() >= deadline:
                    log.warning(
                        "waited %.0f s for another process's Qmatic token fetch (its lock in Redis at %s); "
                        "fetching without it",
                        TOKEN_LOCK_S,
                        self._address,
                    )
                    break
                self._sleep(TOKEN_POLL_S)  # another process is fetching: wait for what it stores
            try:
                cached, _ = self._load(entry)  # stored between our miss and our lock
                if cached is not None and cached.ttl() > min_ttl:
                    return cached, False
                token = fetch()  # spaced cluster-wide by the token provider's RedisSpacing
                ttl_ms = int(token.ttl() * 1000)
                if ttl_ms > 0:
                    self._redis.set(entry, self._seal(entry, token), px=ttl_ms)
                return token, True
            finally:
                if locked:
                    self._release(keys=[lock], args=[owner])

    def invalidate(self, key: str, access_token: str) -> None:
        """See :meth:`~airflow_provider_qmatic.state.tokens.TokenCache.invalidate`."""
        entry = f"{PREFIX}:token:{{{key}}}"
        with _redis_call(self._conn_id, self._address, "dropping a refused token"):
            cached, raw = self._load(entry)
            if cached is not None and raw is not None and cached.access_token == access_token:
                self._delete_if(keys=[entry], args=[raw])

    def _load(self, entry: str) -> tuple[CachedToken | None, bytes | None]:
        """The token in ``entry`` and its sealed value; ``(None, None)`` for a miss, whatever the
        reason (absent, not a string, not sealed by this connection's secret for this entry)."""
        from redis.exceptions import ResponseError

        try:
            raw = self._redis.get(entry)
        except ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            log.warning("ignoring a Qmatic token entry in Redis at %s that is not a string", self._address)
            return None, None
        if raw is None:
            return None, None
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        token = self._open(entry, data)
        if token is None:
            log.warning(
                "ignoring a Qmatic token entry in Redis at %s that this connection cannot open (damaged, "
                "planted, or sealed for another identity); fetching a new token",
                self._address,
            )
        return token, data

    def _seal(self, entry: str, token: CachedToken) -> bytes:
        nonce = secrets.token_bytes(12)
        plain = json.dumps({"access_token": token.access_token, "expires_at": token.expires_at}).encode()
        sealed = self._aead.encrypt(nonce, plain, _SEAL_VERSION + entry.encode())
        return _SEAL_VERSION + base64.b64encode(nonce + sealed)

    def _open(self, entry: str, raw: bytes) -> CachedToken | None:
        from cryptography.exceptions import InvalidTag

        if not raw.startswith(_SEAL_VERSION):
            return None
        try:
            blob = base64.b64decode(raw[len(_SEAL_VERSION) :], validate=True)
            plain = self._aead.decrypt(blob[:12], blob[12:], _SEAL_VERSION + entry.encode())
        except (InvalidTag, ValueError):
            return None
        return _parse_token(plain)

    def _thread_lock(self, key: str) -> threading.Lock:
        # Threads of this process queue here instead of all polling Redis.
        with self._guard:
            return self._thread_locks.setdefault(key, threading.Lock())


# The sealed format's version, also part of the associated data, and the key derivation's salt.
_SEAL_VERSION = b"qm2:"
_SEAL_SALT = b"airflow-provider-qmatic/redis-token-cache/v2"


def _parse_token(raw: bytes) -> CachedToken | None:
    try:
        data = json.loads(raw)
        token, expires_at = data["access_token"], float(data["expires_at"])
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(token, str) or not token or not math.isfinite(expires_at):
        return None
    return CachedToken(access_token=token, expires_at=expires_at)


# -- the request budget --------------------------------------------------------------------------

# The host-local RateLimiter's bucket, run inside Redis. KEYS[1]: the tenant's bucket (a hash).
# ARGV: op (take | 429 | ok | rate), this connection's limit, burst, lowest level (a fraction of the
# limit), n, reserve, retry_after (negative: none), jitter in [0, 1), recovery_after, recovery step
# (a fraction of the limit), idle TTL (ms).
#
# The rate in force is ``level`` (1 until a 429 cuts it) times the limit in force: the lowest
# requests_per_minute a connection of the tenant declared in the last DECLARED_LIMIT_TTL_S, since
# Qmatic counts one budget per tenant, whatever each connection believes.
# Returns {wait seconds, rate in force, limit in force, 1 if the state was unreadable and rebuilt}.
_BUCKET = f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local op = ARGV[1]
local own, burst, minlevel = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local function num(v)
  local x = tonumber(v)
  if x == nil or x ~= x or x == math.huge or x == -math.huge then return nil end
  return x
end
local rebuilt = 0
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' and kind ~= 'hash' then
  redis.call('DEL', KEYS[1])
  rebuilt = 1
end
local names = {{'tokens', 'updated', 'level', 'quiet', 'paused', 'c429', 'low', 'low_at'}}
local raw = redis.call('HMGET', KEYS[1], unpack(names))
local v, present, valid = {{}}, false, true
for i = 1, #names do
  if raw[i] then present = true end
  v[i] = num(raw[i])
  if v[i] == nil then valid = false end
end
local tokens, updated, level, quiet, paused, c429, low, low_at
if present and valid then
  tokens, updated, level, quiet, paused, c429, low, low_at = v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8]
else
  if present then rebuilt = 1 end
  -- New, lost in a Redis restart, or unreadable: start empty, so no window spanning it can overshoot.
  tokens, updated, level, quiet, paused, c429, low, low_at = 0, now, 1, now, 0, 0, own, now
end
if updated > now then updated = now end
if quiet > now then quiet = now end
if low <= 0 or own <= low or now - low_at > {DECLARED_LIMIT_TTL_S} then low, low_at = own, now end
local limit = math.min(own, low)
local cap = math.min(burst, math.max(1, limit / 2))
local frac = math.max(limit - cap, limit / 2) / limit
level = math.min(math.max(level, minlevel), 1)
tokens = math.min(math.max(tokens, -1), cap)
c429 = math.min(math.max(c429, 0), 64)
if paused > now + {MAX_PAUSE_S} then paused = now + {MAX_PAUSE_S} end
local start = math.max(updated, paused)
if now > start then tokens = math.min(cap, tokens + (now - start) * level * limit * frac / 60) end
updated = now
local wait = 0
if op == 'take' then
  local n = math.min(tonumber(ARGV[5]), cap)
  local reserve = math.max(0, math.min(tonumber(ARGV[6]), cap - n))
  if paused - now > 1e-6 then
    wait = paused - now
  else
    local short = n + reserve - tokens
    if short > 1e-6 then wait = short / (level * limit * frac / 60) else tokens = tokens - n end
  end
elseif op == '429' then
  if paused <= now then
    c429 = c429 + 1
    level = math.max(minlevel, level * {DECREASE_FACTOR})
  end
  local delay = tonumber(ARGV[7])
  if delay < 0 then
    delay = tonumber(ARGV[8]) * math.min({BACKOFF_CAP_S}, {BACKOFF_BASE_S} * 2 ^ math.min(c429 - 1, 32))
  end
  delay = math.min(delay, {MAX_PAUSE_S})
  tokens = 0
  quiet = now
  paused = math.max(now + delay, paused)
elseif op == 'ok' then
  c429 = 0
  if level < 1 then
    local periods = math.floor((now - quiet) / tonumber(ARGV[9]))
    if periods >= 1 then
      level = math.min(1, level + periods * tonumber(ARGV[10]))
      quiet = quiet + periods * tonumber(ARGV[9])
    end
  end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'updated', tostring(updated),
  'level', tostring(level), 'quiet', tostring(quiet), 'paused', tostring(paused), 'c429', tostring(c429),
  'low', tostring(low), 'low_at', tostring(low_at))
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[11]))
return {{tostring(wait), tostring(level * limit), tostring(limit), rebuilt}}
"""


class RedisRateLimiter:
    """The tenant's request budget in Redis, shared by every process on every host.

    Same parameters and semantics as :class:`~airflow_provider_qmatic.state.budget.RateLimiter` (burst
    rule, 429 pause with full-jitter backoff or ``Retry-After``, multiplicative cut, additive
    recovery), plus ``reserve``: requests this limiter leaves in the bucket for callers without a
    reserve (see the module documentation).

    Two connections of one tenant that declare different ``requests_per_minute`` still share the
    tenant's one budget (Qmatic counts per tenant): it runs at the lowest limit declared within
    :data:`DECLARED_LIMIT_TTL_S`, :attr:`limit` says so, and a warning names both limits. Only a
    429 lowers :attr:`current_rate` below :attr:`limit`. A budget that cannot be read (a field
    changed by hand, a key of another type) is rebuilt empty, with a warning, not trusted or fatal.
    """

    def __init__(
        self,
        client: Redis,
        requests_per_minute: float,
        *,
        key: str,
        conn_id: str,
        address: str,
        burst: float = 1.0,
        reserve: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        min_fraction: float = 0.1,
        recovery_after: float = 30.0,
        recovery_step: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        limit = float(requests_per_minute)
        if not (math.isfinite(limit) and limit > 0):
            raise ValueError("requests_per_minute must be a positive number")
        if not 1.0 <= burst <= max(1.0, limit / 2):
            raise ValueError(f"burst must be between 1 and half of requests_per_minute ({limit:g})")
        if not 0.0 <= reserve <= burst - 1.0:
            raise ValueError(f"reserve must be between 0 and burst - 1 ({burst - 1:g})")
        self._redis = client
        self._limit = limit
        self._burst = float(burst)
        self._reserve = float(reserve)
        self._min_level = min_fraction
        self._recovery = (recovery_after, recovery_step)
        self._key = f"{PREFIX}:budget:{{{key}}}"
        self._conn_id = conn_id
        self._address = address
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._script = client.register_script(_BUCKET)
        self._lock = threading.Lock()
        self._rate = limit  # the nominal rate last seen in Redis
        self._in_force = limit  # the tenant's limit last seen in Redis (the lowest declared)
        self._acquired = 0.0
        self._waited_s = 0.0
        self._rate_limited_events = 0

    def __repr__(self) -> str:
        return f"RedisRateLimiter(limit={self._limit:g}, reserve={self._reserve:g}, at={self._address!r})"

    @property
    def limit(self) -> float:
        """The limit in force for the tenant's budget, requests per minute, as last seen: this
        connection's, or a lower one another connection of the tenant declares."""
        return self._in_force

    @property
    def reserve(self) -> float:
        """Requests this limiter leaves in the bucket for callers without a reserve."""
        return self._reserve

    @property
    def current_rate(self) -> float:
        """The nominal rate now in force cluster-wide (the last value seen if Redis is unreachable)."""
        with suppress(QmaticCoordinationError):
            self._run("rate")
        return self._rate

    def acquire(self, n: float = 1.0) -> float:
        """Block until n requests may be sent; returns seconds waited. Raises
        QmaticCoordinationError if Redis is lost (nothing is sent then)."""
        if not 0 < n <= self._burst - self._reserve:
            raise ValueError("n must be greater than 0 and at most the burst less the reserve")
        start = time.monotonic()
        while True:
            wait = self._run("take", n=n)
            if wait <= 0:
                break
            self._sleep(wait)
        waited = time.monotonic() - start
        with self._lock:
            self._acquired += n
            self._waited_s += waited
        return waited

    def on_rate_limited(self, retry_after: float | None = None) -> None:
        """A 429: the whole cluster pauses, the bucket empties and the rate halves (see RateLimiter)."""
        with self._lock:
            self._rate_limited_events += 1
        self._report("429", retry_after=-1.0 if retry_after is None else max(0.0, retry_after))

    def on_success(self) -> None:
        """A request got through: the cluster's rate climbs back after quiet periods."""
        if self._rate < self._in_force:
            self._report("ok")

    def stats(self) -> dict[str, float]:
        """This process's counters, and the cluster's current rate."""
        rate = self.current_rate
        with self._lock:
            return {
                "acquired": self._acquired,
                "waited_s": self._waited_s,
                "rate_limited_events": float(self._rate_limited_events),
                "current_rate": rate,
            }

    def _report(self, op: str, *, retry_after: float = -1.0) -> None:
        # An answer has arrived; losing Redis now must not turn it into an error.
        try:
            self._run(op, retry_after=retry_after)
        except QmaticCoordinationError as exc:
            log.warning("Qmatic request budget: %s", exc.message)

    def _run(self, op: str, *, n: float = 1.0, retry_after: float = -1.0) -> float:
        recovery_after, recovery_step = self._recovery
        with _redis_call(self._conn_id, self._address, "the request budget"):
            wait, rate, in_force, rebuilt = self._script(
                keys=[self._key],
                args=[
                    op,
                    self._limit,
                    self._burst,
                    self._min_level,
                    n,
                    self._reserve,
                    retry_after,
                    self._rng.random(),
                    recovery_after,
                    recovery_step,
                    BUCKET_IDLE_TTL_S * 1000,
                ],
            )
        if int(rebuilt):
            log.warning(
                "Qmatic request budget in Redis at %s could not be read (changed by hand, or of another "
                "version); rebuilt empty",
                self._address,
            )
        previous, self._in_force, self._rate = self._in_force, float(in_force), float(rate)
        if self._in_force < self._limit and self._in_force != previous:
            log.warning(
                "Qmatic request budget: another connection of this tenant declares %g requests a minute, "
                "this one %g; the tenant's one budget runs at the lowest limit declared, %g",
                self._in_force,
                self._limit,
                self._in_force,
            )
        return float(wait)


# -- the bulk journal ----------------------------------------------------------------------------

# KEYS[1] lease, KEYS[2] list; ARGV[1] owner, ARGV[2] line, ARGV[3] list TTL (ms). Appends only while
# this attempt holds the lease, so an attempt that lost it can never write over its successor.
_APPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
return 1
"""
# KEYS[1] lease; ARGV[1] owner, ARGV[2] lease (ms).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2])) end
return 0
"""


class RedisJournal(Journal):
    """A bulk journal in a Redis list, readable by a retry on any worker.

    The lines and their meaning are those of :class:`~airflow_provider_qmatic.state.journal.Journal`;
    only the storage differs. A lease (``SET NX PX``, renewed by a thread every third of its life)
    stands for the file lock: a second attempt of the same task instance while the first still runs
    fails fast and retryably; a killed attempt's lease runs out within :data:`JOURNAL_LEASE_S`.
    Every append is checked against the lease inside Redis. The list expires
    :data:`~airflow_provider_qmatic.state.journal.RETENTION_DAYS` after its last append.
    """

    def __init__(self, client: Redis, name: str, *, conn_id: str, address: str) -> None:
        self.name = name
        self._redis = client
        self._list = f"{PREFIX}:journal:{{{_digest(name)}}}"
        self._lease = f"{self._list}:lease"
        self._conn_id = conn_id
        self._address = address
        self._owner = secrets.token_hex(16)
        self._append_script = client.register_script(_APPEND)
        self._renew_script = client.register_script(_RENEW)
        self._release_script = client.register_script(_RELEASE)
        self._open = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"RedisJournal({self.name!r}, address={self._address!r})"

    def open(self) -> JournalState:
        """Take the lease and read what earlier attempts wrote."""
        with _redis_call(self._conn_id, self._address, "opening the bulk journal"):
            if not self._redis.set(self._lease, self._owner, nx=True, px=int(JOURNAL_LEASE_S * 1000)):
                raise QmaticJournalBusyError(
                    f"the bulk journal {self.name} in Redis is held by another attempt of this task that "
                    f"is still running (its lease ends within {JOURNAL_LEASE_S:.0f} s of its death)"
                )
            lines = self._redis.lrange(self._list, 0, -1)
        self._open = True
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="qmatic-journal-lease", daemon=True)
        self._renewer.start()
        return self._state(enumerate(lines, 1))

    def close(self) -> None:
        with self._lock:
            if not self._open:
                return
            self._open = False
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            with _redis_call(self._conn_id, self._address, "closing the bulk journal"):
                self._release_script(keys=[self._lease], args=[self._owner])
        except QmaticCoordinationError as exc:  # the lease then runs out by itself
            log.warning("Qmatic bulk journal: %s", exc.message)

    def _label(self) -> str:
        return self.name

    def _append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, separators=(",", ":"))
        with _redis_call(self._conn_id, self._address, "writing the bulk journal"):
            written = self._append_script(
                keys=[self._lease, self._list],
                args=[self._owner, line, RETENTION_DAYS * 86400 * 1000],
            )
        if not written:
            raise QmaticJournalBusyError(
                f"this attempt lost the lease on the bulk journal {self.name} in Redis; stopping so that "
                "only one attempt writes it"
            )

    def _renew(self) -> None:
        while not self._stop.wait(JOURNAL_LEASE_S / 3):
            try:
                with _redis_call(self._conn_id, self._address, "renewing the bulk journal lease"):
                    self._renew_script(keys=[self._lease], args=[self._owner, int(JOURNAL_LEASE_S * 1000)])
            except QmaticCoordinationError as exc:  # the next append reports it
                log.warning("Qmatic bulk journal: %s", exc.message)


# -- building them from a connection -------------------------------------------------------------


def budget_key(config: ClientConfig) -> str:
    """One budget per Qmatic host and tenant (Qmatic counts per tenant)."""
    return _digest("budget", config.base_url, config.tenant)


def token_cache(config: ClientConfig) -> RedisTokenCache:
    client, address = redis_for(config.redis_conn_id)
    return RedisTokenCache(client, secret=config.client_secret, conn_id=config.redis_conn_id, address=address)


def token_spacing(config: ClientConfig, interval: float) -> RedisSpacing:
    """One spacing per Qmatic host (its token endpoint counts per client address, not per tenant)."""
    client, address = redis_for(config.redis_conn_id)
    return RedisSpacing(
        client,
        key=_digest("token-endpoint", config.base_url),
        interval=interval,
        conn_id=config.redis_conn_id,
        address=address,
    )


def rate_limiter(config: ClientConfig, *, burst: float, reserve: float) -> RedisRateLimiter:
    client, address = redis_for(config.redis_conn_id)
    return RedisRateLimiter(
        client,
        config.requests_per_minute,
        key=budget_key(config),
        conn_id=config.redis_conn_id,
        address=address,
        burst=burst,
        reserve=reserve,
    )


def journal(config: ClientConfig, name: str) -> RedisJournal:
    client, address = redis_for(config.redis_conn_id)
    return RedisJournal(client, name, conn_id=config.redis_conn_id, address=address)
