"""Hostile files where the provider keeps state on the worker: a FIFO or a directory planted under a
token-cache, limiter or journal file name is refused at once with a clear error (never a task hung
in ``open``), and a ``~`` in the configured directories means the user's home.

No network: the caches and the journal are driven directly, as the client and the runner use them.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.exceptions import QmaticConfigError
from airflow_provider_qmatic.state._files import default_cache_dir
from airflow_provider_qmatic.state.budget import RateLimiter
from airflow_provider_qmatic.state.journal import FileJournal, default_journal_dir
from airflow_provider_qmatic.state.tokens import CachedToken, FileTokenCache

KEY = "a" * 64
# Generous: the refusal is immediate; the margin only keeps a loaded machine from failing the test.
PATIENCE_S = 20.0


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True)
    os.chmod(path, 0o700)
    return path


def plant_fifo(path: Path) -> Path:
    os.mkfifo(path, 0o600)
    return path


def outcome_within(call: Callable[[], Any], fifo: Path) -> BaseException | Any:
    """Run ``call`` in a thread; if it is still blocked after PATIENCE_S, unblock it (open the FIFO's
    other end) and fail: a task must never wait on a planted FIFO."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # handed to the test thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(PATIENCE_S)
    if thread.is_alive():
        deadline = time.monotonic() + 5
        while thread.is_alive() and time.monotonic() < deadline:
            for flags in (os.O_WRONLY | os.O_NONBLOCK, os.O_RDONLY | os.O_NONBLOCK):
                with contextlib.suppress(OSError):
                    os.close(os.open(fifo, flags))
            thread.join(0.2)
        pytest.fail(f"blocked for {PATIENCE_S:.0f} s on the FIFO planted at {fifo.name}")
    return box.get("error", box.get("value"))


def fetch() -> CachedToken:
    return CachedToken(access_token="fresh-token", expires_at=time.time() + 3600)


def test_a_fifo_in_place_of_the_token_file_is_refused_without_blocking(tmp_path: Path) -> None:
    directory = private_dir(tmp_path / "tokens")
    cache = FileTokenCache(directory)
    fifo = plant_fifo(directory / f"{KEY}.json")

    error = outcome_within(lambda: cache.get_or_fetch(KEY, fetch, min_ttl=60), fifo)

    assert isinstance(error, QmaticConfigError), error
    assert "not a regular file (a FIFO)" in str(error)
    assert f"{KEY}.json" in str(error)


@pytest.mark.parametrize("name", [f"{KEY}.lock", f"{KEY}.json"])
def test_a_directory_in_place_of_a_token_file_is_refused(tmp_path: Path, name: str) -> None:
    directory = private_dir(tmp_path / "tokens")
    cache = FileTokenCache(directory)
    private_dir(directory / name)
    with pytest.raises(QmaticConfigError, match="not a regular file"):
        cache.get_or_fetch(KEY, fetch, min_ttl=60)


def test_a_fifo_in_place_of_the_limiter_state_is_refused_without_blocking(tmp_path: Path) -> None:
    directory = private_dir(tmp_path / "limits")
    limiter = RateLimiter(6000, shared_dir=directory, key="tenant")
    fifo = plant_fifo(directory / "tenant.bucket")

    error = outcome_within(limiter.acquire, fifo)

    assert isinstance(error, QmaticConfigError), error
    assert "tenant.bucket in it is not a regular file (a FIFO)" in str(error)


def test_a_fifo_in_place_of_the_journal_is_refused_without_blocking(tmp_path: Path) -> None:
    directory = private_dir(tmp_path / "journals")
    fifo = plant_fifo(directory / ("b" * 40 + ".jsonl"))
    journal = FileJournal(fifo)

    error = outcome_within(journal.open, fifo)
    journal.close()

    assert isinstance(error, QmaticConfigError), error
    assert "not a regular file (a FIFO)" in str(error)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("HOME", str(path))
    monkeypatch.chdir(tmp_path)
    return path


def test_tilde_in_the_credential_cache_dir_is_the_home_directory(home: Path, tmp_path: Path) -> None:
    cache = FileTokenCache("~/qmatic-cache")

    token, fetched = cache.get_or_fetch(KEY, fetch, min_ttl=60)

    assert fetched
    assert token.access_token == "fresh-token"
    assert cache.directory == home / "qmatic-cache"
    assert (home / "qmatic-cache" / f"{KEY}.json").is_file()
    assert not (tmp_path / "~").exists()


def test_tilde_in_the_cache_environment_variable_and_the_limiter_dir(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QMATIC_TOKEN_CACHE_DIR", "~/from-env")
    assert default_cache_dir() == home / "from-env"
    limiter = RateLimiter(6000, shared_dir="~/limits", key="tenant")
    limiter.acquire()
    assert (home / "limits" / "tenant.bucket").is_file()
    assert not (tmp_path / "~").exists()


def test_tilde_in_the_journal_dir_is_the_home_directory(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QMATIC_BULK_JOURNAL_DIR", "~/journals")
    assert default_journal_dir(tmp_path) == home / "journals"
    journal = FileJournal("~/journals/" + "c" * 40 + ".jsonl")
    with journal:
        pass
    assert journal.path == home / "journals" / ("c" * 40 + ".jsonl")
    assert journal.path.is_file()
    assert not (tmp_path / "~").exists()
