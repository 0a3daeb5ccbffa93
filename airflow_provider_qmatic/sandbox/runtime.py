"""``Sandbox``: one running emulator's parts (settings, clock, store, limits, faults, stats) wired.

The web app and the in-process server both talk to this object; it owns the two operations that
touch several parts at once: changing settings at run time and resetting to the seed state.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from airflow_provider_qmatic.sandbox.clock import Clock
from airflow_provider_qmatic.sandbox.faults import FaultInjector
from airflow_provider_qmatic.sandbox.limits import RateLimiter
from airflow_provider_qmatic.sandbox.routes import RouteTable
from airflow_provider_qmatic.sandbox.seed import SeedData, build_seed
from airflow_provider_qmatic.sandbox.settings import (
    ALL_SERVICES,
    SEED_KNOBS,
    SandboxClient,
    SandboxSettings,
)
from airflow_provider_qmatic.sandbox.stats import Stats
from airflow_provider_qmatic.sandbox.store import Store


class Sandbox:
    """The emulator's state. ``settings`` is the current configuration (replaced, never mutated);
    ``routes`` its operation table (fixed at start: ``moved_paths`` cannot change at run time)."""

    def __init__(self, settings: SandboxSettings | None = None) -> None:
        self.initial_settings = settings or SandboxSettings()
        self.settings = self.initial_settings
        self.routes = RouteTable(self.settings.moved_paths)
        self._lock = threading.Lock()
        self.clock = Clock()
        self.stats = Stats()
        self.faults = FaultInjector(self.settings.effective_fault_seed)
        self.api_limiter = RateLimiter(self.clock, per_second=0.0, burst=1)
        self.token_limiter = RateLimiter(self.clock, per_second=0.0, burst=1)
        self._apply_limits(self.settings, None)
        seed = build_seed(self.settings, self.clock.now())
        _check_service_references(self.settings, seed)
        self.store = Store(seed, self.clock, self.settings)
        self._clients = {c.client_id: c for c in self.settings.clients}

    def client(self, client_id: str) -> SandboxClient | None:
        return self._clients.get(client_id)

    def configure(self, changes: Mapping[str, Any]) -> SandboxSettings:
        """Apply run-time changes; seed-shaping knobs rebuild the store (tokens are kept).

        :raises ValueError: a knob is unknown or out of range; nothing is changed then.
        """
        with self._lock:
            old = self.settings
            new = old.with_changes(changes)
            if new.moved_paths != old.moved_paths:
                raise ValueError(
                    "moved_paths cannot change at run time (routes are built at start); start another sandbox"
                )
            reseed = any(getattr(new, k) != getattr(old, k) for k in SEED_KNOBS)
            seed = build_seed(new, self.clock.now()) if reseed else self.store.seed
            _check_service_references(new, seed)
            self.settings = new
            self.store.settings = new
            self._apply_limits(new, old)
            if (new.seed, new.fault_seed) != (old.seed, old.fault_seed):
                self.faults.reseed(new.effective_fault_seed)
            if reseed:
                self.store.load(seed, keep_tokens=True)
            return new

    def reset(self, *, keep_tokens: bool = False) -> None:
        """Back to the start: initial settings, seed data, clock offset 0, counters zero.

        Tokens are cleared too unless ``keep_tokens``: a cached token then gets 401, as after a
        real token revocation.
        """
        with self._lock:
            self.settings = self.initial_settings
            self.clock.reset()
            self.stats.reset()
            self.faults.reseed(self.settings.effective_fault_seed)
            self._apply_limits(self.settings, None)
            self.store.settings = self.settings
            self.store.load(build_seed(self.settings, self.clock.now()), keep_tokens=keep_tokens)

    def advance_clock(self, seconds: float) -> float:
        """Move the sandbox's time forward; returns the total offset in seconds."""
        return self.clock.advance(seconds)

    def seed_summary(self) -> dict[str, Any]:
        """Branches with their services and slot counts: enough for a test to pick what to book."""
        seed = self.store.seed
        branches = []
        for branch in seed.branches:
            services = [
                {**s.to_json(), "slots": len(seed.slots.get((branch.id, s.id), ()))} for s in branch.services
            ]
            branches.append(
                {
                    **branch.to_json(),
                    "firstDay": seed.first_days[branch.id].isoformat(),
                    "services": services,
                }
            )
        return {
            "seed": self.settings.seed,
            "weeks": self.settings.weeks,
            "slotCapacity": self.settings.slot_capacity,
            "slotCount": self.store.slot_count(),
            "answerShape": self.settings.answer_shape,
            "paths": {name: f"{op.method} {op.path}" for name, op in self.routes.operations.items()},
            "clients": [c.public() for c in self.settings.clients],
            "branches": branches,
        }

    def _apply_limits(self, new: SandboxSettings, old: SandboxSettings | None) -> None:
        api = ("requests_per_minute", "api_burst", "rate_limit_algorithm")
        if old is None or any(getattr(new, k) != getattr(old, k) for k in api):
            self.api_limiter.configure(
                per_second=new.requests_per_minute / 60.0,
                burst=new.api_burst,
                algorithm=new.rate_limit_algorithm,
                window_limit=max(1, int(new.requests_per_minute)),
                window_seconds=60.0,
            )
        token = ("token_requests_per_second", "token_burst")
        if old is None or any(getattr(new, k) != getattr(old, k) for k in token):
            self.token_limiter.configure(per_second=new.token_requests_per_second, burst=new.token_burst)


def _check_service_references(settings: SandboxSettings, seed: SeedData) -> None:
    """Every service a cap or a service group names (by id or name) is in the seed, and every
    branch configured for combinations is seeded and offers the services listed for it.

    :raises ValueError: naming the setting and the reference, with where to find the ids.
    """
    known = {x for b in seed.branches for s in b.services for x in (s.id, s.name)}
    for tenant in [None, *settings.tenant_config]:
        where = "" if tenant is None else f"tenant_config[{tenant}]."
        config = settings.tenant(tenant or "")
        refs = {k for k in config.max_reservations if k != ALL_SERVICES}
        for name, members in config.service_groups.items():
            refs.update(members)
            if not members:
                raise ValueError(f"{where}service_groups[{name}]: list at least one service")
        unknown = refs - known
        if unknown:
            raise ValueError(
                f"{where}max_reservations or service_groups: no seeded service has the id or name "
                f"{', '.join(sorted(unknown)[:5])} (see /_sandbox/seed or qmatic-sandbox --catalogue)"
            )
        for ref, members in (config.combination_branches or {}).items():
            branch = next((b for b in seed.branches if ref in (b.id, b.name)), None)
            if branch is None:
                raise ValueError(
                    f"{where}combination_branches: no seeded branch has the id or name {ref!r} "
                    "(see /_sandbox/seed or qmatic-sandbox --catalogue)"
                )
            offered = {x for s in branch.services for x in (s.id, s.name)}
            stray = sorted(set(members) - offered)
            if len(members) < 2 or stray:
                raise ValueError(
                    f"{where}combination_branches[{ref}]: list two or more services of that branch"
                    + (f"; it has no service {', '.join(stray[:5])}" if stray else "")
                )
