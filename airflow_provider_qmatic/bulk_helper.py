"""A second process that validates every other row of a big input file, on the machine's other core.

Validating a row is CPU work (the models' rules, about 25 µs a row), and one Python process uses one
core: a million-row file took 30-45 s. Above :data:`MIN_FILE_BYTES`, when this process may use two
CPUs or more, :meth:`BulkRunner.prepare <airflow_provider_qmatic.bulk.BulkRunner.prepare>`
starts a helper (:func:`main`, in a new Python process). Both read the whole file; the
helper validates the even-numbered rows and writes one line per row, ``number TAB dedupe key TAB
customer TAB error``; the runner validates the odd ones itself and takes the helper's lines in
order, so duplicates are found exactly as one process finds them.

The helper is only ever a speed-up, never a second opinion: it runs the task's own row parser (it
refuses to run another installed copy of this package) on the same file with the same settings,
and if it cannot start, dies, falls out of step with the task's row numbers, is silent for
:data:`STALL_S` or writes anything unexpected, the task stops it and validates the rest of its rows
itself. It is given the file's path and the job's settings, never credentials; what it sends back
goes only through a pipe to the task: dedupe keys (hashes), customers' personal identifiers (which
the task reads from the same file anyway) and validation messages, which never quote a value. It
is a subprocess, not :mod:`multiprocessing`, because Celery's pool processes may not have children
of their own, and no fork of a process with threads is made.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

# The helper must run the task's own copy of this package: it checks that it was imported from
# here. (Putting this on the helper's PYTHONPATH instead could let site-packages shadow the stdlib.)
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
# The helper's program. ``-c`` (like ``-m``) puts the working directory first on sys.path, where a
# stray json.py or a checkout of this package would shadow the real ones: it is dropped first.
_HELPER_COMMAND = (
    "import sys; del sys.path[0]; from airflow_provider_qmatic.bulk_helper import main; sys.exit(main())"
)
# Below this, starting a second Python (about 0.4 s) costs more than it saves.
MIN_FILE_BYTES = 8 * 1024 * 1024
# A helper silent this long while the runner waits for its next row is taken for stuck: it
# validates some 40,000 rows a second, and starts in well under a second even on a busy machine.
STALL_S = 30.0

RowResult = tuple[str, str | None, str | None]  # (dedupe key, customer, "") or ("", None, error)


# Where Linux control groups cap this process's CPU time (a Kubernetes pod's CPU limit): version 2
# writes "quota period" (or "max period") in one file, version 1 in two.
CGROUP_CPU_FILES = (
    ("/sys/fs/cgroup/cpu.max",),
    ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us"),
)


def _cpus() -> float:
    """The CPUs this process may use: the ones it may run on, less any CPU-time quota (a pod with
    a limit of one CPU sees all of its node's CPUs, and two processes there would share one)."""
    try:
        count: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    for files in CGROUP_CPU_FILES:
        try:
            fields = " ".join(Path(name).read_text() for name in files).split()
            quota, period = float(fields[0]), float(fields[1])
        except (OSError, ValueError, IndexError):  # absent, "max" (no quota) or unreadable
            continue
        if quota > 0 and period > 0:
            count = min(count, quota / period)
    return count


class HelperValidation:
    """The runner's side: start the helper, take its result for each of its rows, stop it."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process: subprocess.Popen[bytes] | None = process
        self._out: IO[bytes] | None = process.stdout
        self._buffer = b""
        self._at = 0

    @classmethod
    def start(
        cls,
        *,
        action: str,
        path: Path,
        column_map: Mapping[str, str] | None,
        max_rows: int,
        timezone: str | None,
    ) -> HelperValidation | None:
        """A running helper for ``path``, or None when one would not help or cannot start."""
        try:
            if _cpus() < 2 or not sys.executable or path.stat().st_size < MIN_FILE_BYTES:
                return None
            process = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed program, no shell
                [sys.executable, "-c", _HELPER_COMMAND],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        except OSError as exc:
            log.info("validating on one core: no helper process (%s)", type(exc).__name__)
            return None
        settings = {
            "package": _PACKAGE_ROOT,
            "action": action,
            "path": os.fspath(path),
            "column_map": dict(column_map or {}),
            "max_rows": max_rows,
            "timezone": timezone,
        }
        helper = cls(process)
        try:
            assert process.stdin is not None
            process.stdin.write(json.dumps(settings).encode())
            process.stdin.close()
        except OSError:  # it has already exited
            code = helper.close()
            log.warning("the validation helper stopped at its start (exit code %s); validating here", code)
            return None
        return helper

    @staticmethod
    def owns(number: int) -> bool:
        return number % 2 == 0

    def take(self, number: int) -> RowResult | None:
        """The helper's result for row ``number`` (one of its rows), or None if it has stopped
        (the caller then validates the row itself, as it does every row after)."""
        if self._out is None:
            return None
        line = self._line(self._out.fileno())
        try:
            shown, dedupe, customer, error = line.decode().rstrip("\n").split("\t")
            if int(shown) != number:
                raise ValueError("out of step")
            if error:
                message = json.loads(error)
                if not isinstance(message, str):
                    raise ValueError("not a message")
                return "", None, message
            if not dedupe:
                raise ValueError("no key")
            return dedupe, customer or None, ""
        except (ValueError, RecursionError):  # EOF, an error exit, or not our output: do the rest here
            code = self.close()
            log.warning(
                "the validation helper stopped at row %d (exit code %s); validating the rest here",
                number,
                code,
            )
            return None

    def _line(self, fd: int) -> bytes:
        """The next line, or b"" at the end or when the helper has written nothing for
        :data:`STALL_S` (a stuck helper must not hold the task)."""
        end = self._buffer.find(b"\n", self._at)
        while end < 0:
            ready, _, _ = select.select([fd], [], [], STALL_S)
            chunk = os.read(fd, 1 << 16) if ready else b""
            if not chunk:
                return b""
            self._buffer = self._buffer[self._at :] + chunk
            self._at = 0
            end = self._buffer.find(b"\n")
        line, self._at = self._buffer[self._at : end + 1], end + 1
        return line

    def close(self) -> int | None:
        """Stop the helper (a no-op once stopped); its exit code."""
        process, self._process, self._out = self._process, None, None
        if process is None:
            return None
        if process.poll() is None:
            process.kill()
        if process.stdout is not None:
            process.stdout.close()
        return process.wait()


def main() -> int:
    """The helper's side: validate the even rows of the file the runner names on stdin."""
    try:
        return _validate_even_rows()
    except BrokenPipeError:  # the runner stopped listening
        return 1


def _validate_even_rows() -> int:
    from airflow_provider_qmatic.bulk import _row_parser, _validation_text
    from airflow_provider_qmatic.bulk_io import load_rows
    from airflow_provider_qmatic.exceptions import QmaticValidationError
    from airflow_provider_qmatic.models import resolve_timezone

    settings: dict[str, Any] = json.loads(sys.stdin.buffer.read())
    if settings["package"] != _PACKAGE_ROOT:  # another installed copy: not the task's code
        return 3
    action = settings["action"]
    loaded = load_rows(
        settings["path"], action=action, column_map=settings["column_map"], max_rows=settings["max_rows"]
    )
    parse = _row_parser(action, resolve_timezone(settings["timezone"]))
    out = sys.stdout.buffer
    for number, flat in loaded:
        if not HelperValidation.owns(number):
            continue
        try:
            item, dedupe = parse(number, flat)
            line = f"{number}\t{dedupe}\t{item.customer or ''}\t\n"
        except QmaticValidationError as exc:
            line = f"{number}\t\t\t{json.dumps(_validation_text(exc))}\n"
        out.write(line.encode())
    out.flush()
    return 0
