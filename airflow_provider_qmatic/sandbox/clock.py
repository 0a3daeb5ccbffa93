"""The sandbox's clock: real time plus an offset that tests may advance.

Every time-based rule (token expiry, reservation holds, "slot in the past", rate-limit refills)
reads this clock, so ``POST /_sandbox/clock`` lets a test jump an hour ahead instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone


class Clock:
    """Wall and monotonic time, both shifted by the same non-negative offset."""

    def __init__(self) -> None:
        self._offset = 0.0
        self._lock = threading.Lock()

    @property
    def offset(self) -> float:
        return self._offset

    def advance(self, seconds: float) -> float:
        """Move time forward (never back: expiry decisions already taken must stay true)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward: seconds must be >= 0")
        with self._lock:
            self._offset += seconds
            return self._offset

    def reset(self) -> None:
        with self._lock:
            self._offset = 0.0

    def time(self) -> float:
        """Seconds since the epoch, shifted."""
        return time.time() + self._offset

    def monotonic(self) -> float:
        """Monotonic seconds, shifted; used for rate limits so wall-clock jumps cannot skew them."""
        return time.monotonic() + self._offset

    def now(self) -> datetime:
        """The shifted current time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time(), tz=timezone.utc)
