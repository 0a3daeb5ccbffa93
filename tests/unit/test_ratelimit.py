"""RateLimiter: pacing, the sliding-window guarantee, AIMD on 429, threads and processes."""

from __future__ import annotations

import bisect
import json
import os
import random
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_qmatic import state
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.exceptions import QmaticConfigError
from airflow_provider_qmatic.state.budget import MAX_PAUSE_S, RateLimiter, Spacing

REPO = Path(__file__).resolve().parents[2]


class FakeTime:
    """A clock that only moves when the limiter sleeps (or the test says so)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


class UpperBoundRng(random.Random):
    """Jitter that always picks the top of its range, so backoff ceilings can be asserted."""

    def uniform(self, a: float, b: float) -> float:
        return b


def limiter(fake: FakeTime, rpm: float = 100, **kwargs: object) -> RateLimiter:
    return RateLimiter(rpm, clock=fake.clock, sleep=fake.sleep, **kwargs)  # type: ignore[arg-type]


def max_in_window(stamps: list[float], width: float = 60.0) -> int:
    """The most timestamps inside any closed window [t, t + width] (the worst case starts at a stamp)."""
    ordered = sorted(stamps)
    return max((bisect.bisect_right(ordered, t + width) - i for i, t in enumerate(ordered)), default=0)


# --- pacing and the window guarantee ------------------------------------------------------------


def test_steady_pacing_reaches_at_least_90_percent_of_the_limit() -> None:
    fake = FakeTime()
    rl = limiter(fake, 100)
    start = fake.now
    for _ in range(1000):
        rl.acquire()
    per_minute = 1000 / (fake.now - start) * 60
    assert 0.9 * 100 <= per_minute <= 100
    assert rl.stats()["acquired"] == 1000


def test_default_burst_is_one_and_spacing_leaves_one_request_of_margin() -> None:
    fake = FakeTime()
    rl = limiter(fake, 100)
    assert rl.acquire() == 0.0  # the first request never waits
    waited = rl.acquire()
    assert waited == pytest.approx(60 / 99)  # refill (limit - burst) per minute


@pytest.mark.parametrize(
    ("rpm", "burst"),
    [
        (1, None),
        (1.5, None),
        (7, None),
        (60, None),
        (100, None),
        (100, 5),
        (100, 50),
        (1000, None),
        (6000, 3),
    ],
)
def test_never_more_than_limit_in_any_sliding_minute(rpm: float, burst: float | None) -> None:
    fake = FakeTime()
    rl = limiter(fake, rpm, burst=burst)
    minutes = 5 if rpm < 1000 else 3
    stamps: list[float] = []
    while fake.now - 1000.0 < minutes * 60:
        rl.acquire()
        stamps.append(fake.now)
    assert max_in_window(stamps) <= max(rpm, 1)
    if rpm >= 10 and (burst or 1) <= rpm / 10:
        assert len(stamps) >= 0.9 * rpm * minutes


@pytest.mark.parametrize(("rpm", "burst"), [(100, None), (100, 10), (7, None), (1000, 100)])
def test_window_guarantee_holds_for_bursty_arrivals(rpm: float, burst: float | None) -> None:
    # Idle gaps let the bucket refill, so the next requests start with a full bucket: the worst case.
    fake = FakeTime()
    rl = limiter(fake, rpm, burst=burst)
    rng = random.Random(7)
    stamps: list[float] = []
    while fake.now - 1000.0 < 8 * 60:
        if rng.random() < 0.05:
            fake.sleep(rng.uniform(0, 40))
        rl.acquire()
        stamps.append(fake.now)
    assert max_in_window(stamps) <= rpm


def test_a_large_burst_is_spent_at_once_but_not_on_top_of_the_full_rate() -> None:
    fake = FakeTime()
    rl = limiter(fake, 100, burst=50)
    assert [rl.acquire() for _ in range(50)] == [0.0] * 50
    stamps = [fake.now] * 50
    for _ in range(200):
        rl.acquire()
        stamps.append(fake.now)
    assert max_in_window(stamps) <= 100


def test_a_wait_too_small_to_move_the_clock_does_not_spin() -> None:
    fake = FakeTime(start=1e9)  # float spacing here is ~1e-7 s
    rl = limiter(fake, 1_000_000, burst=1)
    for _ in range(1000):
        rl.acquire()
    assert rl.stats()["acquired"] == 1000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"requests_per_minute": float("nan")}, "requests_per_minute"),
        ({"requests_per_minute": 100, "burst": 0.5}, "burst"),
        ({"requests_per_minute": 100, "burst": 51}, "burst"),
        ({"requests_per_minute": 1.5, "burst": 2}, "burst"),
        ({"requests_per_minute": 100, "min_fraction": 0}, "min_fraction"),
        ({"requests_per_minute": 100, "recovery_after": 0}, "recovery"),
        ({"requests_per_minute": 100, "key": "../x"}, "key"),
    ],
)
def test_invalid_arguments_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimiter(**kwargs)  # type: ignore[arg-type]


def test_acquire_more_than_the_burst_is_refused() -> None:
    rl = limiter(FakeTime(), 100, burst=2)
    rl.acquire(2)
    with pytest.raises(ValueError, match="burst"):
        rl.acquire(3)


# --- 429: pause, cut, recover ------------------------------------------------------------------


def test_retry_after_pauses_everyone_and_halves_the_rate() -> None:
    fake = FakeTime()
    rl = limiter(fake, 100)
    rl.acquire()
    rl.on_rate_limited(retry_after=5.0)
    assert rl.current_rate == 50
    t0 = fake.now
    waited = rl.acquire()
    # Nothing before the pause ends; then an empty bucket refilling at the halved rate.
    assert waited >= 5.0
    assert fake.now == pytest.approx(t0 + 5.0 + 60 / (50 * 0.99))
    second = rl.acquire()
    assert second == pytest.approx(60 / (50 * 0.99))
    stats = rl.stats()
    assert stats["rate_limited_events"] == 1
    assert stats["current_rate"] == 50


def test_429s_during_a_pause_cut_the_rate_once() -> None:
    fake = FakeTime()
    rl = limiter(fake, 100)
    for _ in range(8):  # eight in-flight requests answered 429 together
        rl.on_rate_limited(retry_after=2.0)
    assert rl.current_rate == 50
    assert rl.stats()["rate_limited_events"] == 8
    fake.sleep(2.0)
    rl.on_rate_limited(retry_after=2.0)  # after the pause: a new overload, a new cut
    assert rl.current_rate == 25


def test_a_longer_retry_after_during_a_pause_extends_it() -> None:
    fake = FakeTime()
    rl = limiter(fake, 100)
    rl.on_rate_limited(retry_after=2.0)
    rl.on_rate_limited(retry_after=10.0)
    rl.on_rate_limited(retry_after=1.0)  # a shorter one does not shorten it
    assert rl.acquire() >= 10.0


def test_rate_floor_is_min_fraction_of_the_limit() -> None:
    fake = FakeTime()
    rl = limiter(fake, 100, min_fraction=0.1)
    for _ in range(10):
        rl.on_rate_limited(retry_after=0.0)
        fake.sleep(0.01)
    assert rl.current_rate == 10
    start = fake.now
    for _ in range(20):
        rl.acquire()
    # Paced at the floor (10/min scaled by 0.99), never stalled.
    assert (fake.now - start) == pytest.approx(20 * 60 / (10 * 0.99), rel=0.01)


def test_retry_after_is_clamped() -> None:
    fake = FakeTime()
    rl = limiter(fake, 100)
    rl.on_rate_limited(retry_after=-3.0)
    assert rl.acquire() < 2.0  # negative means now (plus the refill of the emptied bucket)
    fake.sleep(10)
    rl.on_rate_limited(retry_after=86_400.0)
    assert MAX_PAUSE_S <= rl.acquire() < MAX_PAUSE_S + 5


def test_backoff_without_retry_after_is_exponential_and_capped() -> None:
    fake = FakeTime()
    rl = limiter(fake, 100, rng=UpperBoundRng())
    pauses = []
    for _ in range(9):
        rl.on_rate_limited()
        start = fake.now
        rl.acquire()
        # the wait is the pause plus one refill interval at the current rate
        pauses.append(round(fake.now - start - 60 / (rl.current_rate * 0.99), 6))
    assert pauses == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_backoff_jitter_stays_within_its_ceiling() -> None:
    fake = FakeTime()
    rl = limiter(fake, 100, rng=random.Random(3))
    rl.on_rate_limited()
    start = fake.now
    rl.acquire()
    assert 0 <= fake.now - start - 60 / (50 * 0.99) <= 1.0


def test_success_resets_the_backoff_exponent() -> None:
    fake = FakeTime()
    rl = limiter(fake, 100, rng=UpperBoundRng())
    rl.on_rate_limited()
    fake.sleep(2)
    rl.on_rate_limited()  # second in a row: ceiling 2 s
    rl.on_success()
    fake.sleep(3)
    rl.on_rate_limited()  # after a success: back to 1 s
    start = fake.now
    rl.acquire()
    assert fake.now - start - 60 / (rl.current_rate * 0.99) == pytest.approx(1.0)


def test_recovery_climbs_additively_after_quiet_periods() -> None:
    fake = FakeTime()
    rl = limiter(fake, 100, recovery_after=30.0, recovery_step=0.1)
    rl.on_rate_limited(retry_after=1.0)
    assert rl.current_rate == 50
    fake.sleep(29)
    rl.on_success()
    assert rl.current_rate == 50  # not quiet long enough yet
    fake.sleep(1)
    rl.on_success()
    assert rl.current_rate == 60
    fake.sleep(65)  # two more whole quiet periods
    rl.on_success()
    assert rl.current_rate == 80
    fake.sleep(29)  # the 5 s left over from before count towards the next step
    rl.on_success()
    assert rl.current_rate == 90
    fake.sleep(300)
    rl.on_success()
    assert rl.current_rate == 100  # never above the limit


def test_a_429_restarts_the_quiet_period() -> None:
    fake = FakeTime()
    rl = limiter(fake, 100)
    rl.on_rate_limited(retry_after=0.0)
    fake.sleep(25)
    rl.on_rate_limited(retry_after=0.0)
    fake.sleep(25)
    rl.on_success()
    assert rl.current_rate == 25


# --- threads -----------------------------------------------------------------------------------


def test_threads_share_one_bucket_in_real_time() -> None:
    rl = RateLimiter(6000)  # 100 per second; refill 99.98 per second
    stamps: list[float] = []
    guard = threading.Lock()

    def worker() -> None:
        for _ in range(25):
            rl.acquire()
            now = time.monotonic()
            with guard:
                stamps.append(now)

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    per_second = 5999 / 60
    assert len(stamps) == 200
    assert rl.stats()["acquired"] == 200
    # Never faster than the limit; slower only by what a loaded machine adds (a stalled limiter
    # would take many times longer).
    assert elapsed >= (200 - 1) / per_second * 0.99
    assert elapsed < (200 - 1) / per_second * 5
    # Timestamps are taken just after acquire returns, and a busy machine may delay a stamp that
    # much: allow ten of scheduling slack per window (an unpaced run puts all 200 in one window).
    assert max_in_window(stamps, 0.5) <= 1 + per_second * 0.5 + 10


# --- shared state across processes -------------------------------------------------------------


def test_shared_limiters_pace_as_one(tmp_path: Path) -> None:
    fake = FakeTime()
    a = limiter(fake, 100, shared_dir=tmp_path / "shared", key="tenant")
    b = limiter(fake, 100, shared_dir=tmp_path / "shared", key="tenant")
    stamps = []
    for i in range(300):
        (a if i % 2 else b).acquire()
        stamps.append(fake.now)
    assert max_in_window(stamps) <= 100
    assert len(stamps) / (fake.now - 1000.0) * 60 >= 90
    bucket = tmp_path / "shared" / "tenant.bucket"
    assert (bucket.stat().st_mode & 0o777) == 0o600
    assert ((tmp_path / "shared").stat().st_mode & 0o777) == 0o700
    assert set(json.loads(bucket.read_text())) >= {"tokens", "rate", "paused_until"}


def test_shared_429_slows_every_process(tmp_path: Path) -> None:
    fake = FakeTime()
    a = limiter(fake, 100, shared_dir=tmp_path, key="tenant")
    b = limiter(fake, 100, shared_dir=tmp_path, key="tenant")
    other_tenant = limiter(fake, 100, shared_dir=tmp_path, key="other")
    a.on_rate_limited(retry_after=7.0)
    assert b.current_rate == 50
    assert b.acquire() >= 7.0
    assert other_tenant.current_rate == 100
    assert a.stats()["rate_limited_events"] == 1
    assert b.stats()["rate_limited_events"] == 0  # events count what this limiter was told
    fake.sleep(60)  # 68.2 s after the 429: two quiet periods of 30 s
    b.on_success()
    assert a.current_rate == 70


def test_corrupt_or_stale_shared_state_starts_afresh(tmp_path: Path) -> None:
    fake = FakeTime()
    rl = limiter(fake, 100, shared_dir=tmp_path, key="tenant")
    rl.acquire()  # creates the state file, 0600
    state = tmp_path / "tenant.bucket"
    for content in ("{not json", "[]", '{"tokens": "1"}', "\xff\xfe"):
        state.write_text(content, encoding="latin-1")
        assert rl.acquire() == 0.0  # a fresh bucket holds one request
        fake.sleep(10)
    # A state stamped in the future comes from before a reboot (monotonic restarted): discarded.
    fresh = json.loads(state.read_text())
    fresh.update(updated=fake.now + 10_000, tokens=0.0, rate=10.0)
    state.write_text(json.dumps(fresh))
    assert rl.acquire() == 0.0
    assert rl.current_rate == 100


def test_shared_dir_with_loose_permissions_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    with pytest.raises(QmaticConfigError, match="chmod 700") as info:
        RateLimiter(100, shared_dir=loose)
    assert info.value.field == "credential_cache_dir"
    fake = FakeTime()
    rl = limiter(fake, 100, shared_dir=tmp_path / "ok", key="tenant")
    rl.acquire()
    (tmp_path / "ok" / "tenant.bucket").chmod(0o644)
    with pytest.raises(QmaticConfigError, match=r"tenant\.bucket"):
        rl.acquire()


_CHILD = """
import json, sys, time
from pathlib import Path
from airflow_provider_qmatic.state.budget import RateLimiter

shared, work, idx = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
rpm, duration = float(sys.argv[4]), float(sys.argv[5])
limiter = RateLimiter(rpm, shared_dir=shared, key="tenant")
(work / f"ready-{idx}").touch()
while not (work / "go").exists():
    time.sleep(0.001)
end = time.monotonic() + duration
stamps = []
while True:
    limiter.acquire()
    now = time.monotonic()
    if now > end:
        break
    stamps.append(now)
print(json.dumps(stamps))
"""


def start_children(script: str, work: Path, args: list[list[str]]) -> list[subprocess.Popen[str]]:
    """Start one interpreter per argument list and release them together once all are ready."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, *a],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for a in args
    ]
    deadline = time.monotonic() + 30
    while len(list(work.glob("ready-*"))) < len(args):
        assert time.monotonic() < deadline, "children did not start"
        assert all(p.poll() is None for p in procs), [p.communicate()[1] for p in procs if p.poll()]
        time.sleep(0.01)
    (work / "go").touch()
    return procs


def test_four_processes_share_one_bucket(tmp_path: Path) -> None:
    rpm, duration = 3000.0, 1.0  # 49.98 per second between them
    shared = tmp_path / "shared"
    procs = start_children(
        _CHILD, tmp_path, [[str(shared), str(tmp_path), str(i), str(rpm), str(duration)] for i in range(4)]
    )
    stamps: list[float] = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        stamps.extend(json.loads(out))
    per_second = (rpm - 1) / 60
    span = max(stamps) - min(stamps)
    # One limiter's worth in total (four unshared limiters would send four times as many) ...
    assert len(stamps) <= 1 + per_second * span + 2
    assert len(stamps) >= 0.3 * per_second * duration  # progress, even on a loaded machine
    # ... and no short window over the bucket's bound (slack for a stamp delayed after acquire;
    # four unshared limiters would put about four times the bound in it).
    assert max_in_window(stamps, 0.25) <= 1 + per_second * 0.25 + 6


# --- Spacing: the token endpoint's one request per second ---------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_spacing_books_one_moment_per_interval() -> None:
    clock = _Clock()
    spaced = Spacing(1.1, key="token-x", clock=clock)
    slept: list[float] = []
    # Three callers at the same instant: each books the next free moment and sleeps once.
    assert [spaced.wait(slept.append) for _ in range(3)] == pytest.approx([0.0, 1.1, 2.2])
    assert slept == pytest.approx([1.1, 2.2])
    clock.now += 10  # long after: no wait
    assert spaced.wait(slept.append) == 0.0
    spaced.hold_off(5.0)  # a 429: nobody starts for 5 s
    assert spaced.wait(slept.append) == pytest.approx(5.0)


def test_spacing_is_shared_through_the_directory(tmp_path: Path) -> None:
    """Two instances over one directory stand for two processes of one host."""
    clock = _Clock()
    first = Spacing(1.0, key="token-x", shared_dir=tmp_path / "state", clock=clock)
    second = Spacing(1.0, key="token-x", shared_dir=tmp_path / "state", clock=clock)
    other_host = Spacing(1.0, key="token-y", shared_dir=tmp_path / "state", clock=clock)
    assert first.wait(lambda _s: None) == 0.0
    assert second.wait(lambda _s: None) == pytest.approx(1.0)
    assert other_host.wait(lambda _s: None) == 0.0
    assert stat.S_IMODE((tmp_path / "state" / "token-x.next").stat().st_mode) == 0o600
    (tmp_path / "state" / "token-x.next").write_text("garbage")  # torn or foreign: no booking kept
    assert first.wait(lambda _s: None) == 0.0


def test_spacing_is_one_per_qmatic_host_in_a_process(tmp_path: Path) -> None:
    def config(**extra: str) -> ClientConfig:
        values = {"tenant": "t", "credential_cache": "memory", **extra}
        return ClientConfig.from_values(
            client_id="c", client_secret="s", base_url="http://127.0.0.1:1", **values
        )

    spacing = state.token_spacing(config(), 1.1)
    assert state.token_spacing(config(tenant="other"), 1.1) is spacing  # counted per host, not tenant
    assert (
        state.token_spacing(config(credential_cache="file", credential_cache_dir=str(tmp_path)), 1.1)
        is not spacing
    )
