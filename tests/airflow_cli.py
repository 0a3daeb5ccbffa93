"""The ``airflow`` CLI for tests, without paying Airflow's import on every command.

Each ``airflow`` process spends most of its CPU (7-8 s of 9-11 on 2 cores) importing Airflow before
it reads its arguments. Here one helper process per test process (the "zygote", this file run as a
script) imports Airflow once, exactly as the console script does, and then does nothing but wait;
for each command it forks a child, which applies the command's environment, points its stdout and
stderr at files, redoes the configuration steps Airflow takes at import time that read the
environment (``settings.initialize``'s variables, logging, secrets masker, ORM), and runs
``airflow.__main__.main()``, the console script's own entry point, with the command's argv.

Why a separate process and not the test process itself (or a fork of it): the zygote has run no
test code, so a child starts from the state a fresh ``airflow`` process has after its imports, with
no secrets already known to the masker, no ``Stats`` client, no provider caches, no tokens, no
OpenLineage client, no logging set up by a test; and whatever the command changes dies with the
child. The zygote is single-threaded, so forking it is safe (the test process runs the sandbox in a
thread). Exit codes are the process's: ``SystemExit`` as Python maps it, an uncaught exception's
traceback on stderr and 1; the interpreter's exit is replayed in its order (non-daemon threads
joined, then atexit functions), and what the import printed opens the command's output.

A command whose environment changes what Airflow reads while it is imported runs as a real process:
where it finds its configuration and database (``AIRFLOW_HOME``, ``AIRFLOW_CONFIG``; the suite's
``db migrate`` of its template home), and ``[metrics]`` (the StatsD tests), whose backend both lines
choose at import (2.11 when ``airflow.stats`` is imported, 3.2+ when ``airflow.sdk.serde`` is), so a
child would need each line's private hooks re-run to honour it. So does every command when
``QMATIC_TEST_AIRFLOW_PROCESS=1`` is set: ``make test-lines`` sets it (scripts/test_lines.py), so the
console script itself, interpreter start and all, is still run on every supported Airflow line.

A command that outlives its ``timeout`` has its threads' stacks dumped into its stderr (faulthandler
on SIGUSR1), printed with its output, then is killed: a hang shows where it hung.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REAL_PROCESS = "QMATIC_TEST_AIRFLOW_PROCESS"
# Environment that Airflow reads while it is imported, so a child of the zygote could not honour a
# change: where the configuration and database are (airflow.configuration), and [metrics], whose
# backend is chosen when airflow.stats (2.11) or airflow.sdk.serde (3.2+) is imported.
READ_AT_IMPORT = ("AIRFLOW_HOME", "AIRFLOW_CONFIG", "AIRFLOW__METRICS__")


def airflow_bin() -> str:
    """The ``airflow`` console script of the interpreter running the tests."""
    return str(Path(sys.executable).with_name("airflow"))


def _read_at_import(env: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name.startswith(READ_AT_IMPORT)}


class Zygote:
    """The client side: starts the zygote on first use, one command at a time (a lock)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self.imported_with: dict[str, str] = {}

    def _started(self) -> subprocess.Popen[str]:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [sys.executable, __file__],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=dict(os.environ),
            )
            self.imported_with = _read_at_import(os.environ)
            atexit.register(self.close)
        return self._process

    def can_run(self, env: dict[str, str]) -> bool:
        """Whether a child of the zygote would see ``env`` as Airflow's import did."""
        return _read_at_import(env) == (self.imported_with if self._process else _read_at_import(os.environ))

    def run(self, args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
        with self._lock, tempfile.TemporaryDirectory(prefix="airflow-cli-") as tmp:
            out, err = Path(tmp, "stdout"), Path(tmp, "stderr")
            process = self._started()
            assert process.stdin is not None
            assert process.stdout is not None
            request = {"args": args, "env": env, "stdout": str(out), "stderr": str(err)}
            process.stdin.write(json.dumps(request) + "\n")
            process.stdin.flush()
            child = json.loads(process.stdout.readline())["pid"]
            timed_out = threading.Event()

            def kill() -> None:  # its threads' stacks first (faulthandler, see _child), then gone
                timed_out.set()
                _kill(child, signal.SIGUSR1)
                time.sleep(1)
                _kill(child)

            timer = threading.Timer(timeout, kill)
            timer.start()
            try:
                answer = process.stdout.readline()
            except BaseException:  # pytest-timeout, Ctrl-C: no child or answer left for the next run
                _kill(child)
                process.kill()
                process.wait()
                raise
            finally:
                timer.cancel()
            if not answer:
                raise RuntimeError(f"the Airflow CLI zygote died running {args}")
            output = out.read_text(errors="backslashreplace"), err.read_text(errors="backslashreplace")
            if timed_out.is_set():
                print(f"airflow {' '.join(args)} timed out; its output:", *output, sep="\n")
                raise subprocess.TimeoutExpired([airflow_bin(), *args], timeout, *output)
            return subprocess.CompletedProcess(
                [airflow_bin(), *args],
                json.loads(answer)["returncode"],
                *output,
            )

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()  # the zygote exits at end of input
            self._process.wait(timeout=30)


def _kill(pid: int, signum: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


_zygote = Zygote()


def run_airflow(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``airflow *args`` with the test environment plus ``env``: stdout, stderr and exit code as the
    console script gives them (a forked child of the zygote; a real process where noted above)."""
    full_env = {**os.environ, **(env or {})}
    if os.environ.get(REAL_PROCESS) == "1" or not _zygote.can_run(full_env):
        return subprocess.run(
            [airflow_bin(), *args], capture_output=True, text=True, env=full_env, timeout=timeout, check=False
        )
    return _zygote.run(list(args), full_env, timeout)


# -- the zygote -----------------------------------------------------------------------------------


def _child(request: dict[str, Any], import_output: dict[int, bytes]) -> int:
    """In the forked child: become ``airflow *args`` with the request's environment; its exit code."""
    os.environ.clear()
    os.environ.update(request["env"])
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
        os.write(fd, import_output[fd])  # what the process would have printed while importing
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)  # noqa: SIM115
    sys.argv = ["airflow", *request["args"]]
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a stuck command's stacks on timeout
    try:
        from airflow import settings

        # What `import airflow` did in the zygote, again with this command's environment: the
        # variables (DAGS_FOLDER...), logging (now to these stdout/stderr), the masker's settings,
        # a fresh ORM engine (the fork's inherited one is disposed by Airflow's at-fork hook).
        settings.configure_vars()
        settings.configure_logging()
        if hasattr(settings, "_configure_secrets_masker"):
            settings._configure_secrets_masker()
        settings.configure_orm()

        from airflow.__main__ import main

        main()
        code = 0
    except SystemExit as stop:  # as the interpreter maps it
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    # The interpreter's own exit, in its order: wait for non-daemon threads (which also shuts down
    # concurrent.futures pools), then the atexit functions (multiprocessing joins its children).
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            stream.flush()
    return code


def _serve() -> None:
    """Import Airflow as the console script does (what that prints kept for each child's output),
    then fork one child per request line on stdin; answers on stdout."""
    home = os.environ.get("AIRFLOW_HOME", "~/airflow")
    if not Path(os.environ.get("AIRFLOW_CONFIG", f"{home}/airflow.cfg")).expanduser().exists():
        # A first command writes the default config (a new fernet key among it) and later processes
        # read it at import; so the zygote imports after that has happened, as a later process would.
        config_get = [airflow_bin(), "config", "get-value", "core", "executor"]
        subprocess.run(config_get, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    answers = os.fdopen(os.dup(1), "w")
    saved_stderr = os.dup(2)
    import_output = {}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        import airflow.__main__  # noqa: F401  (the console script's module: Airflow, its config, its CLI)

        sys.stdout.flush()
        sys.stderr.flush()
        for fd, captured in ((1, out), (2, err)):
            captured.seek(0)
            import_output[fd] = captured.read()
    os.dup2(saved_stderr, 2)
    os.dup2(saved_stderr, 1)  # nothing more is expected on stdout; never mixed with the answers
    requests = sys.stdin
    for line in requests:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            os._exit(_child(request, import_output))
        answers.write(json.dumps({"pid": pid}) + "\n")
        answers.flush()
        _, status = os.waitpid(pid, 0)
        answers.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}) + "\n")
        answers.flush()


if __name__ == "__main__":
    _serve()
