"""Where OAuth2 access tokens live between requests, threads and task processes.

Qmatic's token endpoint takes one request per second per client, and a token lives an hour. An
Airflow worker may start dozens of task processes for one connection at the same moment; without a
shared cache each would fetch its own token and most would be refused with 429. So one process
fetches while the others wait for what it stores: the threads of a process
(:class:`MemoryTokenCache`), every process of the user on the host (:class:`FileTokenCache`, the
default) or every process of the cluster (:class:`RedisTokenCache`, sealed so that Redis read
access yields no token); :func:`airflow_provider_qmatic.state.token_cache` picks one.

Tokens are never logged and never appear in ``repr`` or in error messages. Keys come from
:func:`make_cache_key`, a hash, so file names reveal nothing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Protocol

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

from airflow_provider_qmatic.state._files import (
    SAFE_NAME,
    PrivateDirectory,
    default_cache_dir,
    write_all,
)
from airflow_provider_qmatic.state._redis import RELEASE, RedisLink

log = logging.getLogger(__name__)

_MAX_TOKEN_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class CachedToken:
    """An access token and the wall-clock moment it stops working.

    ``expires_at`` is epoch seconds from :func:`time.time`, so processes can compare it. The token
    itself is left out of ``repr`` (and so of ``str``), which keeps it out of logs and tracebacks.
    Files and Redis entries hold it as JSON (:data:`_STORED`), read strictly: a stored value that
    is not a non-empty token and a finite expiry (torn, foreign, absurdly nested) is a miss.
    """

    __pydantic_config__ = ConfigDict(strict=True, allow_inf_nan=False)

    access_token: Annotated[str, Field(min_length=1)] = field(repr=False)
    expires_at: float

    def ttl(self, now: float | None = None) -> float:
        """Seconds left before expiry at ``now`` (default: the current time); negative once expired."""
        return self.expires_at - (time.time() if now is None else now)


_STORED = TypeAdapter(CachedToken)


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

    :param directory: where to keep tokens; default :func:`default_cache_dir`.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._dir = PrivateDirectory(
            default_cache_dir() if directory is None else directory, purpose="cached OAuth2 tokens"
        )
        self.directory = self._dir.path
        self._key_lock = _KeyLocks()
        with self._dir.opened():  # fail at construction, before any request, if it is unusable
            pass

    def get_or_fetch(
        self, key: str, fetch: Callable[[], CachedToken], *, min_ttl: float
    ) -> tuple[CachedToken, bool]:
        """See :meth:`TokenCache.get_or_fetch`."""
        with self._locked(key) as dir_fd:
            cached = self._read(dir_fd, key)
            if cached is not None and cached.ttl() > min_ttl:
                return cached, False
            token = fetch()
            self._write(dir_fd, key, token)
            return token, True

    def invalidate(self, key: str, access_token: str) -> None:
        """See :meth:`TokenCache.invalidate`."""
        with self._locked(key) as dir_fd:
            cached = self._read(dir_fd, key)
            if cached is not None and cached.access_token == access_token:
                os.unlink(f"{key}.json", dir_fd=dir_fd)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[int]:
        """The directory's descriptor, with the key's thread lock and its file's ``flock`` held."""
        if not SAFE_NAME.fullmatch(key):
            raise ValueError(
                "token cache keys must be 1-128 letters, digits, '_' or '-'; use make_cache_key()"
            )
        with self._key_lock(key), self._dir.opened() as dir_fd, self._dir.locked(dir_fd, f"{key}.lock"):
            yield dir_fd

    def _read(self, dir_fd: int, key: str) -> CachedToken | None:
        try:
            fd = self._dir.open_file(dir_fd, f"{key}.json", os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as handle:
            token = _parse_token(handle.read(_MAX_TOKEN_FILE_BYTES + 1))
        if token is None:
            log.warning(
                "ignoring an unreadable cached Qmatic token in %s; fetching a new one", self.directory
            )
        return token

    def _write(self, dir_fd: int, key: str, token: CachedToken) -> None:
        """Store the token atomically; a failure costs a later refetch, never this call's token."""
        data = _STORED.dump_json(token)
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


# -- in Redis, for every host of the cluster ------------------------------------------------------

# How long a process may hold the Redis token lock; a fetch is bounded well below this (timeouts,
# retries).
TOKEN_LOCK_S = 60.0
TOKEN_POLL_S = 0.05
# KEYS[1] token entry; ARGV[1] the sealed value read. Deletes the entry only if it still holds that
# value (the dead token), never a newer one stored meanwhile.
_DELETE_IF = """
if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# KEYS[1] token lock. This provider always takes the lock with an expiry (SET NX PX); a key there
# without one was left by something else and would be waited on for ever: it is removed.
_CLEAR_IMMORTAL = """
if redis.call('PTTL', KEYS[1]) == -1 then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisTokenCache:
    """Tokens shared by every process on every host (``credential_cache: redis``), sealed.

    The first process to miss takes a lock (``SET NX PX``), fetches and stores; the others poll
    until the token appears. The entry lives as long as the token is usable, so it goes first.

    An entry holds the token encrypted with AES-GCM under a key derived (HKDF-SHA256) from the
    client secret (:meth:`~airflow_provider_qmatic.config.ClientConfig.derived_key`), with the
    entry's name (the cache key: a hash of Qmatic host, tenant, client id, scopes and secret
    fingerprint) as associated data. Whoever can read Redis but does not hold the
    client secret learns no token; an entry copied under another identity's name does not open
    there. An entry that does not open, does not parse, or is not a Redis string is a miss: a
    token is fetched and stored over it, never an error.

    :param link: the Redis to share through (:func:`~._redis.redis_for`).
    :param key: the connection's ``derived_key("token-cache")``.
    """

    def __init__(
        self,
        link: RedisLink,
        *,
        key: bytes,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._link = link
        self._sleep = sleep
        self._aead = AESGCM(key)
        self._release = link.client.register_script(RELEASE)
        self._delete_if = link.client.register_script(_DELETE_IF)
        self._clear_immortal = link.client.register_script(_CLEAR_IMMORTAL)
        # Threads of this process queue here instead of all polling Redis.
        self._key_lock = _KeyLocks()

    def __repr__(self) -> str:
        return f"RedisTokenCache({self._link!r})"

    def get_or_fetch(
        self, key: str, fetch: Callable[[], CachedToken], *, min_ttl: float
    ) -> tuple[CachedToken, bool]:
        """See :meth:`TokenCache.get_or_fetch`.

        Another process's fetch is waited for at most :data:`TOKEN_LOCK_S` (its lock expires then
        anyway); after that this process fetches without the lock, which costs at most one more
        token request.
        """
        entry = RedisLink.key("token", key)
        lock = f"{entry}:lock"
        owner = secrets.token_hex(16)
        with self._key_lock(key), self._link.call("the token cache look-up"):
            deadline = time.monotonic() + TOKEN_LOCK_S
            locked = done_waiting = False
            try:
                while True:
                    cached, _ = self._load(entry)  # once more after the wait: stored in the meantime?
                    if cached is not None and cached.ttl() > min_ttl:
                        return cached, False
                    if done_waiting:
                        break
                    if self._link.client.set(lock, owner, nx=True, px=int(TOKEN_LOCK_S * 1000)):
                        locked = done_waiting = True
                    elif self._clear_immortal(keys=[lock]):
                        log.warning(
                            "removed a Qmatic token lock in Redis at %s that had no expiry (not set by "
                            "this provider); fetching the token",
                            self._link.address,
                        )
                    elif time.monotonic() >= deadline:
                        log.warning(
                            "waited %.0f s for another process's Qmatic token fetch (its lock in Redis at "
                            "%s); fetching without it",
                            TOKEN_LOCK_S,
                            self._link.address,
                        )
                        done_waiting = True
                    else:
                        self._sleep(TOKEN_POLL_S)  # another process is fetching: wait for what it stores
                token = fetch()  # spaced cluster-wide by the token endpoint's Spacing in Redis
                ttl_ms = int(token.ttl() * 1000)
                if ttl_ms > 0:
                    self._link.client.set(entry, self._seal(entry, token), px=ttl_ms)
                return token, True
            finally:
                if locked:
                    self._release(keys=[lock], args=[owner])

    def invalidate(self, key: str, access_token: str) -> None:
        """See :meth:`TokenCache.invalidate`."""
        entry = RedisLink.key("token", key)
        with self._link.call("dropping a refused token"):
            cached, raw = self._load(entry)
            if cached is not None and raw is not None and cached.access_token == access_token:
                self._delete_if(keys=[entry], args=[raw])

    def _load(self, entry: str) -> tuple[CachedToken | None, bytes | None]:
        """The token in ``entry`` and its sealed value; ``(None, None)`` for a miss, whatever the
        reason (absent, not a string, not sealed by this connection's secret for this entry)."""
        from redis.exceptions import ResponseError

        try:
            raw = self._link.client.get(entry)
        except ResponseError as exc:
            if "WRONGTYPE" not in str(exc):
                raise
            log.warning(
                "ignoring a Qmatic token entry in Redis at %s that is not a string", self._link.address
            )
            return None, None
        if raw is None:
            return None, None
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        token = self._open(entry, data)
        if token is None:
            log.warning(
                "ignoring a Qmatic token entry in Redis at %s that this connection cannot open (damaged, "
                "planted, or sealed for another identity); fetching a new token",
                self._link.address,
            )
        return token, data

    def _seal(self, entry: str, token: CachedToken) -> bytes:
        nonce = secrets.token_bytes(12)
        plain = _STORED.dump_json(token)
        sealed = self._aead.encrypt(nonce, plain, _SEAL_VERSION + entry.encode())
        return _SEAL_VERSION + base64.b64encode(nonce + sealed)

    def _open(self, entry: str, raw: bytes) -> CachedToken | None:
        from cryptography.exceptions import InvalidTag

        if not raw.startswith(_SEAL_VERSION):
            return None
        try:
            blob = base64.b64decode(raw[len(_SEAL_VERSION) :], validate=True)
            plain = self._aead.decrypt(blob[:12], blob[12:], _SEAL_VERSION + entry.encode())
        except (InvalidTag, ValueError):
            return None
        return _parse_token(plain)


# The sealed format's version, also part of the associated data.
_SEAL_VERSION = b"qm2:"


def _parse_token(raw: bytes) -> CachedToken | None:
    try:
        return _STORED.validate_json(raw)
    except ValidationError:
        return None
