"""Where OAuth2 access tokens live between requests, threads and task processes.

Qmatic's token endpoint takes one request per second per client, and a token lives an hour. An
Airflow worker may start dozens of task processes for one connection at the same moment; without a
shared cache each would fetch its own token and most would be refused with 429. So:

- :class:`MemoryTokenCache` shares tokens between the threads of one process (``credential_cache:
  memory``); each task process still fetches its own token.
- :class:`FileTokenCache` shares tokens between all processes of one user on one host
  (``credential_cache: file``, the default): a per-key ``flock`` makes exactly one of them fetch while the
  others wait and then read what it stored.

Both implement :class:`TokenCache`. Tokens are never logged and never appear in ``repr`` or in
error messages. Keys come from :func:`make_cache_key`, a hash, so file names reveal nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from airflow_provider_qmatic.state._files import (
    SAFE_NAME,
    PrivateDirectory,
    flock_available,
    lock_exclusive,
    write_all,
)

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "QMATIC_TOKEN_CACHE_DIR"
_MAX_TOKEN_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class CachedToken:
    """An access token and the wall-clock moment it stops working.

    ``expires_at`` is epoch seconds from :func:`time.time`, so processes can compare it. The token
    itself is left out of ``repr`` (and so of ``str``), which keeps it out of logs and tracebacks.
    """

    access_token: str = field(repr=False)
    expires_at: float

    def ttl(self, now: float | None = None) -> float:
        """Seconds left before expiry at ``now`` (default: the current time); negative once expired."""
        return self.expires_at - (time.time() if now is None else now)


class TokenCache(Protocol):
    """What the auth module needs from a token cache."""

    def get_or_fetch(
        self, key: str, fetch: Callable[[], CachedToken], *, min_ttl: float
    ) -> tuple[CachedToken, bool]:
        """Return a cached token for key whose ttl > min_ttl, else call fetch() and store its result.

        fetch() runs exactly once among all concurrent callers of the same key (threads of this
        process and, for the file cache, other processes on the host); the others wait and get its
        result. If fetch() raises, nothing is stored and the error propagates to this caller only.
        The bool is True when fetch() was called by THIS call.
        """
        ...

    def invalidate(self, key: str, access_token: str) -> None:
        """Drop the entry for key if it still holds this access_token (a 401 showed it is dead).

        A newer token, stored meanwhile by another thread or process, is never dropped.
        """
        ...


def make_cache_key(
    *, base_url: str, tenant: str, client_id: str, scopes: str, secret_fingerprint: str
) -> str:
    """A filename-safe key: the SHA-256 hex of the parts, so no identifier or secret shows in a name.

    Scopes are compared as a set (order and repeated spaces do not matter); a rotated client secret
    (a new fingerprint) gets a new key, so a token of the old secret is never reused.
    """
    canonical_scopes = " ".join(sorted(set(scopes.split())))
    parts = ["qmatic-token-v1", base_url.rstrip("/"), tenant, client_id, canonical_scopes, secret_fingerprint]
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()


def default_cache_dir() -> Path:
    """The directory :class:`FileTokenCache` uses when none is given.

    ``$QMATIC_TOKEN_CACHE_DIR`` if set; else ``$XDG_RUNTIME_DIR/airflow-provider-qmatic`` when that
    runtime directory exists and is private to this user (it is a tmpfs cleared at logout, the
    ideal home for secrets); else ``airflow-provider-qmatic-<uid>`` in the system temporary directory.
    The uid in the name keeps users apart; the permission checks catch a directory planted there by
    someone else.
    """
    configured = os.environ.get(CACHE_DIR_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    runtime = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    if runtime and _is_private_dir(runtime):
        return Path(runtime) / "airflow-provider-qmatic"
    user = str(os.geteuid()) if hasattr(os, "geteuid") else "user"
    return Path(tempfile.gettempdir()) / f"airflow-provider-qmatic-{user}"


def _is_private_dir(path: str) -> bool:
    if not hasattr(os, "geteuid"):  # not POSIX: no owner-only directories to rely on
        return False
    try:
        info = os.stat(path)
    except OSError:
        return False
    return (
        stat.S_ISDIR(info.st_mode) and info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & 0o077 == 0
    )


class _KeyLocks:
    """One :class:`threading.Lock` per key, so fetching one key never blocks another."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def __call__(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


class MemoryTokenCache:
    """Tokens in a dict, shared by the threads of one process.

    A per-key lock around check-fetch-store makes concurrent callers of one key wait for a single
    fetch; the dict itself needs no further lock because each key's entry is only touched under
    that key's lock.
    """

    def __init__(self) -> None:
        self._tokens: dict[str, CachedToken] = {}
        self._key_lock = _KeyLocks()

    def get_or_fetch(
        self, key: str, fetch: Callable[[], CachedToken], *, min_ttl: float
    ) -> tuple[CachedToken, bool]:
        """See :meth:`TokenCache.get_or_fetch`."""
        with self._key_lock(key):
            cached = self._tokens.get(key)
            if cached is not None and cached.ttl() > min_ttl:
                return cached, False
            token = fetch()
            self._tokens[key] = token
            return token, True

    def invalidate(self, key: str, access_token: str) -> None:
        """See :meth:`TokenCache.invalidate`."""
        with self._key_lock(key):
            cached = self._tokens.get(key)
            if cached is not None and cached.access_token == access_token:
                del self._tokens[key]


class FileTokenCache:
    """Tokens in files of a private directory, shared by every process of this user on this host.

    Layout, per key: ``<key>.json`` holds ``{"access_token": ..., "expires_at": ...}`` (mode 0600,
    replaced atomically through a temporary file, so a reader never sees half a token) and
    ``<key>.lock`` (0600) is the ``flock`` target. The lock cannot live on the token file itself
    because ``os.replace`` gives the token a new inode on every write.

    Every call takes the thread lock of the key, then the exclusive ``flock``, and only then reads,
    checks, fetches if needed and writes. Always locking is the simple correct choice: with a token
    cached, the critical section is a small file read. The waiting of other processes is bounded by
    the fetch, which is an HTTP call with a timeout.

    The directory must be 0700 and owned by this user, and every file 0600 and owned by this user;
    anything else raises :class:`~airflow_provider_qmatic.exceptions.QmaticConfigError`. An
    unreadable or corrupt token file is a miss and is overwritten.

    Where ``flock`` does not exist (Windows) this cache warns once and keeps tokens in memory.

    :param directory: where to keep tokens; default :func:`default_cache_dir`.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._dir = PrivateDirectory(
            default_cache_dir() if directory is None else directory, purpose="cached OAuth2 tokens"
        )
        self._key_lock = _KeyLocks()
        self._memory: MemoryTokenCache | None = None
        if not flock_available():
            log.warning(
                "file locks (fcntl.flock) are unavailable on this system: Qmatic tokens are cached in "
                "memory per process instead of in %s",
                self._dir.path,
            )
            self._memory = MemoryTokenCache()
            return
        with self._dir.opened():  # fail at construction, before any request, if it is unusable
            pass

    @property
    def directory(self) -> Path:
        """The directory holding the token files."""
        return self._dir.path

    def get_or_fetch(
        self, key: str, fetch: Callable[[], CachedToken], *, min_ttl: float
    ) -> tuple[CachedToken, bool]:
        """See :meth:`TokenCache.get_or_fetch`."""
        if self._memory is not None:
            return self._memory.get_or_fetch(key, fetch, min_ttl=min_ttl)
        _check_key(key)
        with self._key_lock(key), self._dir.opened() as dir_fd:
            lock_fd = self._dir.open_file(dir_fd, f"{key}.lock", os.O_RDWR | os.O_CREAT)
            try:
                lock_exclusive(lock_fd)
                cached = self._read(dir_fd, key)
                if cached is not None and cached.ttl() > min_ttl:
                    return cached, False
                token = fetch()
                self._write(dir_fd, key, token)
                return token, True
            finally:
                os.close(lock_fd)

    def invalidate(self, key: str, access_token: str) -> None:
        """See :meth:`TokenCache.invalidate`."""
        if self._memory is not None:
            self._memory.invalidate(key, access_token)
            return
        _check_key(key)
        with self._key_lock(key), self._dir.opened() as dir_fd:
            lock_fd = self._dir.open_file(dir_fd, f"{key}.lock", os.O_RDWR | os.O_CREAT)
            try:
                lock_exclusive(lock_fd)
                cached = self._read(dir_fd, key)
                if cached is not None and cached.access_token == access_token:
                    os.unlink(f"{key}.json", dir_fd=dir_fd)
            finally:
                os.close(lock_fd)

    def _read(self, dir_fd: int, key: str) -> CachedToken | None:
        try:
            fd = self._dir.open_file(dir_fd, f"{key}.json", os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as handle:
            raw = handle.read(_MAX_TOKEN_FILE_BYTES + 1)
        try:
            data = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError):  # torn, foreign or absurdly nested content
            log.warning(
                "ignoring an unreadable cached Qmatic token in %s; fetching a new one", self.directory
            )
            return None
        if not isinstance(data, dict):
            return None
        token, expires_at = data.get("access_token"), data.get("expires_at")
        if (
            not isinstance(token, str)
            or not token
            or not isinstance(expires_at, (int, float))
            or isinstance(expires_at, bool)
            or not math.isfinite(expires_at)
        ):
            log.warning("ignoring a malformed cached Qmatic token in %s; fetching a new one", self.directory)
            return None
        return CachedToken(access_token=token, expires_at=float(expires_at))

    def _write(self, dir_fd: int, key: str, token: CachedToken) -> None:
        """Store the token atomically; a failure costs a later refetch, never this call's token."""
        data = json.dumps({"access_token": token.access_token, "expires_at": token.expires_at}).encode()
        temp = f".{key}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = self._dir.open_file(dir_fd, temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
            os.replace(temp, f"{key}.json", src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            log.warning(
                "could not store the Qmatic token in %s (%s); other processes will fetch their own",
                self.directory,
                exc.strerror,
            )
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp, dir_fd=dir_fd)


def _check_key(key: str) -> None:
    if not SAFE_NAME.fullmatch(key):
        raise ValueError("token cache keys must be 1-128 letters, digits, '_' or '-'; use make_cache_key()")
