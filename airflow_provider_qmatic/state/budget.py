"""Pacing to the tenant's request limit, slowing down when Qmatic answers 429.

Qmatic allows 100 requests per minute per tenant and does not say how it counts them; a 429 may
come without ``Retry-After``. The :class:`RateLimiter` here paces so that no 60-second window, however
the server aligns it, ever holds more than the limit, and reacts to a 429 the way TCP reacts to
loss: a pause, then a multiplicative cut of the rate, then a slow additive climb back (AIMD).

The burst rule
--------------
A token bucket of capacity ``B`` refilled at ``r`` tokens per second admits at most ``B + 60r``
requests in any 60-second window: the bucket holds at most ``B`` when the window opens and gains
at most ``60r`` during it. Refilling at the nominal ``limit/60`` would therefore let ``B`` extra
requests through in the first minute (a full bucket spent at once, then the steady rate), which a
server counting a sliding 60-second window rejects. So the bucket refills at ``(limit - B)/60``
per second: ``B + 60r = limit`` exactly, in every window, including the first.

The price of a burst is paid in steady throughput, ``(limit - B)/limit``, so the default burst is
1: 99 requests per minute against a limit of 100, and the spacing (0.61 s) leaves a whole request
of margin for network jitter between the client's clock and the server's. A larger burst (at most
half the limit) only shortens the first few waits of a short task. Below 2 requests per minute
``limit - 1`` would be less than half the limit, and the refill is ``limit/2`` per minute instead:
one request in any 60-second window, the least a limiter can allow without allowing nothing.

After a 429 the nominal rate drops (``current_rate``) and the refill scales with it, keeping the
same ``(limit - B)/limit`` proportion.

Interactive calls first
-----------------------
A bulk job keeps the bucket near empty, and a single booking would queue behind its threads (and
behind every other process's). So a limiter may keep a ``reserve``: it takes a request only while
``reserve`` more remain. The bulk runner's limiter keeps one; the single operators' does not, so they
find up to ``reserve`` requests waiting for them and win every refill after that. Nothing is lost:
the bucket still fills at the same rate, and the burst rule still bounds every window.

Threads and processes
---------------------
One :class:`RateLimiter` is shared by the threads of a process (a lock guards its state; sleeping
happens outside the lock). A limiter per process would let N task processes send N times the
limit, so with ``shared_dir`` the bucket lives in ``<shared_dir>/<key>.bucket``, a small JSON file
read and rewritten under an exclusive ``flock``; 429 pauses and rate cuts are then shared too, and
every process on the host slows down together. The directory gets the token cache's checks
(owner-only 0700, files 0600, no symlinks).

With ``redis`` (``credential_cache: redis``) the same bucket lives in Redis, shared by every process
on every host, and one Lua script runs the same rules inside Redis with Redis's own ``TIME``: atomic,
no read-modify-write from a client, and the hosts' clocks never matter. A missing bucket there (new,
or lost in a Redis restart) starts **empty**, which keeps every 60-second window under the limit
across the restart. Two connections of one tenant that declare different ``requests_per_minute``
still share the tenant's one budget (Qmatic counts per tenant): it runs at the lowest limit declared
within :data:`DECLARED_LIMIT_TTL_S`, :attr:`RateLimiter.limit` says so, and a warning names both.
Whatever holds the bucket, :class:`RateLimiter` is the one Python shell around it: the arguments,
the waiting, the counters; only the bucket's home differs (:class:`_LocalBucket`, :class:`_RedisBucket`).

The host-local state is stamped with the limiter's ``clock``. The default, :func:`time.monotonic`, is
``CLOCK_MONOTONIC`` on Linux: one clock for the whole host (seconds since boot), comparable between
processes, and immune to wall-clock jumps that would otherwise grant a burst or a long stall.
A state file whose stamps lie in the future (left over from before a reboot) is discarded.

Spacing
-------
The token endpoint takes one request per second, and a bucket is the wrong tool for that: it must
never admit two requests inside one second, whichever clients send them. One :class:`Spacing` per
key serves the whole process (two clients of one task, a book and a reschedule scope, share it:
:func:`airflow_provider_qmatic.state.token_spacing`) and, with ``shared_dir``, keeps its one number,
the earliest moment of the next request, in ``<shared_dir>/<key>.next`` under ``flock``, so the
task processes of the host share it too, or, with ``redis``, in Redis for the whole cluster. Each
caller books its moment and sleeps once until it comes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, NonNegativeInt, ValidationError

from airflow_provider_qmatic.exceptions import QmaticCoordinationError
from airflow_provider_qmatic.state._files import (
    SAFE_NAME,
    PrivateDirectory,
    write_all,
)

if TYPE_CHECKING:
    from airflow_provider_qmatic.state._redis import RedisLink

log = logging.getLogger(__name__)

DECREASE_FACTOR = 0.5
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
# A Retry-After beyond this is treated as this: a gateway's odd value must not hang a task for days.
MAX_PAUSE_S = 300.0
# Float slack: after sleeping exactly the computed wait the refill may be short by a rounding error,
# and a wait too small to move a large clock value would never end; so a wait this short is none.
_EARLY_S = 1e-6
_MAX_STATE_BYTES = 64 * 1024
# A bucket in Redis left alone this long expires; it is then recreated empty (the conservative start).
BUCKET_IDLE_TTL_S = 86400
# A connection of the tenant declaring a lower requests_per_minute clamps the tenant's one budget in
# Redis until it has not been seen for this long.
DECLARED_LIMIT_TTL_S = 600


@dataclass(frozen=True)
class _Rules:
    """The bucket's fixed parameters, checked once by :class:`RateLimiter`."""

    limit: float
    burst: float
    reserve: float
    min_fraction: float
    recovery_after: float
    recovery_step: float  # a fraction of the limit


@dataclass(frozen=True)
class _Seen:
    """What the bucket answered: seconds to wait, the nominal rate and the limit now in force."""

    wait: float
    rate: float
    limit: float


class _Local:
    """State kept in this process, or with ``shared_dir`` in a file there read and rewritten under
    an exclusive ``flock`` (the directory is checked now: unusable, it fails before any request)."""

    def __init__(
        self, key: str, shared_dir: str | os.PathLike[str] | None, clock: Callable[[], float]
    ) -> None:
        if not SAFE_NAME.fullmatch(key):  # it names a file
            raise ValueError("key must be 1-128 letters, digits, '_' or '-'")
        self._key = key
        self._clock = clock
        self._lock = threading.Lock()
        self._shared = None
        if shared_dir is not None:
            self._shared = PrivateDirectory(shared_dir, purpose="shared rate-limit state")
            with self._shared.opened():
                pass

    def __repr__(self) -> str:
        return "in this process" if self._shared is None else f"shared through {self._shared.path}"


class _InRedis:
    """State in Redis under ``qmatic:<kind>:{<key>}``, changed only by its Lua ``script``, with
    Redis's own clock, for every host."""

    def __init__(self, redis: RedisLink, kind: str, key: str, script: str) -> None:
        self._redis = redis
        self._key = redis.key(kind, key)
        self._script = redis.client.register_script(script)

    def __repr__(self) -> str:
        return f"in Redis at {self._redis.address}"


class RateLimiter:
    """Token bucket at ``requests_per_minute``, shared by threads, and with ``shared_dir`` by the
    processes of a host, or with ``redis`` by every process of the cluster. See the module
    documentation for the burst rule and the shared state.

    :param requests_per_minute: the server's limit to stay under.
    :param burst: bucket capacity, between 1 and half the limit; default 1 (see the burst rule).
    :param shared_dir: a private directory to share the bucket through with other processes.
    :param redis: a Redis to share the bucket through with every host (see :mod:`._redis`).
    :param key: names the bucket (letters, digits, ``_``, ``-``); one per tenant.
    :param reserve: requests this limiter leaves in the bucket for limiters without one: the bulk
        runner's keeps a reserve, so a single booking never queues behind a bulk job (at most
        ``burst - 1``; 0, the default, may empty the bucket).
    :param clock: seconds, monotonic; shared between processes when ``shared_dir`` is used.
    :param sleep: how to wait; tests pass a fake that advances a fake clock.
    :param min_fraction: the rate never drops below this fraction of the limit.
    :param recovery_after: seconds without a 429 before each additive step back up.
    :param recovery_step: the step, as a fraction of the limit.
    :param rng: source of backoff jitter.
    """

    def __init__(
        self,
        requests_per_minute: float,
        *,
        burst: float | None = None,
        shared_dir: str | os.PathLike[str] | None = None,
        redis: RedisLink | None = None,
        key: str = "default",
        reserve: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        min_fraction: float = 0.1,
        recovery_after: float = 30.0,
        recovery_step: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        limit = float(requests_per_minute)
        if not (math.isfinite(limit) and limit > 0):
            raise ValueError("requests_per_minute must be a positive number")
        capacity = 1.0 if burst is None else float(burst)
        if not 1.0 <= capacity <= max(1.0, limit / 2):
            raise ValueError(
                f"burst must be between 1 and half of requests_per_minute ({limit:g}), got {burst}"
            )
        if not 0.0 <= reserve <= capacity - 1.0:
            raise ValueError(f"reserve must be between 0 and burst - 1 ({capacity - 1:g}), got {reserve}")
        if not 0 < min_fraction <= 1:
            raise ValueError("min_fraction must be greater than 0 and at most 1")
        if recovery_after <= 0 or recovery_step <= 0:
            raise ValueError("recovery_after and recovery_step must be positive")
        self._rules = _Rules(limit, capacity, float(reserve), min_fraction, recovery_after, recovery_step)
        self._clock = clock
        self._sleep = sleep
        rng = rng or random.Random()
        self._bucket: _LocalBucket | _RedisBucket = (
            _LocalBucket(self._rules, key, shared_dir, clock, rng)
            if redis is None
            else _RedisBucket(self._rules, key, redis, rng)
        )
        self._lock = threading.Lock()
        self._seen = _Seen(0.0, limit, limit)  # what the bucket last answered
        self._since_429 = False  # a 429 was reported and no success since
        self._acquired = 0.0
        self._waited_s = 0.0
        self._rate_limited_events = 0

    def __repr__(self) -> str:
        return f"RateLimiter(limit={self._rules.limit:g}, reserve={self._rules.reserve:g}, {self._bucket!r})"

    @property
    def limit(self) -> float:
        """The limit in force, requests per minute: this limiter's, or in Redis a lower one another
        connection of the tenant declares (as last seen)."""
        return self._seen.limit

    @property
    def reserve(self) -> float:
        """Requests this limiter leaves in the bucket for limiters without a reserve."""
        return self._rules.reserve

    @property
    def current_rate(self) -> float:
        """The nominal requests per minute now in force (the limit unless 429s lowered it), read from
        the shared bucket, so it reflects every process's 429s (the last value seen if Redis is lost)."""
        with contextlib.suppress(QmaticCoordinationError):
            self._apply("rate")
        return self._seen.rate

    def acquire(self, n: float = 1.0) -> float:
        """Block until n requests may be sent; returns seconds waited. Raises
        QmaticCoordinationError if Redis is lost (nothing is sent then).

        :param n: request cost, between 0 (exclusive) and the burst less the reserve.
        """
        start = self._clock()
        while (wait := self.try_acquire(n)) > 0:
            self._sleep(wait)
        waited = max(0.0, self._clock() - start)
        with self._lock:
            self._waited_s += waited
        return waited

    def try_acquire(self, n: float = 1.0) -> float:
        """Take n requests now and return 0, or take nothing and return the seconds to wait before
        asking again: for callers that must not block a thread while they wait (a trigger sleeps in
        the triggerer's event loop). Raises QmaticCoordinationError if Redis is lost."""
        if not 0 < n <= self._rules.burst - self._rules.reserve:
            raise ValueError("n must be greater than 0 and at most the burst less the reserve")
        wait = self._apply("take", n=n).wait
        if wait > 0:
            return wait
        with self._lock:
            self._acquired += n
        return 0.0

    def on_rate_limited(self, retry_after: float | None = None) -> None:
        """A 429 arrived: nobody sends before ``retry_after`` (or a jittered backoff if None), the
        bucket is emptied, and the rate halves (floor: ``min_fraction`` * limit).

        429s that arrive during a pause are answers to requests sent before it: they extend the
        pause if they ask for longer, but do not cut the rate again, so eight threads hit by one
        overload halve the rate once, not eight times.

        Without ``Retry-After`` the pause is "full jitter" exponential backoff: uniform between 0
        and min(60 s, 1 s * 2^(k-1)) for the k-th 429 in a row; the jitter keeps processes that were
        refused together from returning together.
        """
        with self._lock:
            self._rate_limited_events += 1
            self._since_429 = True
        self._report("429", retry_after)

    def on_success(self) -> None:
        """A request got through: after ``recovery_after`` seconds without a 429, the rate climbs back
        by ``recovery_step`` * limit per quiet period, up to the limit."""
        with self._lock:
            if self._seen.rate >= self._seen.limit and not self._since_429:
                return  # nothing to recover: spare the shared bucket a write per request
            self._since_429 = False
        self._report("ok")

    def stats(self) -> dict[str, float]:
        """This limiter's counters: requests acquired, seconds waited, 429s reported, current rate."""
        rate = self.current_rate
        with self._lock:
            return {
                "acquired": self._acquired,
                "waited_s": self._waited_s,
                "rate_limited_events": float(self._rate_limited_events),
                "current_rate": rate,
            }

    def _apply(self, op: str, *, n: float = 1.0, retry_after: float | None = None) -> _Seen:
        seen = self._bucket.apply(op, n=n, retry_after=retry_after)
        previous, self._seen = self._seen, seen
        if seen.limit < self._rules.limit and seen.limit != previous.limit:
            log.warning(
                "Qmatic request budget: another connection of this tenant declares %g requests a minute, "
                "this one %g; the tenant's one budget runs at the lowest limit declared, %g",
                seen.limit,
                self._rules.limit,
                seen.limit,
            )
        return seen

    def _report(self, op: str, retry_after: float | None = None) -> None:
        # An answer has arrived; losing Redis now must not turn it into an error.
        try:
            self._apply(op, retry_after=retry_after)
        except QmaticCoordinationError as exc:
            log.warning("Qmatic request budget: %s", exc.message)


class _State(BaseModel):
    """A host-local bucket's whole state; in shared mode, the content of the ``.bucket`` file, read
    strictly: finite numbers, a whole count (anything else is torn or foreign, and starts afresh)."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)

    tokens: float
    updated: float  # clock time up to which tokens were refilled
    rate: float  # nominal requests per minute now in force
    quiet_since: float  # last 429 or last rate increase: the start of the current quiet period
    paused_until: float | None = None
    consecutive_429: NonNegativeInt = 0


class _LocalBucket(_Local):
    """The bucket in this process, or with ``shared_dir`` in ``<shared_dir>/<key>.bucket``."""

    def __init__(
        self,
        rules: _Rules,
        key: str,
        shared_dir: str | os.PathLike[str] | None,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        super().__init__(key, shared_dir, clock)
        self._rules = rules
        self._paced_fraction = max(rules.limit - rules.burst, rules.limit / 2) / rules.limit
        self._floor = rules.min_fraction * rules.limit
        self._rng = rng
        self._state = self._fresh(clock())  # in shared mode unused: the file holds the state

    def apply(self, op: str, *, n: float = 1.0, retry_after: float | None = None) -> _Seen:
        """Run ``op`` on the state at the current time, atomically for threads (and processes)."""
        with self._lock:
            if self._shared is None:
                return self._step(self._state, self._clock(), op, n, retry_after)
            with self._shared.opened() as dir_fd, self._shared.locked(dir_fd, f"{self._key}.bucket") as fd:
                now = self._clock()  # read under the lock, so time order matches state order
                state = self._load(fd, now)
                seen = self._step(state, now, op, n, retry_after)
                _rewrite(fd, state.model_dump_json().encode())
                return seen

    def _step(self, state: _State, now: float, op: str, n: float, retry_after: float | None) -> _Seen:
        """Refill ``state`` up to ``now``, then run ``op``: the rules :data:`_BUCKET` runs in Redis."""
        rules, wait = self._rules, 0.0
        per_second = state.rate * self._paced_fraction / 60.0
        # No tokens accrue during a pause: the server wants silence, not a burst when it ends.
        start = state.updated if state.paused_until is None else max(state.updated, state.paused_until)
        if now > start:
            state.tokens = min(rules.burst, state.tokens + (now - start) * per_second)
        state.updated = max(state.updated, now)
        if op == "take":  # take n tokens, or say how long to wait before asking again
            if state.paused_until is not None and state.paused_until - now > _EARLY_S:
                wait = state.paused_until - now
            else:
                wait = max(0.0, n + rules.reserve - state.tokens) / per_second
                if wait <= _EARLY_S:
                    wait = 0.0
                    state.tokens -= n  # a rounding shortfall stays as a tiny debt instead of being forgiven
        elif op == "429":
            if state.paused_until is None or now >= state.paused_until:
                state.consecutive_429 += 1
                state.rate = max(self._floor, state.rate * DECREASE_FACTOR)
            if retry_after is None:
                ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** min(state.consecutive_429 - 1, 32))
                delay = self._rng.uniform(0.0, ceiling)
            else:
                delay = min(max(0.0, retry_after), MAX_PAUSE_S)
            state.tokens = 0.0
            state.quiet_since = now
            state.paused_until = max(now + delay, state.paused_until or now)
        elif op == "ok":
            state.consecutive_429 = 0
            periods = math.floor((now - state.quiet_since) / rules.recovery_after)
            if state.rate < rules.limit and periods >= 1:
                state.rate = min(rules.limit, state.rate + periods * rules.recovery_step * rules.limit)
                state.quiet_since += periods * rules.recovery_after
        return _Seen(wait, state.rate, rules.limit)

    def _fresh(self, now: float) -> _State:
        return _State(tokens=self._rules.burst, updated=now, rate=self._rules.limit, quiet_since=now)

    def _load(self, fd: int, now: float) -> _State:
        """The shared state, or a fresh bucket if the file is new, corrupt or from before a reboot."""
        try:
            state = _State.model_validate_json(os.pread(fd, _MAX_STATE_BYTES, 0))
        except ValidationError:  # empty, torn, foreign or absurdly nested
            return self._fresh(now)
        if state.updated > now + 1.0 or state.quiet_since > now + 1.0:
            return self._fresh(now)
        # Processes may be configured differently; each keeps the shared values inside its own bounds.
        state.tokens = min(max(state.tokens, -1.0), self._rules.burst)
        state.rate = min(max(state.rate, self._floor), self._rules.limit)
        if state.paused_until is not None and state.paused_until > now + MAX_PAUSE_S:
            state.paused_until = now + MAX_PAUSE_S
        return state


# _LocalBucket's rules, run inside Redis. KEYS[1]: the tenant's bucket (a hash).
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


class _RedisBucket(_InRedis):
    """The tenant's bucket in Redis, one hash per tenant, run by :data:`_BUCKET` (see the module
    documentation). A budget that cannot be read (a field changed by hand, a key of another type) is
    rebuilt empty, with a warning, never trusted and never fatal."""

    def __init__(self, rules: _Rules, key: str, redis: RedisLink, rng: random.Random) -> None:
        super().__init__(redis, "budget", key, _BUCKET)
        self._rules = rules
        self._rng = rng

    def apply(self, op: str, *, n: float = 1.0, retry_after: float | None = None) -> _Seen:
        rules = self._rules
        with self._redis.call("the request budget"):
            wait, rate, in_force, rebuilt = self._script(
                keys=[self._key],
                args=[
                    op,
                    rules.limit,
                    rules.burst,
                    rules.min_fraction,
                    n,
                    rules.reserve,
                    -1.0 if retry_after is None else max(0.0, retry_after),
                    self._rng.random(),
                    rules.recovery_after,
                    rules.recovery_step,
                    BUCKET_IDLE_TTL_S * 1000,
                ],
            )
        if int(rebuilt):
            log.warning(
                "Qmatic request budget in Redis at %s could not be read (changed by hand, or of another "
                "version); rebuilt empty",
                self._redis.address,
            )
        return _Seen(float(wait), float(rate), float(in_force))


class Spacing:
    """At most one event per ``interval`` seconds for a key, across threads and, with ``shared_dir``,
    across the processes of this user on this host, or with ``redis`` across every host. Build the
    one a process shares with :func:`airflow_provider_qmatic.state.token_spacing`."""

    def __init__(
        self,
        interval: float,
        *,
        key: str,
        shared_dir: str | os.PathLike[str] | None = None,
        redis: RedisLink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._moments = _LocalMoments(key, shared_dir, clock) if redis is None else _RedisMoments(key, redis)

    def __repr__(self) -> str:
        return f"Spacing(interval={self.interval:g}, {self._moments!r})"

    def wait(self, sleep: Callable[[float], None] = time.sleep) -> float:
        """Book the next free moment and sleep until it; returns the seconds slept. Raises
        QmaticCoordinationError if Redis is lost (nothing is sent then)."""
        delay = self._moments.book("wait", self.interval)
        if delay > 0:
            sleep(delay)
        return delay

    def hold_off(self, seconds: float) -> None:
        """Nobody starts before ``seconds`` from now (the endpoint answered 429)."""
        pause = min(max(0.0, seconds), MAX_PAUSE_S)
        try:  # an answer has arrived; losing Redis now must not replace it with another error
            self._moments.book("hold", pause)
        except QmaticCoordinationError as exc:
            log.warning("Qmatic token endpoint spacing: %s", exc.message)


class _LocalMoments(_Local):
    """The next free moment in this process, or in ``<shared_dir>/<key>.next``."""

    _next_at = 0.0  # in this process; shared, the file holds it

    def book(self, kind: str, seconds: float) -> float:
        """``wait``: take the next free moment, the one after it ``seconds`` later; ``hold``: nobody
        before now + ``seconds``. Returns how long the caller waits (``start - now``)."""
        with self._lock:
            if self._shared is None:
                now = self._clock()
                start, self._next_at = _book(kind, seconds, now, self._next_at)
                return start - now
            with self._shared.opened() as dir_fd, self._shared.locked(dir_fd, f"{self._key}.next") as fd:
                now = self._clock()
                try:
                    next_at = float(os.pread(fd, 64, 0).decode() or 0.0)
                except ValueError:  # torn or foreign content: no booking to respect
                    next_at = 0.0
                if not math.isfinite(next_at) or next_at > now + MAX_PAUSE_S:  # from before a reboot
                    next_at = 0.0
                start, next_at = _book(kind, seconds, now, next_at)
                _rewrite(fd, repr(next_at).encode())
                return start - now


def _book(kind: str, seconds: float, now: float, next_at: float) -> tuple[float, float]:
    """``(start, new next free moment)``: the rule :data:`_SPACE` runs in Redis."""
    if kind == "hold":
        return now, max(next_at, now + seconds)
    start = max(now, next_at)
    return start, start + seconds


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


class _RedisMoments(_InRedis):
    """The next free moment in Redis (:data:`_SPACE`)."""

    def __init__(self, key: str, redis: RedisLink) -> None:
        super().__init__(redis, "tokspace", key, _SPACE)

    def book(self, kind: str, seconds: float) -> float:
        with self._redis.call("the token endpoint's spacing"):
            return float(self._script(keys=[self._key], args=[kind, seconds]))


def _rewrite(fd: int, data: bytes) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    write_all(fd, data)
    os.ftruncate(fd, len(data))
