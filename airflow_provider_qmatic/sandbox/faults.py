"""Seeded fault injection: the failures a real gateway produces, at chosen rates, reproducibly.

One ``random.Random(fault_seed)`` draws for every request the faults could apply to, in arrival
order, so a single-threaded test sees the same faults on every run. Decisions are made before the
request reaches the API (500, 503, dropped connection, latency) and, for writes, after it
succeeded ("commit then fail": the change is stored, the caller gets a 500 or a dropped
connection and must find out what happened).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from airflow_provider_qmatic.sandbox.settings import WRITE_ENDPOINTS, SandboxSettings

NONE = "none"
ERROR_500 = "error_500"
ERROR_503 = "error_503"
DROP = "drop"


@dataclass(frozen=True)
class FaultDecision:
    """What to do to one request: ``before`` (none, error_500, error_503, drop), extra latency,
    and for a write whether to fail after committing (``"500"``, ``"drop"`` or None)."""

    before: str = NONE
    latency_s: float = 0.0
    after_commit: str | None = None


NO_FAULT = FaultDecision()


class FaultInjector:
    """Draws fault decisions from its own seeded generator (never the global one)."""

    def __init__(self, seed: int) -> None:
        self._lock = threading.Lock()
        self._rng = random.Random(seed)

    def reseed(self, seed: int) -> None:
        with self._lock:
            self._rng = random.Random(seed)

    def decide(self, settings: SandboxSettings, endpoint: str) -> FaultDecision:
        if endpoint == "token" and not settings.faults_on_token:
            return NO_FAULT
        if settings.fault_endpoints and endpoint not in settings.fault_endpoints:
            return NO_FAULT
        latency_on = settings.latency_ms > 0 or settings.latency_jitter_ms > 0
        before_rate = settings.fail_rate + settings.unavailable_rate + settings.drop_rate
        after_on = settings.commit_then_fail_rate > 0 and endpoint in WRITE_ENDPOINTS
        if not (latency_on or before_rate > 0 or after_on):
            return NO_FAULT
        with self._lock:
            rng = self._rng
            latency = settings.latency_ms / 1000.0
            if settings.latency_jitter_ms > 0:
                latency += rng.uniform(0.0, settings.latency_jitter_ms / 1000.0)
            before = NONE
            if before_rate > 0:
                roll = rng.random()
                if roll < settings.fail_rate:
                    before = ERROR_500
                elif roll < settings.fail_rate + settings.unavailable_rate:
                    before = ERROR_503
                elif roll < before_rate:
                    before = DROP
            after: str | None = None
            if after_on and before == NONE and rng.random() < settings.commit_then_fail_rate:
                mode = settings.commit_then_fail_mode
                after = (rng.choice(("500", "drop"))) if mode == "both" else mode
        return FaultDecision(before, latency, after)
