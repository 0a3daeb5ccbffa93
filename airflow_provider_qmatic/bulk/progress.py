"""Progress lines while a bulk job runs, and the summary table at its end.

A line is logged whenever another 5% of the rows is done, or 30 seconds have passed since the last
line (also when no row finished meanwhile, e.g. during a long pause after a 429):

    Qmatic bulk book: 150/300 rows (50.0%) | succeeded 140, skipped_existing 5, failed 3, invalid 2 |
    96.4 requests/min since start (limit 100) | ETA 1m 32s

The pace is comparable with the limit, which Qmatic applies to every 60-second window. The limiter
lets a small burst go at once (``B`` = limit/20, at most 5: a single booking's token, reserve and
confirm need no pause) and then refills at ``limit - B`` per minute, so no window ever holds more
than the limit. A rate extrapolated from the first seconds would count that burst as if it went on
all minute, and read above the limit (132.8 requests/min against 100) although no window was over
it. So during the first minute a line gives the count itself (``30 requests in 16s``); from then on,
requests sent divided by minutes elapsed, which the same bound keeps at or below the limit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_qmatic.state.budget import RateLimiter

EVERY_FRACTION = 0.05
EVERY_SECONDS = 30.0
# The window the limit applies to: before a minute has passed, a per-minute rate is an extrapolation.
MINUTE_S = 60.0
STATUS_ORDER = ("succeeded", "skipped_existing", "failed", "invalid")


def achieved_rate(requests: int, elapsed_s: float) -> float:
    """Requests per minute: ``(requests - 1) / elapsed``.

    The first request goes out at once and starts the clock; counting it would show a short job of
    n requests n/(n-1) times faster than its pace (24 requests paced at 100/min would read 104).
    """
    return max(0, requests - 1) * 60.0 / elapsed_s if elapsed_s > 0 else 0.0


def pace(requests: int, elapsed_s: float) -> str:
    """The progress line's pace: a count in the first minute, then requests per minute since start.

    See the module documentation: a rate taken over less than a minute counts the limiter's initial
    burst as if it lasted all minute; over a minute or more it cannot exceed the limit.
    """
    if elapsed_s < MINUTE_S:
        return f"{requests} requests in {format_duration(elapsed_s)}"
    return f"{requests * 60.0 / elapsed_s:.1f} requests/min since start"


def format_duration(seconds: float) -> str:
    """``1h 02m``, ``3m 05s`` or ``12s``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


class ProgressReporter:
    """Decides when to log a progress line and writes it.

    :param action: ``book``, ``reschedule`` or ``cancel`` (for the line's prefix).
    :param total: rows in the job, invalid ones included.
    :param requests: how many requests the job has sent so far (API and token requests).
    :param limiter: the client's request budget (None: unpaced). Its limit and rate are read again
        for every line: a tenant's shared budget may run at a lower limit another connection
        declares, learnt mid-job; that is the limit shown, and only a rate below the limit in force
        is a slowdown after a 429.
    :param statuses: the outcomes a line counts, in order (a dry run counts ``planned`` first).
    """

    def __init__(
        self,
        *,
        action: str,
        total: int,
        requests: Callable[[], int],
        limiter: RateLimiter | None,
        logger: logging.Logger,
        every_fraction: float = EVERY_FRACTION,
        every_seconds: float = EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        statuses: Sequence[str] = STATUS_ORDER,
    ) -> None:
        self._action = action
        self._statuses = tuple(statuses)
        self._total = total
        self._requests = requests
        self._limiter = limiter
        self._log = logger
        self._every_rows = max(1, int(total * every_fraction)) if total else 1
        self._every_seconds = every_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._started = clock()
        self._last_time = self._started
        self._last_done = 0
        self.lines = 0

    def elapsed(self) -> float:
        return self._clock() - self._started

    def due(self, done: int) -> bool:
        now = self._clock()
        return done - self._last_done >= self._every_rows or now - self._last_time >= self._every_seconds

    def update(self, done: int, counts: Mapping[str, int], *, force: bool = False) -> None:
        """Log a line if 5% more rows are done or 30 s have passed since the last one (or ``force``)."""
        with self._lock:
            if not force and not self.due(done):
                return
            self._last_time = self._clock()
            self._last_done = done
            self.lines += 1
        self._log.info("%s", self.line(done, counts))

    def finish(self, done: int, counts: Mapping[str, int]) -> None:
        """The last line, unless the line for this count was just logged."""
        with self._lock:
            if self.lines and self._last_done == done:
                return
        self.update(done, counts, force=True)

    def in_force(self) -> tuple[float, float] | None:
        """``(limit, rate)`` in force now, read from the budget each time; None when unpaced."""
        if self._limiter is None:
            return None
        rate = self._limiter.current_rate  # read first: it refreshes the limit from a shared budget
        return self._limiter.limit, rate

    def pace_text(self) -> str:
        """The job's pace for its first line: the limit in force, or ``unpaced``."""
        in_force = self.in_force()
        return "unpaced" if in_force is None else f"{in_force[0]:g} requests/min"

    def line(self, done: int, counts: Mapping[str, int]) -> str:
        total = self._total
        percent = 100.0 * done / total if total else 100.0
        outcome = ", ".join(f"{name} {counts.get(name, 0)}" for name in self._statuses)
        elapsed = self.elapsed()
        shown = pace(self._requests(), elapsed)
        in_force = self.in_force()
        if in_force is not None:
            limit, current = in_force
            shown += f" (limit {limit:g}"
            if current < limit - 1e-9:
                shown += f", lowered to {current:.0f} after 429"
            shown += ")"
        if 0 < done < total and elapsed > 0:
            eta = f"ETA {format_duration(elapsed * (total - done) / done)}"
        elif done >= total:
            eta = f"done in {format_duration(elapsed)}"
        else:
            eta = "ETA unknown"
        return (
            f"Qmatic bulk {self._action}: {done}/{total} rows ({percent:.1f}%) | {outcome} | {shown} | {eta}"
        )


def summary_table(title: str, rows: Mapping[str, object]) -> str:
    """A two-column text table, one log record: the job's final summary."""
    shown = {key: _cell(value) for key, value in rows.items()}
    width_key = max([len(k) for k in shown] + [len("field")])
    width_value = max([len(v) for v in shown.values()] + [len("value")])
    rule = f"+-{'-' * width_key}-+-{'-' * width_value}-+"
    lines = [title, rule, f"| {'field'.ljust(width_key)} | {'value'.rjust(width_value)} |", rule]
    lines.extend(f"| {k.ljust(width_key)} | {v.rjust(width_value)} |" for k, v in shown.items())
    lines.append(rule)
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return "-" if value is None else str(value)
