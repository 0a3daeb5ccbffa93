"""Token caches: one fetch among threads and processes, private files, tamper refusal, no leaks."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_provider_qmatic import state
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.exceptions import QmaticConfigError
from airflow_provider_qmatic.state import tokens as token_cache
from airflow_provider_qmatic.state._files import default_cache_dir
from airflow_provider_qmatic.state.tokens import (
    CachedToken,
    FileTokenCache,
    MemoryTokenCache,
    TokenCache,
    make_cache_key,
)

REPO = Path(__file__).resolve().parents[2]
SECRET_TOKEN = "eyJ-very-secret-access-token"
NOBODY = 65534
KEY = make_cache_key(
    base_url="https://api.eu-west-1.qmatic.io",
    tenant="acme",
    client_id="client-1",
    scopes="com.qmatic.saas.appointments/external.appointment.book",
    secret_fingerprint="0123456789abcdef",
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")


class CountingFetch:
    """A fetch function that counts its calls and can be slowed to widen races."""

    def __init__(self, delay: float = 0.0, ttl: float = 3600.0) -> None:
        self.calls = 0
        self.delay = delay
        self.ttl = ttl
        self._lock = threading.Lock()

    def __call__(self) -> CachedToken:
        with self._lock:
            self.calls += 1
            number = self.calls
        time.sleep(self.delay)
        return CachedToken(access_token=f"token-{number}", expires_at=time.time() + self.ttl)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture(params=["memory", "file"])
def cache(request: pytest.FixtureRequest, cache_dir: Path) -> TokenCache:
    return MemoryTokenCache() if request.param == "memory" else FileTokenCache(cache_dir)


# --- CachedToken and keys -----------------------------------------------------------------------


def test_cached_token_never_shows_the_token() -> None:
    token = CachedToken(access_token=SECRET_TOKEN, expires_at=2_000_000_000.0)
    assert SECRET_TOKEN not in repr(token)
    assert SECRET_TOKEN not in str(token)
    assert SECRET_TOKEN not in f"{token!r} {token}"
    assert "expires_at=2000000000.0" in repr(token)


def test_ttl() -> None:
    token = CachedToken(access_token="t", expires_at=1000.0)
    assert token.ttl(now=400.0) == 600.0
    assert token.ttl(now=1100.0) == -100.0
    assert CachedToken(access_token="t", expires_at=time.time() + 60).ttl() == pytest.approx(60, abs=1)


def test_cache_key_is_a_hash_that_changes_with_the_secret() -> None:
    parts = {
        "base_url": "https://api.eu-west-1.qmatic.io",
        "tenant": "acme",
        "client_id": "client-1",
        "scopes": "a b",
        "secret_fingerprint": "0123456789abcdef",
    }
    key = make_cache_key(**parts)
    assert len(key) == 64
    assert all(c in "0123456789abcdef" for c in key)
    assert key == make_cache_key(**parts)
    for value in parts.values():
        assert value not in key
    assert make_cache_key(**{**parts, "secret_fingerprint": "fedcba9876543210"}) != key
    assert make_cache_key(**{**parts, "tenant": "other"}) != key
    assert make_cache_key(**{**parts, "scopes": "a"}) != key
    # Scopes are a set: order and spacing do not make a different token.
    assert make_cache_key(**{**parts, "scopes": " b  a "}) == key
    assert make_cache_key(**{**parts, "base_url": "https://api.eu-west-1.qmatic.io/"}) == key


# --- behaviour shared by both caches -----------------------------------------------------------


def test_fetch_once_then_serve_from_cache(cache: TokenCache) -> None:
    fetch = CountingFetch()
    first, fetched = cache.get_or_fetch(KEY, fetch, min_ttl=60)
    assert fetched
    assert first.access_token == "token-1"
    second, fetched = cache.get_or_fetch(KEY, fetch, min_ttl=60)
    assert not fetched
    assert second == first
    assert fetch.calls == 1


def test_near_expiry_triggers_a_refetch(cache: TokenCache) -> None:
    short = CountingFetch(ttl=30)
    cache.get_or_fetch(KEY, short, min_ttl=60)  # born with less than min_ttl left
    token, fetched = cache.get_or_fetch(KEY, short, min_ttl=60)
    assert fetched
    assert token.access_token == "token-2"
    token, fetched = cache.get_or_fetch(KEY, short, min_ttl=10)
    assert not fetched


def test_expired_token_is_refetched(cache: TokenCache) -> None:
    expired = CountingFetch(ttl=-5)
    cache.get_or_fetch(KEY, expired, min_ttl=0)
    _, fetched = cache.get_or_fetch(KEY, expired, min_ttl=0)
    assert fetched
    assert expired.calls == 2


def test_invalidate_drops_only_the_matching_token(cache: TokenCache) -> None:
    fetch = CountingFetch()
    token, _ = cache.get_or_fetch(KEY, fetch, min_ttl=60)
    cache.invalidate(KEY, "some-older-token")  # another caller's stale 401: keep the current one
    assert cache.get_or_fetch(KEY, fetch, min_ttl=60) == (token, False)
    cache.invalidate(KEY, token.access_token)
    fresh, fetched = cache.get_or_fetch(KEY, fetch, min_ttl=60)
    assert fetched
    assert fresh.access_token == "token-2"
    cache.invalidate("unknown-key", "whatever")  # nothing there: nothing happens


def test_failed_fetch_stores_nothing(cache: TokenCache) -> None:
    def broken() -> CachedToken:
        raise RuntimeError("token endpoint down")

    with pytest.raises(RuntimeError):
        cache.get_or_fetch(KEY, broken, min_ttl=60)
    _, fetched = cache.get_or_fetch(KEY, CountingFetch(), min_ttl=60)
    assert fetched


def test_keys_are_independent(cache: TokenCache) -> None:
    other = make_cache_key(base_url="u", tenant="t", client_id="c", scopes="s", secret_fingerprint="rotated")
    a, _ = cache.get_or_fetch(KEY, CountingFetch(), min_ttl=60)
    b, fetched = cache.get_or_fetch(other, lambda: CachedToken("other-token", time.time() + 3600), min_ttl=60)
    assert fetched
    assert b.access_token == "other-token"
    assert a.access_token == "token-1"


def run_threads(count: int, target: Callable[[], None]) -> None:
    threads = [threading.Thread(target=target) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_sixteen_threads_fetch_once(cache: TokenCache) -> None:
    fetch = CountingFetch(delay=0.2)
    results: list[tuple[CachedToken, bool]] = []
    barrier = threading.Barrier(16)

    def worker() -> None:
        barrier.wait()
        results.append(cache.get_or_fetch(KEY, fetch, min_ttl=60))

    run_threads(16, worker)
    assert fetch.calls == 1
    assert len({token.access_token for token, _ in results}) == 1
    assert sum(fetched for _, fetched in results) == 1


def test_a_slow_fetch_does_not_block_other_keys() -> None:
    cache = MemoryTokenCache()
    release = threading.Event()

    def slow() -> CachedToken:
        release.wait(5)
        return CachedToken("slow", time.time() + 3600)

    thread = threading.Thread(target=lambda: cache.get_or_fetch("slow-key", slow, min_ttl=0))
    thread.start()
    started = time.monotonic()
    token, _ = cache.get_or_fetch(KEY, CountingFetch(), min_ttl=0)
    assert time.monotonic() - started < 4.0  # not the 5 s the other key's fetch holds its lock
    release.set()
    thread.join()
    assert token.access_token == "token-1"


# --- the file cache on disk -------------------------------------------------------------------


def test_directory_and_files_are_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        directory = tmp_path / "deep" / "cache"
        cache = FileTokenCache(directory)
        cache.get_or_fetch(KEY, CountingFetch(), min_ttl=60)
    finally:
        os.umask(old_umask)
    assert cache.directory == directory
    assert mode(directory) == 0o700
    assert mode(directory / f"{KEY}.json") == 0o600
    assert mode(directory / f"{KEY}.lock") == 0o600
    assert json.loads((directory / f"{KEY}.json").read_text())["access_token"] == "token-1"
    assert sorted(p.name for p in directory.iterdir()) == [f"{KEY}.json", f"{KEY}.lock"]  # no temp left


def test_another_instance_reads_the_stored_token(cache_dir: Path) -> None:
    token, _ = FileTokenCache(cache_dir).get_or_fetch(KEY, CountingFetch(), min_ttl=60)
    again, fetched = FileTokenCache(cache_dir).get_or_fetch(KEY, CountingFetch(), min_ttl=60)
    assert again == token
    assert not fetched


def test_invalidate_never_drops_a_newer_token_from_another_process(cache_dir: Path) -> None:
    mine, theirs = FileTokenCache(cache_dir), FileTokenCache(cache_dir)
    old, _ = mine.get_or_fetch(KEY, CountingFetch(), min_ttl=60)
    theirs.invalidate(KEY, old.access_token)
    newer, _ = theirs.get_or_fetch(KEY, lambda: CachedToken("newer", time.time() + 3600), min_ttl=60)
    mine.invalidate(KEY, old.access_token)  # my 401 arrives late: the newer token stays
    assert mine.get_or_fetch(KEY, CountingFetch(), min_ttl=60) == (newer, False)


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b"[1, 2]",
        b'{"access_token": 5, "expires_at": 1}',
        b'{"access_token": "t"}',
        b'{"access_token": "t", "expires_at": true}',
        b'{"access_token": "t", "expires_at": NaN}',
        b"\xff\xfe",
    ],
)
def test_corrupt_token_file_is_a_miss_and_is_overwritten(
    cache_dir: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    cache = FileTokenCache(cache_dir)
    cache.get_or_fetch(KEY, CountingFetch(), min_ttl=60)
    path = cache_dir / f"{KEY}.json"
    path.write_bytes(content)
    token, fetched = cache.get_or_fetch(KEY, lambda: CachedToken("repaired", time.time() + 3600), min_ttl=60)
    assert fetched
    assert token.access_token == "repaired"
    assert json.loads(path.read_text())["access_token"] == "repaired"
    assert mode(path) == 0o600


def test_sixteen_threads_with_separate_instances_fetch_once(cache_dir: Path) -> None:
    # flock is per open file description: separate instances in one process must still exclude.
    fetch = CountingFetch(delay=0.2)
    barrier = threading.Barrier(16)
    results: list[bool] = []

    def worker() -> None:
        instance = FileTokenCache(cache_dir)
        barrier.wait()
        results.append(instance.get_or_fetch(KEY, fetch, min_ttl=60)[1])

    run_threads(16, worker)
    assert fetch.calls == 1
    assert sum(results) == 1


def test_a_failed_write_still_returns_the_token(
    cache_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = FileTokenCache(cache_dir)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(token_cache.os, "replace", full_disk)
    token, fetched = cache.get_or_fetch(
        KEY, lambda: CachedToken(SECRET_TOKEN, time.time() + 3600), min_ttl=60
    )
    assert fetched
    assert token.access_token == SECRET_TOKEN
    assert "could not store" in caplog.text
    assert SECRET_TOKEN not in caplog.text
    assert [p.name for p in cache_dir.iterdir()] == [f"{KEY}.lock"]  # the temporary file is gone


def test_unsafe_keys_are_refused(cache_dir: Path) -> None:
    cache = FileTokenCache(cache_dir)
    for key in ("../escape", "a/b", "", ".hidden", "x" * 129):
        with pytest.raises(ValueError, match="make_cache_key"):
            cache.get_or_fetch(key, CountingFetch(), min_ttl=60)


_CHILD = """
import json, sys, time
from pathlib import Path
from airflow_provider_qmatic.state.tokens import CachedToken, FileTokenCache

cache_dir, work, idx, key = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
cache = FileTokenCache(cache_dir)
(work / f"ready-{idx}").touch()
while not (work / "go").exists():
    time.sleep(0.001)

def fetch():
    with open(work / "fetches", "a") as log:
        log.write(idx + "\\n")
    time.sleep(0.2)
    return CachedToken(access_token="token-of-" + idx, expires_at=time.time() + 3600)

token, fetched = cache.get_or_fetch(key, fetch, min_ttl=60)
print(json.dumps({"token": token.access_token, "fetched": fetched}))
"""


def test_sixteen_processes_fetch_once(tmp_path: Path, cache_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(cache_dir), str(tmp_path), str(i), KEY],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(16)
    ]
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("ready-*"))) < 16:  # all started: release them together
        assert time.monotonic() < deadline
        assert all(p.poll() is None for p in procs), [p.communicate()[1] for p in procs if p.poll()]
        time.sleep(0.01)
    (tmp_path / "go").touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert len((tmp_path / "fetches").read_text().split()) == 1
    assert len({r["token"] for r in results}) == 1
    assert sum(r["fetched"] for r in results) == 1


# --- refusing a tampered or shared directory ----------------------------------------------------


def assert_refused(error: pytest.ExceptionInfo[QmaticConfigError], directory: Path) -> None:
    message = str(error.value)
    assert error.value.field == "credential_cache_dir"
    assert str(directory) in message
    assert "chmod 700" in message
    assert "credential_cache: memory" in message
    assert "credential_cache_dir" in message
    assert SECRET_TOKEN not in message
    assert SECRET_TOKEN not in repr(error.value)


@pytest.mark.parametrize("loose_mode", [0o755, 0o750, 0o701, 0o770, 0o707])
def test_directory_open_to_group_or_others_is_refused(cache_dir: Path, loose_mode: int) -> None:
    cache_dir.mkdir()
    cache_dir.chmod(loose_mode)
    with pytest.raises(QmaticConfigError, match=f"{loose_mode:04o}") as error:
        FileTokenCache(cache_dir)
    assert_refused(error, cache_dir)
    assert mode(cache_dir) == loose_mode  # refused, not "repaired"


@needs_root
def test_directory_owned_by_another_user_is_refused(cache_dir: Path) -> None:
    cache_dir.mkdir(mode=0o700)
    os.chown(cache_dir, NOBODY, NOBODY)
    with pytest.raises(QmaticConfigError, match=f"owned by uid {NOBODY}") as error:
        FileTokenCache(cache_dir)
    assert_refused(error, cache_dir)


def test_symlinked_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(QmaticConfigError, match="symbolic link") as error:
        FileTokenCache(link)
    assert_refused(error, link)


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "not-a-dir"
    path.write_text("")
    with pytest.raises(QmaticConfigError, match="directory"):
        FileTokenCache(path)


def test_directory_loosened_after_construction_is_refused_on_use(cache_dir: Path) -> None:
    cache = FileTokenCache(cache_dir)
    cache_dir.chmod(0o755)
    with pytest.raises(QmaticConfigError):
        cache.get_or_fetch(KEY, CountingFetch(), min_ttl=60)


def stored_cache(cache_dir: Path) -> FileTokenCache:
    cache = FileTokenCache(cache_dir)
    cache.get_or_fetch(KEY, lambda: CachedToken(SECRET_TOKEN, time.time() + 3600), min_ttl=60)
    return cache


@pytest.mark.parametrize("loose_mode", [0o644, 0o640, 0o604, 0o660])
def test_token_file_with_group_or_other_bits_is_refused(cache_dir: Path, loose_mode: int) -> None:
    cache = stored_cache(cache_dir)
    (cache_dir / f"{KEY}.json").chmod(loose_mode)
    fetch = CountingFetch()
    with pytest.raises(QmaticConfigError, match=f"{KEY}.json has mode {loose_mode:04o}") as error:
        cache.get_or_fetch(KEY, fetch, min_ttl=60)
    assert_refused(error, cache_dir)
    assert fetch.calls == 0
    with pytest.raises(QmaticConfigError):
        cache.invalidate(KEY, SECRET_TOKEN)


@needs_root
def test_token_file_owned_by_another_user_is_refused(cache_dir: Path) -> None:
    cache = stored_cache(cache_dir)
    os.chown(cache_dir / f"{KEY}.json", NOBODY, NOBODY)
    with pytest.raises(QmaticConfigError, match=f"owned by uid {NOBODY}") as error:
        cache.get_or_fetch(KEY, CountingFetch(), min_ttl=60)
    assert_refused(error, cache_dir)


@needs_root
def test_lock_file_owned_by_another_user_is_refused(cache_dir: Path) -> None:
    cache = stored_cache(cache_dir)
    os.chown(cache_dir / f"{KEY}.lock", NOBODY, NOBODY)
    with pytest.raises(QmaticConfigError, match="lock"):
        cache.get_or_fetch(KEY, CountingFetch(), min_ttl=60)


@pytest.mark.parametrize("name", ["json", "lock"])
def test_symlinked_files_are_refused(cache_dir: Path, tmp_path: Path, name: str) -> None:
    cache = stored_cache(cache_dir)
    target = tmp_path / "elsewhere"
    target.write_text("{}")
    target.chmod(0o600)
    (cache_dir / f"{KEY}.{name}").unlink()
    (cache_dir / f"{KEY}.{name}").symlink_to(target)
    with pytest.raises(QmaticConfigError, match="symbolic link"):
        cache.get_or_fetch(KEY, CountingFetch(), min_ttl=60)


# --- default directory and the no-flock fallback -----------------------------------------------


def test_default_cache_dir_prefers_the_environment_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("QMATIC_TOKEN_CACHE_DIR", str(tmp_path / "configured"))
    assert default_cache_dir() == tmp_path / "configured"
    assert FileTokenCache().directory == tmp_path / "configured"


def test_default_cache_dir_uses_a_private_runtime_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("QMATIC_TOKEN_CACHE_DIR", raising=False)
    runtime = tmp_path / "run-user"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert default_cache_dir() == runtime / "airflow-provider-qmatic"
    runtime.chmod(0o755)  # not private: fall back to the temporary directory, per user
    fallback = default_cache_dir()
    assert fallback.name == f"airflow-provider-qmatic-{os.geteuid()}"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_cache_dir() == fallback


def test_without_flock_the_file_cache_and_the_budget_warn_and_stay_in_the_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(state, "flock_available", lambda: False)
    config = ClientConfig.from_values(
        client_id="c",
        client_secret="s",
        tenant="t",
        region="eu-west-1",
        credential_cache_dir=str(tmp_path / "never"),
    )
    cache = state.token_cache(config)
    assert "per process, in memory" in caplog.text
    fetch = CountingFetch()
    token, _ = cache.get_or_fetch(KEY, fetch, min_ttl=60)
    assert cache.get_or_fetch(KEY, fetch, min_ttl=60) == (token, False)
    cache.invalidate(KEY, token.access_token)
    assert cache.get_or_fetch(KEY, fetch, min_ttl=60)[1]
    state.request_budget(config).acquire()
    state.token_spacing(config, 0.01).wait()
    assert not (tmp_path / "never").exists()
