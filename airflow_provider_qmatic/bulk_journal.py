"""The bulk runner's journal: what a killed attempt did, for the next attempt to finish cleanly.

Booking is reserve-then-confirm, and rescheduling is reserve-then-move. A reservation holds its slot
for 15 minutes and no API can list reservations (they carry no customer until confirmed), so a task
killed between the two steps would leave the slot held, and a retry could not know. Hence, before
the second step, the runner appends ``row -> reservation id`` to this journal and forces it to disk
(``fsync``); after the step it appends the outcome. The next attempt of the same task instance reads
the journal first: a reservation with no recorded outcome is looked up and then counted as done (it
was confirmed), released (it is still held), or dropped (it expired or was released).

Format: JSON Lines, append-only, one small object per event, never rewritten. A line torn by a kill
is ignored. Entries hold row numbers, a one-way fingerprint of the row (so a reordered input still
matches) and Qmatic ids; no personal data.

The journal is **host-local**: it lives under a private directory (owner-only 0700, files 0600, no
symlinks; the checks of the token cache) on the worker that ran the attempt. A retry on another host
does not see it; there, ``skip_existing`` (on by default for retries) still prevents double
bookings, and a reservation left by the killed attempt simply expires after its hold.

The file is ``flock``-ed for the whole run, so two attempts of one task instance can never use it at
the same time (an attempt still running on this host makes the next one fail fast, retryably).
Files older than :data:`RETENTION_DAYS` in the directory are deleted when a journal is opened.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_qmatic._private_dir import PrivateDirectory, flock_available, write_all
from airflow_provider_qmatic.exceptions import QmaticError

log = logging.getLogger(__name__)

RETENTION_DAYS = 14
JOURNAL_DIR_ENV = "QMATIC_BULK_JOURNAL_DIR"
_SUFFIX = ".jsonl"
_MAX_JOURNAL_BYTES = 256 * 1024 * 1024

RESERVED = "reserved"
DONE = "done"
RELEASED = "released"
EVENTS = frozenset({RESERVED, DONE, RELEASED})


class QmaticJournalBusyError(QmaticError):
    """Another attempt of the same task instance holds the journal on this host: try again later."""

    retryable = True


def journal_name(*, dag_id: str, run_id: str, task_id: str, map_index: int | None = None) -> str:
    """A file name for one task instance's journal: a hash, so names reveal nothing and are safe."""
    key = json.dumps(
        ["qmatic-bulk-journal-v1", dag_id, run_id, task_id, -1 if map_index is None else map_index]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:40] + _SUFFIX


def default_journal_dir(token_cache_dir: str | None = None) -> Path:
    """``$QMATIC_BULK_JOURNAL_DIR``, else ``bulk-journals`` inside the token cache directory."""
    configured = os.environ.get(JOURNAL_DIR_ENV, "").strip()
    if configured:
        return Path(configured)
    from airflow_provider_qmatic.token_cache import default_cache_dir

    base = Path(token_cache_dir) if token_cache_dir else default_cache_dir()
    return base / "bulk-journals"


@dataclass
class JournalState:
    """What earlier attempts recorded: rows done, and reservations whose fate is unknown."""

    done: dict[str, str | None] = field(default_factory=dict)  # fingerprint -> appointment id
    # reservation id -> (fingerprint, row, appointment id it was made for, if any)
    open_reservations: dict[str, tuple[str, int, str | None]] = field(default_factory=dict)
    entries: int = 0


class Journal:
    """An append-only, fsync'd JSON Lines file under a private directory, locked for the run.

    :param path: the journal file; its directory is created 0700 if missing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._dir = PrivateDirectory(self.path.parent, purpose="bulk job journals")
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    def open(self) -> JournalState:
        """Open (creating) and lock the journal, clean up old journals, and read what it holds."""
        if not flock_available():
            raise QmaticError("the bulk journal needs file locks (fcntl.flock), which this system lacks")
        import fcntl

        with self._dir.opened() as dir_fd:
            self._remove_expired(dir_fd)
            fd = self._dir.open_file(dir_fd, self.path.name, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise QmaticJournalBusyError(
                f"the bulk journal {self.path.name} is locked by another attempt of this task that is "
                "still running on this host; wait for it to end"
            ) from None
        self._fd = fd
        return self._read(fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)  # releases the flock
                self._fd = None

    def __enter__(self) -> JournalState:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def record(
        self,
        event: str,
        *,
        fingerprint: str,
        row: int,
        reservation_id: str | None = None,
        appointment_id: str | None = None,
    ) -> None:
        """Append one event and force it to disk before returning."""
        if event not in EVENTS:
            raise ValueError(f"unknown journal event {event!r}")
        entry: dict[str, Any] = {"e": event, "fp": fingerprint, "row": row, "t": round(time.time(), 3)}
        if reservation_id is not None:
            entry["res"] = reservation_id
        if appointment_id is not None:
            entry["appt"] = appointment_id
        data = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fd is None:
                raise QmaticError("the bulk journal is not open")
            write_all(self._fd, data)
            os.fsync(self._fd)

    # -- internals -----------------------------------------------------------------------------

    def _read(self, fd: int) -> JournalState:
        state = JournalState()
        chunks: list[bytes] = []
        offset = 0
        while offset < _MAX_JOURNAL_BYTES:
            chunk = os.pread(fd, 1 << 20, offset)
            if not chunk:
                break
            chunks.append(chunk)
            offset += len(chunk)
        for line in b"".join(chunks).splitlines():
            entry = _parse(line)
            if entry is None:
                continue  # a line torn by a kill, or foreign content
            state.entries += 1
            event, fp, row = entry["e"], entry["fp"], entry["row"]
            reservation_id, appointment_id = entry.get("res"), entry.get("appt")
            if event == RESERVED and isinstance(reservation_id, str):
                appointment = appointment_id if isinstance(appointment_id, str) else None
                state.open_reservations[reservation_id] = (fp, row, appointment)
            elif event == RELEASED and isinstance(reservation_id, str):
                state.open_reservations.pop(reservation_id, None)
            elif event == DONE:
                state.done[fp] = appointment_id if isinstance(appointment_id, str) else None
                if isinstance(reservation_id, str):
                    state.open_reservations.pop(reservation_id, None)
        return state

    def _remove_expired(self, dir_fd: int) -> None:
        cutoff = time.time() - RETENTION_DAYS * 86400
        with contextlib.suppress(OSError):
            for name in _listdir(dir_fd):
                if not name.endswith(_SUFFIX) or name == self.path.name:
                    continue
                with contextlib.suppress(OSError):
                    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    if info.st_mtime < cutoff:
                        os.unlink(name, dir_fd=dir_fd)


def _listdir(dir_fd: int) -> Iterator[str]:
    yield from os.listdir(dir_fd)


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if (
        not isinstance(entry, dict)
        or entry.get("e") not in EVENTS
        or not isinstance(entry.get("fp"), str)
        or not isinstance(entry.get("row"), int)
    ):
        return None
    return entry
