"""A directory that only the current user can touch, and the locked files inside it.

The token cache and the shared rate limiter keep state on the worker's disk. Whoever can write that
state can hand this provider a token of their choosing or stall every task; whoever can read it
holds a live bearer token. So the directory and every file in it are checked on *each* use, not
once: the directory is opened with ``O_NOFOLLOW`` and its owner and mode are read from the open
descriptor (``fstat``), and files are opened relative to that descriptor, so a directory swapped
for a symlink between the check and the use is still caught.

Anything unexpected (another owner, a symlink, group or other permission bits, a file that is not a
regular file) is refused loudly with a :class:`QmaticConfigError`: a tampered cache must stop the
task, not be silently repaired. Files are opened with ``O_NONBLOCK`` as well as ``O_NOFOLLOW``, so a
FIFO or a device planted under a cache file's name is refused at once instead of hanging the task
in ``open``.

A leading ``~`` in the directory is the user's home, wherever the path comes from (the connection's
extra, an environment variable, an operator argument).

Locking is ``fcntl.flock`` on an open descriptor. It exists only on POSIX systems, so ``fcntl`` is
imported lazily and :func:`flock_available` lets the state factory fall back to process-local state.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from airflow_provider_qmatic.exceptions import QmaticConfigError

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
_FIELD = "credential_cache_dir"
CACHE_DIR_ENV = "QMATIC_TOKEN_CACHE_DIR"
# What a file-name stem in these directories may be: no separators, no dots, nothing hidden.
SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")


def flock_available() -> bool:
    """True where ``fcntl.flock`` exists (Linux, macOS, BSD), the precondition of on-disk state."""
    return importlib.util.find_spec("fcntl") is not None


def default_cache_dir() -> Path:
    """Where host-local state lives when the connection names no ``credential_cache_dir``.

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


def write_all(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` at the descriptor's current offset (``os.write`` may be short)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class PrivateDirectory:
    """A directory usable only by the effective user, created mode 0700 if missing.

    :param path: the directory; its parents are created with default permissions if missing.
    :param purpose: what the directory holds, for error messages ("cached OAuth2 tokens").
    """

    def __init__(self, path: str | os.PathLike[str], *, purpose: str) -> None:
        self.path = Path(path).expanduser()
        self.purpose = purpose

    def refuse(self, problem: str) -> QmaticConfigError:
        """The error for an unusable directory: what is wrong and the three ways to fix it."""
        return QmaticConfigError(
            f"refusing to keep {self.purpose} in {self.path}: {problem}. Only the user running the "
            f"task may own and access it. Fix: if it is yours, run `chmod 700 {self.path}` (and "
            "`chmod 600` or delete the files in it); "
            "or choose another directory with the connection's `credential_cache_dir` extra; "
            "or set `credential_cache: memory` to keep tokens in the task process only",
            field=_FIELD,
        )

    @contextmanager
    def opened(self) -> Iterator[int]:
        """Yield a descriptor of the checked directory, creating it (0700) first if it is missing."""
        self._create_if_missing()
        try:
            if stat.S_ISLNK(os.lstat(self.path).st_mode):
                raise self.refuse("it is a symbolic link")
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            raise self.refuse(f"it cannot be opened as a directory ({exc.strerror})") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISDIR(info.st_mode):
                raise self.refuse("it is not a directory")
            self._check_owner_and_mode(info, "the directory")
            yield fd
        finally:
            os.close(fd)

    def open_file(self, dir_fd: int, name: str, flags: int) -> int:
        """Open ``name`` inside the directory (creating it 0600 if ``flags`` has ``O_CREAT``), checked;
        :class:`FileNotFoundError` when it does not exist and ``O_CREAT`` is not given. ``O_NONBLOCK``
        (see the module documentation) is cleared again on the regular file."""
        try:
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK, PRIVATE_FILE_MODE, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self.refuse(f"{name} in it is a symbolic link") from None
            if exc.errno == errno.ENXIO:  # a FIFO without a reader, opened for writing
                raise self.refuse(f"{name} in it is not a regular file (a FIFO)") from None
            if exc.errno == errno.EISDIR:  # a directory, opened for writing
                raise self.refuse(f"{name} in it is not a regular file (a directory)") from None
            raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise self.refuse(f"{name} in it is not a regular file ({kind_of(info.st_mode)})")
            self._check_owner_and_mode(info, name)
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextmanager
    def locked(self, dir_fd: int, name: str) -> Iterator[int]:
        """``name`` inside the directory, opened (created 0600 if missing) and held under an
        exclusive ``flock`` until the block ends.

        Closing releases the lock, so a crashed holder never leaves it stuck. Separate ``os.open``
        calls (even by two threads of one process) get separate file descriptions, which ``flock``
        treats as competitors: it serialises threads as well as processes.
        """
        import fcntl

        fd = self.open_file(dir_fd, name, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)

    def _create_if_missing(self) -> None:
        if os.path.lexists(self.path):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.mkdir(self.path, PRIVATE_DIR_MODE)
        except FileExistsError:  # another process created it first; it is checked like any other
            return
        # The umask may have removed owner bits; it cannot have added group or other bits.
        os.chmod(self.path, PRIVATE_DIR_MODE)

    def _check_owner_and_mode(self, info: os.stat_result, what: str) -> None:
        uid = os.geteuid()
        if info.st_uid != uid:
            raise self.refuse(f"{what} is owned by uid {info.st_uid}, not by this user (uid {uid})")
        loose = stat.S_IMODE(info.st_mode) & 0o077
        if loose:
            raise self.refuse(
                f"{what} has mode {stat.S_IMODE(info.st_mode):04o}, which lets the group or others in "
                f"(bits {loose:04o})"
            )


def kind_of(mode: int) -> str:
    """What a non-regular file is, for a refusal message (here, and for the bulk input)."""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"
