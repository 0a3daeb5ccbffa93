"""Rate limits as Qmatic documents them: requests per minute per tenant, token requests per second.

Two algorithms for the API limit, chosen by ``rate_limit_algorithm``:

* ``token_bucket`` (default): a bucket of ``api_burst`` requests, refilled at
  ``requests_per_minute / 60`` per second. A client that paces itself at the documented rate with
  a burst no larger than ``api_burst`` never sees a 429, however its requests are spread; that is
  the fairest reading of "100 requests per minute" for a self-pacing client.
* ``sliding_window``: at most ``requests_per_minute`` requests in any 60 seconds. Stricter: a
  client with its own token bucket and any initial burst can be refused in its first minute.

The token endpoint always uses a bucket of ``token_burst`` (default 1) refilled at
``token_requests_per_second``. A refused request consumes nothing. Time comes from the sandbox
clock, so advancing the clock also refills the buckets.
"""

from __future__ import annotations

import threading
from collections import deque

from airflow_provider_qmatic.sandbox.clock import Clock

# Float slack so that a client pacing at exactly the rate is not refused for a rounding error.
_EPSILON = 1e-6


class RateLimiter:
    """Per-key limiter; ``acquire(key)`` answers None (allowed, counted) or the seconds to wait."""

    def __init__(
        self,
        clock: Clock,
        *,
        per_second: float,
        burst: int,
        algorithm: str = "token_bucket",
        window_limit: int = 0,
        window_seconds: float = 60.0,
    ) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, list[float]] = {}
        self._windows: dict[str, deque[float]] = {}
        self.configure(
            per_second=per_second,
            burst=burst,
            algorithm=algorithm,
            window_limit=window_limit,
            window_seconds=window_seconds,
        )

    def configure(
        self,
        *,
        per_second: float,
        burst: int,
        algorithm: str = "token_bucket",
        window_limit: int = 0,
        window_seconds: float = 60.0,
    ) -> None:
        """Change the limit; every key starts afresh (full bucket, empty window)."""
        with self._lock:
            self.per_second = per_second
            self.burst = max(1, burst)
            self.algorithm = algorithm
            self.window_limit = max(1, window_limit)
            self.window_seconds = window_seconds
            self._buckets.clear()
            self._windows.clear()

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()
            self._windows.clear()

    @property
    def enabled(self) -> bool:
        return self.per_second > 0

    def acquire(self, key: str) -> float | None:
        if self.per_second <= 0:
            return None
        now = self._clock.monotonic()
        with self._lock:
            if self.algorithm == "sliding_window":
                return self._window(key, now)
            return self._bucket(key, now)

    def _bucket(self, key: str, now: float) -> float | None:
        state = self._buckets.get(key)
        if state is None:
            state = self._buckets[key] = [float(self.burst), now]
        tokens = min(float(self.burst), state[0] + (now - state[1]) * self.per_second)
        state[1] = now
        if tokens >= 1.0 - _EPSILON:
            state[0] = tokens - 1.0
            return None
        state[0] = tokens
        return (1.0 - tokens) / self.per_second

    def _window(self, key: str, now: float) -> float | None:
        stamps = self._windows.get(key)
        if stamps is None:
            stamps = self._windows[key] = deque()
        horizon = now - self.window_seconds
        while stamps and stamps[0] <= horizon:
            stamps.popleft()
        if len(stamps) < self.window_limit:
            stamps.append(now)
            return None
        return max(stamps[0] + self.window_seconds - now, _EPSILON)
