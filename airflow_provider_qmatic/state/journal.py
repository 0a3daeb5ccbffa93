"""The bulk runner's journal: what earlier attempts did, for the next attempt to finish cleanly and cheaply.

The single book and reschedule operators keep one too, as a one-row job (see
``QmaticBaseOperator.journaled``).

Booking is reserve-then-confirm, and rescheduling is reserve-then-move. A reservation holds its slot
for 15 minutes and no API can list reservations (they carry no customer until confirmed), so a task
killed between the two steps would leave the slot held, and a retry could not know. Hence the
runner writes the flow's events down as they happen, each forced to disk (``fsync``) before the
next request: an attempt starts (its try number), a row starts a reserve (``reserving``: also what
the row's one reserve budget is counted from) or a cancel, a reserve's answer was lost, a
reservation was made (``row -> reservation id``), released, or the row ended done or failed.

The next attempt of the same task instance, through the same connection, reads it first (the
name, :func:`journal_name`, holds the connection's identity as well as the task instance's ids):
a reservation with no recorded outcome is settled (done, released, or dropped); rows done are
skipped without a request; and when every earlier attempt ran with this journal, a row with no
record was never started and needs no look-up in Qmatic: only rows *in flight* (a start and no
outcome) do.

Format: JSON Lines, append-only, one small object per event, never rewritten. The first line is a
marker (:data:`MARKER`) that says the runner made the file. A line torn by a kill, or any line that
is not an entry (foreign or absurdly nested JSON), is skipped with a warning naming the line.
Entries hold row numbers, a one-way fingerprint of the row (so a reordered input still matches) and
Qmatic ids; no personal data. The fingerprint is keyed: an HMAC-SHA256 under a key derived from the
client secret (:data:`FINGERPRINTS`), so whoever reads the journal (a Redis reader, a copy of the
file) cannot test guesses of a personal identifier and slot against it, as against a plain hash.
Every attempt of the task derives the same key; each attempt's line names its key (an HMAC of a
fixed text, :func:`key_id`), and a journal whose earlier attempts ran under another key (the secret
was rotated in between) is not taken as complete: its rows are looked up in Qmatic.

The journal is **host-local**: it lives under a private directory (owner-only 0700, files 0600, no
symlinks; the checks of the token cache) on the worker that ran the attempt. A retry on another host
does not see it; there, ``skip_existing`` (on by default for retries) still prevents double
bookings, and a reservation left by the killed attempt simply expires after its hold. With
``credential_cache: redis`` the same lines live in Redis instead
(:class:`RedisJournal`), where a retry on any worker reads them.

A journal of the older naming (task instance ids alone) is not read: nothing says which
connection wrote it. A retry that runs across the upgrade finds no journal and proceeds as a retry
on another host does; the old files go with the retention clean-up below, old Redis lists expire.

The file is ``flock``-ed for the whole run, so two attempts of one task instance can never use it at
the same time (an attempt still running on this host makes the next one fail fast, retryably).
Journals older than :data:`RETENTION_DAYS` in the directory are deleted when a journal is opened;
only files the runner made (named like :func:`journal_name` and starting with :data:`MARKER`) and
that no running attempt holds, so a user's own ``*.jsonl`` in ``journal_dir`` is never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_qmatic.exceptions import (
    QmaticCoordinationError,
    QmaticError,
    QmaticJournalBusyError,
    QmaticJournalSupersededError,
)
from airflow_provider_qmatic.state._files import (
    PrivateDirectory,
    flock_available,
    write_all,
)
from airflow_provider_qmatic.state._redis import RELEASE, RedisLink, digest

if TYPE_CHECKING:
    from airflow_provider_qmatic.config import ClientConfig

log = logging.getLogger(__name__)

RETENTION_DAYS = 14
JOURNAL_DIR_ENV = "QMATIC_BULK_JOURNAL_DIR"
_SUFFIX = ".jsonl"
# What journal_name() makes; with the marker line, how clean-up knows a file is the runner's.
_NAME = re.compile(r"[0-9a-f]{40}\.jsonl")
MARKER = b'{"qmatic_bulk_journal":1}\n'

# The events a flow reports (flows.FlowEvents): a reserve is about to be sent, its answer was lost, a
# reservation was made, the row ended done, a reservation was released, a cancel is about to be sent.
RESERVING, LOST, RESERVED, DONE, RELEASED, CANCELLING = (
    "reserving",
    "lost",
    "reserved",
    "done",
    "released",
    "cancelling",
)
# And the runner's own: an attempt started; a customer update's row started (its search and
# updates); a row ended failed (its state is known: nothing of it is in flight).
ATTEMPT, UPDATING, FAILED = "attempt", "updating", "failed"
# The purpose of the key (ClientConfig.derived_key) that fingerprints rows in journals.
FINGERPRINTS = "bulk-journal-fingerprints"
# How long a Redis journal's lease lives unless renewed: a killed attempt's ends within this.
JOURNAL_LEASE_S = 30.0
EVENTS = frozenset({RESERVING, LOST, RESERVED, DONE, RELEASED, CANCELLING, UPDATING, FAILED})
_STARTS = frozenset({RESERVING, RESERVED, CANCELLING, UPDATING})


def journal_name(
    config: ClientConfig, *, dag_id: str, run_id: str, task_id: str, map_index: int | None = None
) -> str:
    """The name of one task instance's journal *for one connection*: a hash, so names reveal nothing
    and are safe.

    Hashed are the connection's identity (Qmatic host, tenant, system id, client id; never its
    secret) and the task instance's ids. Two deployments or tenants that share a Redis or a journal
    directory run the same DAG under the same scheduled run id; a retry whose templated
    ``qmatic_conn_id`` renders to another tenant has the same ids too. Without the identity each
    would read the other's rows as done and book nobody. A journal of another connection is never
    read here: it has another name.
    """
    key = json.dumps(
        [
            "qmatic-bulk-journal-v2",
            config.base_url,
            config.tenant,
            config.system_id or "",
            config.client_id,
            dag_id,
            run_id,
            task_id,
            -1 if map_index is None else map_index,
        ]
    )
    return hashlib.sha256(key.encode()).hexdigest()[:40] + _SUFFIX


def key_id(key: bytes) -> str:
    """A short name of a fingerprint key, for the journal's attempt lines: reveals nothing of it."""
    return hmac.digest(key, b"qmatic-bulk-journal-key-id", "sha256").hex()[:16]


def default_journal_dir(state_dir: Path) -> Path:
    """``$QMATIC_BULK_JOURNAL_DIR``, else ``bulk-journals`` inside the connection's state directory."""
    configured = os.environ.get(JOURNAL_DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else state_dir / "bulk-journals"


@dataclass
class RowHistory:
    """One row's past in the journal, over every attempt."""

    reserves: int = 0  # reserves sent (or about to be) for it: they draw from its one budget
    # Reserves whose answer was lost, holds nobody can name: those recorded lost, and those an
    # attempt started but never saw answered (it was killed while the request was out).
    lost: int = 0
    in_flight: bool = False  # a write was started and no outcome recorded since
    unanswered: bool = False  # its last reserve has no answer (yet) in the journal


@dataclass
class JournalState:
    """What earlier attempts recorded: rows done, rows in flight, reservations of unknown fate."""

    done: dict[str, str | None] = field(default_factory=dict)  # fingerprint -> appointment id
    # reservation id -> (fingerprint, row, appointment id it was made for, if any)
    open_reservations: dict[str, tuple[str, int, str | None]] = field(default_factory=dict)
    rows: dict[str, RowHistory] = field(default_factory=dict)  # fingerprint -> history
    # attempt number -> the key id its fingerprints were made with (None: not said)
    attempts: dict[int, str | None] = field(default_factory=dict)
    entries: int = 0

    def complete_before(self, attempt: int, key: bytes) -> bool:
        """True if every attempt before ``attempt`` ran with this journal (on this host) and made its
        fingerprints with ``key``, so that a row it shows neither done nor in flight was never
        started: it needs no look-up in Qmatic. Under another key (a rotated secret) no row of
        theirs would be recognised, so none can be said never started."""
        mine = key_id(key)
        return all(self.attempts.get(n, "") == mine for n in range(1, attempt))

    def in_flight(self) -> set[str]:
        return {fp for fp, history in self.rows.items() if history.in_flight}


class Journal(ABC):
    """A task instance's journal: append-only lines, held by one attempt at a time, read by the next.

    What the lines say is decided here, once; where they live is the subclass's: a file on the host
    (:class:`FileJournal`) or a list in Redis (:class:`RedisJournal`).
    """

    name: str  # in messages

    @abstractmethod
    def open(self) -> JournalState:
        """Take the journal for this attempt (or raise QmaticJournalBusyError) and read it."""

    @abstractmethod
    def close(self) -> None:
        """Let the journal go (the next attempt may take it)."""

    def held(self) -> bool:
        """Whether this attempt still holds the journal, checked where it is kept: once False, a newer
        attempt owns the job and this one must write nothing more (no results file either). A
        file's lock lasts as long as the process, so only a lease can be lost."""
        return True

    @abstractmethod
    def _append(self, entry: dict[str, Any]) -> None:
        """Store one entry for good before returning."""

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
        """Append one event and store it for good (``fsync``, or Redis's answer) before returning."""
        if event not in EVENTS:
            raise ValueError(f"unknown journal event {event!r}")
        self._write(e=event, fp=fingerprint, row=row, res=reservation_id, appt=appointment_id)

    def record_attempt(self, attempt: int, *, key: bytes | None = None) -> None:
        """Note that this attempt (the task's try number) runs with the journal, before any request,
        and with which fingerprint ``key`` (its :func:`key_id`), when its rows have fingerprints."""
        self._write(e=ATTEMPT, n=int(attempt), k=None if key is None else key_id(key))

    def _write(self, **fields: object) -> None:
        """Append an entry of the fields given (not None) and the time."""
        entry = {name: value for name, value in fields.items() if value is not None}
        self._append({**entry, "t": round(time.time(), 3)})

    def _state(self, lines: Iterable[tuple[int, bytes | str]]) -> JournalState:
        """What the numbered lines say, wherever they are kept."""
        state = JournalState()
        for number, line in lines:
            entry = _parse(line)
            if entry is None:
                log.warning(
                    "Qmatic bulk journal %s: line %d is not a journal entry (torn by a kill, or foreign "
                    "content); skipped",
                    self.name,
                    number,
                )
                continue
            state.entries += 1
            event = entry["e"]
            if event == ATTEMPT:
                found = entry.get("k")
                state.attempts[entry["n"]] = found if isinstance(found, str) else None
                continue
            fp, row = entry["fp"], entry["row"]
            reservation_id, appointment_id = entry.get("res"), entry.get("appt")
            history = state.rows.setdefault(fp, RowHistory())
            if event in _STARTS:
                history.in_flight = True
            if event == RESERVING:
                history.reserves += 1
                history.lost += history.unanswered  # the one before was never answered
                history.unanswered = True
            elif event in (RESERVED, LOST, DONE, FAILED):
                history.unanswered = False
            if event == LOST:
                history.lost += 1
            elif event == RESERVED and isinstance(reservation_id, str):
                appointment = appointment_id if isinstance(appointment_id, str) else None
                state.open_reservations[reservation_id] = (fp, row, appointment)
            elif event == RELEASED and isinstance(reservation_id, str):
                state.open_reservations.pop(reservation_id, None)
            elif event == DONE:
                history.in_flight = False
                state.done[fp] = appointment_id if isinstance(appointment_id, str) else None
                if isinstance(reservation_id, str):
                    state.open_reservations.pop(reservation_id, None)
            elif event == FAILED:
                history.in_flight = False
        for history in state.rows.values():  # every attempt that wrote these lines has ended
            history.lost += history.unanswered
            history.unanswered = False
        return state


class FileJournal(Journal):
    """An append-only, fsync'd JSON Lines file under a private directory, locked for the run.

    :param path: the journal file (``~`` is the home directory); its directory is created 0700 if
        missing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self.name = self.path.name
        self._dir = PrivateDirectory(self.path.parent, purpose="bulk job journals")
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FileJournal({str(self.path)!r})"

    def open(self) -> JournalState:
        """Open (creating) and lock the journal, clean up old journals, and read what it holds."""
        if not flock_available():
            raise QmaticError("the bulk journal needs file locks (fcntl.flock), which this system lacks")
        import fcntl

        with self._dir.opened() as dir_fd:
            self._remove_expired(dir_fd)
            fd = self._dir.open_file(dir_fd, self.name, os.O_RDWR | os.O_CREAT | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise QmaticJournalBusyError(
                f"the bulk journal {self.name} is locked by another attempt of this task that is "
                "still running on this host; wait for it to end"
            ) from None
        self._fd = fd
        if os.fstat(fd).st_size == 0:
            write_all(fd, MARKER)
            os.fsync(fd)
        return self._read(fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)  # releases the flock
                self._fd = None

    def _append(self, entry: dict[str, Any]) -> None:
        data = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if self._fd is None:
                raise QmaticError("the bulk journal is not open")
            write_all(self._fd, data)
            os.fsync(self._fd)

    def _read(self, fd: int) -> JournalState:
        # Line by line (memory holds a line, not the file), through a duplicate that closing leaves
        # the journal's descriptor open; appends go to the end whatever the offset.
        with os.fdopen(os.dup(fd), "rb") as handle:
            handle.seek(0)
            return self._state(
                (n, line) for n, line in enumerate(handle, 1) if not (n == 1 and line == MARKER)
            )

    def _remove_expired(self, dir_fd: int) -> None:
        """Delete the runner's own journals older than the retention; nothing else, ever: only a
        regular file named like :func:`journal_name`, starting with the marker and not locked by a
        running attempt (a ``BlockingIOError``), opened without following links or waiting on a FIFO."""
        import fcntl

        cutoff = time.time() - RETENTION_DAYS * 86400
        with contextlib.suppress(OSError):
            for name in os.listdir(dir_fd):
                if name == self.name or not _NAME.fullmatch(name):
                    continue
                with contextlib.suppress(OSError):
                    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
                    try:
                        info = os.fstat(fd)
                        old = stat.S_ISREG(info.st_mode) and info.st_mtime < cutoff
                        if old and os.pread(fd, len(MARKER), 0) == MARKER:
                            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                            os.unlink(name, dir_fd=dir_fd)
                    finally:
                        os.close(fd)


# KEYS[1] lease, KEYS[2] list; ARGV[1] owner, ARGV[2] line, ARGV[3] list TTL (ms). Appends only while
# this attempt holds the lease, so an attempt that lost it can never write over its successor.
_APPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
return 1
"""
# KEYS[1] lease; ARGV[1] owner, ARGV[2] lease (ms).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2])) end
return 0
"""


class RedisJournal(Journal):
    """A bulk journal in a Redis list, readable by a retry on any worker.

    The lines and their meaning are those of :class:`Journal`; only the storage differs. A lease
    (``SET NX PX``, renewed by a thread every third of its life) stands for the file lock: a second
    attempt of the same task instance while the first still runs fails fast and retryably; a killed
    attempt's lease runs out within :data:`JOURNAL_LEASE_S` (``lease_s``). Every append is checked
    against the lease inside Redis: an attempt stalled past its lease (frozen, cut off) that wakes
    after another took over writes no line (:class:`QmaticJournalSupersededError`), and
    :meth:`held` says so to the runner, which then writes no results file either. The list expires
    :data:`RETENTION_DAYS` after its last append.
    """

    def __init__(self, link: RedisLink, name: str, *, lease_s: float = JOURNAL_LEASE_S) -> None:
        self.name = name
        self._lease_ms = int(lease_s * 1000)
        self._lost = False  # the lease was found taken or gone: write nothing more
        self._link = link
        self._list = link.key("journal", digest(name))
        self._lease = f"{self._list}:lease"
        self._owner = secrets.token_hex(16)
        self._append_script = link.client.register_script(_APPEND)
        self._renew_script = link.client.register_script(_RENEW)
        self._release_script = link.client.register_script(RELEASE)
        self._open = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"RedisJournal({self.name!r}, address={self._link.address!r})"

    def open(self) -> JournalState:
        """Take the lease and read what earlier attempts wrote."""
        with self._link.call("opening the bulk journal"):
            if not self._link.client.set(self._lease, self._owner, nx=True, px=self._lease_ms):
                raise QmaticJournalBusyError(
                    f"the bulk journal {self.name} in Redis is held by another attempt of this task that "
                    f"is still running (its lease ends within {self._lease_ms / 1000:g} s of its death)"
                )
            lines = self._link.client.lrange(self._list, 0, -1)
        self._open = True
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="qmatic-journal-lease", daemon=True)
        self._renewer.start()
        return self._state(enumerate(lines, 1))

    def close(self) -> None:
        with self._lock:
            if not self._open:
                return
            self._open = False
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        try:
            with self._link.call("closing the bulk journal"):
                self._release_script(keys=[self._lease], args=[self._owner])
        except QmaticCoordinationError as exc:  # the lease then runs out by itself
            log.warning("Qmatic bulk journal: %s", exc.message)

    def _append(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, separators=(",", ":"))
        with self._link.call("writing the bulk journal"):
            written = self._append_script(
                keys=[self._lease, self._list],
                args=[self._owner, line, RETENTION_DAYS * 86400 * 1000],
            )
        if not written:
            self._lost = True
            raise QmaticJournalSupersededError(
                f"this attempt lost the lease on the bulk journal {self.name} in Redis (it ran out while "
                "the attempt was stalled, and another attempt may own the job now); stopping so that "
                "only one attempt writes it"
            )

    def held(self) -> bool:
        """Renew the lease, which succeeds only while it is this attempt's. Redis not answering
        proves nothing: True then, unless the lease was already found lost."""
        if not self._lost:
            try:
                with self._link.call("renewing the bulk journal lease"):
                    self._lost = not self._renew_script(
                        keys=[self._lease], args=[self._owner, self._lease_ms]
                    )
            except QmaticCoordinationError as exc:  # an append reports it if it lasts
                log.warning("Qmatic bulk journal: %s", exc.message)
        return not self._lost

    def _renew(self) -> None:
        while not self._stop.wait(self._lease_ms / 3000) and self.held():
            pass


def _parse(line: bytes | str) -> dict[str, Any] | None:
    try:
        entry = json.loads(line)
    except (ValueError, RecursionError):  # torn, foreign, or nested deeper than the parser goes
        return None
    if not isinstance(entry, dict):
        return None
    if entry.get("e") == ATTEMPT:
        return entry if isinstance(entry.get("n"), int) else None
    if (
        entry.get("e") not in EVENTS
        or not isinstance(entry.get("fp"), str)
        or not isinstance(entry.get("row"), int)
    ):
        return None
    return entry
