"""Counters the tests read back through ``GET /_sandbox/stats`` and a short log of recent requests.

Only cheap integer increments under a lock on the request path; the snapshot copies them.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class Stats:
    """Requests by endpoint and status, token requests, 429s (api/token), faults by kind."""

    def __init__(self, log_size: int = 1000) -> None:
        self._lock = threading.Lock()
        self._log_size = log_size
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._requests: dict[str, dict[str, int]] = {}
            self._token_requests = 0
            self._api_requests = 0
            self._rate_limited = {"api": 0, "token": 0}
            self._faults: dict[str, int] = {}
            self._log: deque[dict[str, Any]] = deque(maxlen=self._log_size)

    def record(self, endpoint: str, status: int | str, entry: dict[str, Any] | None = None) -> None:
        """One finished request: ``status`` is the HTTP status, or "dropped"."""
        key = str(status)
        with self._lock:
            by_status = self._requests.setdefault(endpoint, {})
            by_status[key] = by_status.get(key, 0) + 1
            if endpoint == "token":
                self._token_requests += 1
            else:
                self._api_requests += 1
            if status == 429:
                self._rate_limited["token" if endpoint == "token" else "api"] += 1
            if entry is not None:
                entry["status"] = status
                self._log.append(entry)

    def fault(self, kind: str) -> None:
        with self._lock:
            self._faults[kind] = self._faults.get(kind, 0) + 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": {name: dict(v) for name, v in self._requests.items()},
                "api_requests": self._api_requests,
                "token_requests": self._token_requests,
                "rate_limited": dict(self._rate_limited),
                "faults": dict(self._faults),
            }

    def recent(self, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            items = list(self._log)
        return items[-limit:] if limit > 0 else []
