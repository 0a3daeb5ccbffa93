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

The shared state is stamped with the limiter's ``clock``. The default, :func:`time.monotonic`, is
``CLOCK_MONOTONIC`` on Linux: one clock for the whole host (seconds since boot), comparable between
processes, and immune to wall-clock jumps that would otherwise grant a burst or a long stall.
A state file whose stamps lie in the future (left over from before a reboot) is discarded.

Spacing
-------
The token endpoint takes one request per second, and a bucket is the wrong tool for that: it must
never admit two requests inside one second, whichever clients send them. :func:`spacing` hands out
one :class:`Spacing` per key for the whole process (two clients of one task, a book and a
reschedule scope, share it) and, with ``shared_dir``, keeps its one number, the earliest moment
of the next request, in ``<shared_dir>/<key>.next`` under ``flock``, so the task processes of the
host share it too. Each caller books its moment and sleeps once until it comes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol, TypeVar

from airflow_provider_qmatic.state._files import (
    SAFE_NAME,
    PrivateDirectory,
    flock_available,
    lock_exclusive,
    write_all,
)

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

_T = TypeVar("_T")


class Limiter(Protocol):
    """What the client needs from a request budget: :class:`RateLimiter` on one host,
    :class:`~airflow_provider_qmatic.state._redis.RedisRateLimiter` across a cluster."""

    @property
    def limit(self) -> float: ...

    @property
    def current_rate(self) -> float: ...

    def acquire(self, n: float = 1.0) -> float: ...

    def on_rate_limited(self, retry_after: float | None = None) -> None: ...

    def on_success(self) -> None: ...

    def stats(self) -> dict[str, float]: ...


@dataclass
class _Bucket:
    """The limiter's whole state; in shared mode, the content of the ``.bucket`` file."""

    tokens: float
    updated: float  # clock time up to which tokens were refilled
    rate: float  # nominal requests per minute now in force
    quiet_since: float  # last 429 or last rate increase: the start of the current quiet period
    paused_until: float | None = None
    consecutive_429: int = 0


class RateLimiter:
    """Token bucket at ``requests_per_minute``, shared by threads (and, with ``shared_dir``, by processes
    on one host). See the module documentation for the burst rule and the shared-state design.

    :param requests_per_minute: the server's limit to stay under.
    :param burst: bucket capacity, between 1 and half the limit; default 1 (see the burst rule).
    :param shared_dir: a private directory to share the bucket through with other processes.
    :param key: names the bucket in ``shared_dir`` (letters, digits, ``_``, ``-``); one per tenant.
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
        if not SAFE_NAME.fullmatch(key):
            raise ValueError("key must be 1-128 letters, digits, '_' or '-'")
        self._limit = limit
        self._burst = capacity
        self._reserve = float(reserve)
        self._paced_fraction = max(limit - capacity, limit / 2) / limit
        self._floor = min_fraction * limit
        self._recovery_after = recovery_after
        self._recovery_step = recovery_step * limit
        self._key = key
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        # In shared mode this is only the state last seen in the file.
        self._bucket = self._fresh_bucket(clock())
        self._acquired = 0.0
        self._waited_s = 0.0
        self._rate_limited_events = 0
        self._shared: PrivateDirectory | None = None
        if shared_dir is not None:
            if flock_available():
                self._shared = PrivateDirectory(shared_dir, purpose="shared rate-limit state")
                with self._shared.opened():  # fail now, before any request, if it is unusable
                    pass
            else:
                log.warning(
                    "file locks (fcntl.flock) are unavailable on this system: Qmatic request pacing is "
                    "per process, not shared through %s",
                    shared_dir,
                )

    @property
    def limit(self) -> float:
        """The configured limit, requests per minute."""
        return self._limit

    @property
    def reserve(self) -> float:
        """Requests this limiter leaves in the bucket for limiters without a reserve."""
        return self._reserve

    @property
    def current_rate(self) -> float:
        """The nominal requests per minute now in force (the limit unless 429s lowered it).

        In shared mode this reads the shared state, so it reflects every process's 429s.
        """
        return self._transact(lambda bucket, now: bucket.rate)

    def acquire(self, n: float = 1.0) -> float:
        """Block until n requests may be sent; returns seconds waited.

        :param n: request cost, between 0 (exclusive) and the burst.
        """
        if not 0 < n <= self._burst - self._reserve:
            raise ValueError("n must be greater than 0 and at most the burst less the reserve")
        start = self._clock()
        while True:
            wait = self._transact(lambda bucket, now: self._take(bucket, now, n))
            if wait <= 0:
                break
            self._sleep(wait)
        waited = max(0.0, self._clock() - start)
        with self._lock:
            self._acquired += n
            self._waited_s += waited
        return waited

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
        self._transact(lambda bucket, now: self._record_429(bucket, now, retry_after))

    def on_success(self) -> None:
        """A request got through: after ``recovery_after`` seconds without a 429, the rate climbs back
        by ``recovery_step`` * limit per quiet period, up to the limit."""
        with self._lock:
            if self._bucket.rate >= self._limit and self._bucket.consecutive_429 == 0:
                return  # nothing to recover: spare the shared file a write per request
        self._transact(self._record_success)

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

    # --- state transitions: pure functions of the bucket and the time, under the lock(s) ---

    def _fresh_bucket(self, now: float) -> _Bucket:
        return _Bucket(tokens=self._burst, updated=now, rate=self._limit, quiet_since=now)

    def _refill(self, bucket: _Bucket, now: float) -> None:
        # No tokens accrue during a pause: the server wants silence, not a burst when it ends.
        start = bucket.updated if bucket.paused_until is None else max(bucket.updated, bucket.paused_until)
        if now > start:
            per_second = bucket.rate * self._paced_fraction / 60.0
            bucket.tokens = min(self._burst, bucket.tokens + (now - start) * per_second)
        bucket.updated = max(bucket.updated, now)

    def _take(self, bucket: _Bucket, now: float, n: float) -> float:
        """Take n tokens and return 0, or return how long to wait before trying again."""
        self._refill(bucket, now)
        if bucket.paused_until is not None and bucket.paused_until - now > _EARLY_S:
            return bucket.paused_until - now
        wait = max(0.0, n + self._reserve - bucket.tokens) / (bucket.rate * self._paced_fraction / 60.0)
        if wait > _EARLY_S:
            return wait
        bucket.tokens -= n  # a rounding shortfall stays as a tiny debt instead of being forgiven
        return 0.0

    def _record_429(self, bucket: _Bucket, now: float, retry_after: float | None) -> None:
        self._refill(bucket, now)
        if bucket.paused_until is None or now >= bucket.paused_until:
            bucket.consecutive_429 += 1
            bucket.rate = max(self._floor, bucket.rate * DECREASE_FACTOR)
        if retry_after is None:
            ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0 ** min(bucket.consecutive_429 - 1, 32))
            delay = self._rng.uniform(0.0, ceiling)
        else:
            delay = min(max(0.0, retry_after), MAX_PAUSE_S)
        bucket.tokens = 0.0
        bucket.quiet_since = now
        bucket.paused_until = max(now + delay, bucket.paused_until or now)

    def _record_success(self, bucket: _Bucket, now: float) -> None:
        bucket.consecutive_429 = 0
        if bucket.rate >= self._limit:
            return
        periods = math.floor((now - bucket.quiet_since) / self._recovery_after)
        if periods >= 1:
            bucket.rate = min(self._limit, bucket.rate + periods * self._recovery_step)
            bucket.quiet_since += periods * self._recovery_after

    # --- where the state lives ---

    def _transact(self, step: Callable[[_Bucket, float], _T]) -> _T:
        """Run ``step`` on the state at the current time, atomically for threads (and processes)."""
        with self._lock:
            if self._shared is None:
                return step(self._bucket, self._clock())
            with self._shared.opened() as dir_fd:
                fd = self._shared.open_file(dir_fd, f"{self._key}.bucket", os.O_RDWR | os.O_CREAT)
                try:
                    lock_exclusive(fd)
                    now = self._clock()  # read under the lock, so time order matches state order
                    bucket = self._load(fd, now)
                    result = step(bucket, now)
                    data = json.dumps(asdict(bucket)).encode()
                    os.lseek(fd, 0, os.SEEK_SET)
                    write_all(fd, data)
                    os.ftruncate(fd, len(data))
                    self._bucket = bucket
                    return result
                finally:
                    os.close(fd)

    def _load(self, fd: int, now: float) -> _Bucket:
        """The shared state, or a fresh bucket if the file is new, corrupt or from before a reboot."""
        bucket = _parse_bucket(os.pread(fd, _MAX_STATE_BYTES, 0))
        if bucket is None or bucket.updated > now + 1.0 or bucket.quiet_since > now + 1.0:
            return self._fresh_bucket(now)
        # Processes may be configured differently; each keeps the shared values inside its own bounds.
        bucket.tokens = min(max(bucket.tokens, -1.0), self._burst)
        bucket.rate = min(max(bucket.rate, self._floor), self._limit)
        if bucket.paused_until is not None and bucket.paused_until > now + MAX_PAUSE_S:
            bucket.paused_until = now + MAX_PAUSE_S
        return bucket


class Spacing:
    """At most one event per ``interval`` seconds for a key, across threads and, with ``shared_dir``,
    across the processes of this user on this host. Build it with :func:`spacing`."""

    def __init__(
        self,
        interval: float,
        *,
        key: str,
        shared_dir: str | os.PathLike[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not SAFE_NAME.fullmatch(key):
            raise ValueError("key must be 1-128 letters, digits, '_' or '-'")
        self.interval = interval
        self._key = key
        self._clock = clock
        self._lock = threading.Lock()
        self._next_at = 0.0
        self._shared: PrivateDirectory | None = None
        if shared_dir is not None and flock_available():
            self._shared = PrivateDirectory(shared_dir, purpose="shared rate-limit state")
            with self._shared.opened():  # fail now, before any request, if it is unusable
                pass

    def wait(self, sleep: Callable[[float], None] = time.sleep) -> float:
        """Book the next free moment and sleep until it; returns the seconds slept."""
        delay = self._book(lambda now, next_at: (max(now, next_at), max(now, next_at) + self.interval))
        if delay > 0:
            sleep(delay)
        return delay

    def hold_off(self, seconds: float) -> None:
        """Nobody starts before ``seconds`` from now (the endpoint answered 429)."""
        pause = min(max(0.0, seconds), MAX_PAUSE_S)
        self._book(lambda now, next_at: (now, max(next_at, now + pause)))

    def _book(self, step: Callable[[float, float], tuple[float, float]]) -> float:
        """Apply ``step(now, next_at) -> (start, new next_at)`` atomically; ``start - now``."""
        with self._lock:
            if self._shared is None:
                now = self._clock()
                start, self._next_at = step(now, self._next_at)
                return start - now
            with self._shared.opened() as dir_fd:
                fd = self._shared.open_file(dir_fd, f"{self._key}.next", os.O_RDWR | os.O_CREAT)
                try:
                    lock_exclusive(fd)
                    now = self._clock()
                    try:
                        next_at = float(os.pread(fd, 64, 0).decode() or 0.0)
                    except ValueError:  # torn or foreign content: no booking to respect
                        next_at = 0.0
                    if not math.isfinite(next_at) or next_at > now + MAX_PAUSE_S:  # from before a reboot
                        next_at = 0.0
                    start, next_at = step(now, next_at)
                    data = repr(next_at).encode()
                    os.lseek(fd, 0, os.SEEK_SET)
                    write_all(fd, data)
                    os.ftruncate(fd, len(data))
                    return start - now
                finally:
                    os.close(fd)


_spacings: dict[tuple[str, str | None], Spacing] = {}
_spacings_lock = threading.Lock()


def spacing(interval: float, *, key: str, shared_dir: str | os.PathLike[str] | None = None) -> Spacing:
    """The process's one :class:`Spacing` for ``key`` (and ``shared_dir``), created on first use."""
    where = None if shared_dir is None else os.fspath(shared_dir)
    with _spacings_lock:
        found = _spacings.get((key, where))
        if found is None:
            found = _spacings[(key, where)] = Spacing(interval, key=key, shared_dir=shared_dir)
        return found


def _parse_bucket(raw: bytes) -> _Bucket | None:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # empty, torn, foreign or absurdly nested: start afresh
        return None
    if not isinstance(data, dict):
        return None
    try:
        paused = data["paused_until"]
        consecutive = data["consecutive_429"]
        if not isinstance(consecutive, int) or isinstance(consecutive, bool) or consecutive < 0:
            return None
        return _Bucket(
            tokens=_finite(data["tokens"]),
            updated=_finite(data["updated"]),
            rate=_finite(data["rate"]),
            quiet_since=_finite(data["quiet_since"]),
            paused_until=None if paused is None else _finite(paused),
            consecutive_429=consecutive,
        )
    except (KeyError, TypeError):
        return None


def _finite(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError("not a finite number")
    return float(value)
