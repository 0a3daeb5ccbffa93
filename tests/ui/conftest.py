"""Fixtures for the UI tests: a throwaway Airflow API server (Airflow 3) or webserver (Airflow 2)
and a headless Chromium driving it.

Run by ``make test-ui`` (which sets ``QMATIC_UI_TESTS=1``, installs Debian's Chromium and the
``playwright`` package). Nothing here runs, or even imports Playwright, in the normal ``pytest`` run:
the test module skips itself, so these session fixtures are never set up.

The server gets its OWN ``AIRFLOW_HOME`` in a temporary directory (the suite-wide one in
``tests/conftest.py`` is for in-process Airflow), its own SQLite database (a copy of the one the
suite migrated, when there is one) and a free loopback port.
Airflow 3's API server runs the simple auth manager with every user an admin (no login page);
Airflow 2's webserver runs its FAB auth manager with one admin user (``WEBSERVER_USER``), because its
REST API, which the Test button calls, refuses anonymous users even with a public role. It is killed, with its whole
process group, when the session ends, also when a test failed; the temporary directory goes with it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

import pytest
import requests

from tests.conftest import HOMES

ENABLE_VAR = "QMATIC_UI_TESTS"
CHROMIUM = os.environ.get("QMATIC_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google services, which this kind of
# closed network refuses; the profile is a fresh empty directory (Playwright passes --user-data-dir).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
STARTUP_TIMEOUT = 120.0
UI_TIMEOUT_MS = 20_000
AIRFLOW = str(Path(sys.executable).with_name("airflow"))  # the console script of this venv
AIRFLOW_2 = version("apache-airflow").startswith("2.")
WEBSERVER_USER = ("admin", "admin-ui-test-password")


def pytest_configure(config: pytest.Config) -> None:
    # pyproject runs pytest with --strict-markers; the marker is registered here, next to its tests.
    config.addinivalue_line(
        "markers", "ui: drives a real Airflow API server with headless Chromium (make test-ui only)"
    )


def ui_tests_enabled() -> bool:
    return os.environ.get(ENABLE_VAR) == "1"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class ApiServer:
    """A running ``airflow api-server`` and the environment it was started with."""

    url: str
    env: dict[str, str]
    home: Path
    log: Path

    def airflow(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run the Airflow CLI against the server's own home and database."""
        return subprocess.run(
            [AIRFLOW, *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def token(self) -> str:
        """A JWT from the simple auth manager's no-credentials endpoint (all-admins mode only)."""
        response = requests.get(f"{self.url}/auth/token", timeout=10)
        assert response.status_code in (200, 201), f"GET /auth/token: {response.status_code} {response.text}"
        return str(response.json()["access_token"])

    def get_json(self, path: str) -> Any:
        response = requests.get(
            f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token()}"}, timeout=30
        )
        assert response.status_code == 200, f"GET {path}: {response.status_code} {response.text[:2000]}"
        return response.json()


def _server_env(work: Path) -> dict[str, str]:
    """The parent's environment minus every Airflow setting, plus the server's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    home = work / "airflow-home"
    dags = work / "dags"
    home.mkdir()
    dags.mkdir()
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )
    if AIRFLOW_2:
        env["AIRFLOW__WEBSERVER__SECRET_KEY"] = os.urandom(16).hex()
    else:
        env["AIRFLOW__CORE__AUTH_MANAGER"] = SIMPLE_AUTH_MANAGER
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] = "True"
    return env


@pytest.fixture(scope="session")
def ui_workdir() -> Iterator[Path]:
    """One temporary directory for the server's home, its log and Chromium's profile."""
    path = Path(tempfile.mkdtemp(prefix="qmatic-ui-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (uvicorn and its workers), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="session")
def api_server(ui_workdir: Path) -> Iterator[ApiServer]:
    """``airflow db migrate`` then ``airflow api-server`` (Airflow 3) or ``airflow webserver``
    (Airflow 2, with its admin user) on a free loopback port, until the session ends."""
    env = _server_env(ui_workdir)
    port = _free_port()
    server = ApiServer(
        url=f"http://127.0.0.1:{port}", env=env, home=Path(env["AIRFLOW_HOME"]), log=ui_workdir / "server.log"
    )
    # The suite's database, migrated by this venv's Airflow, when a test run left one (.ci/run runs
    # the suites first): copying it saves the half minute a migration takes.
    template = HOMES / "template"
    if (template / ".migrated").exists():
        shutil.copyfile(template / "airflow.db", server.home / "airflow.db")
    else:
        migrated = server.airflow("db", "migrate", timeout=300)
        if migrated.returncode != 0:
            pytest.fail(f"airflow db migrate failed:\n{migrated.stdout[-3000:]}\n{migrated.stderr[-3000:]}")
    if AIRFLOW_2:
        user, password = WEBSERVER_USER
        created = server.airflow(
            "users", "create", "--role", "Admin", "--username", user, "--password", password,
            "--firstname", "UI", "--lastname", "Test", "--email", "ui-test@example.com",
        )  # fmt: skip
        if created.returncode != 0:
            pytest.fail(f"airflow users create failed:\n{created.stdout[-3000:]}\n{created.stderr[-3000:]}")
        command = ["webserver", "--hostname", "127.0.0.1", "--port", str(port), "--workers", "1"]
        health = "/health"
    else:
        command = ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        health = "/api/v2/monitor/health"

    log: IO[bytes] = server.log.open("wb")
    proc = subprocess.Popen(
        [AIRFLOW, *command],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, so teardown reaches every worker
    )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                pytest.fail(f"airflow {command[0]} exited with {proc.returncode}:\n{_tail(server.log)}")
            try:
                if requests.get(f"{server.url}{health}", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"airflow {command[0]} not healthy after {STARTUP_TIMEOUT:.0f} s:\n{_tail(server.log)}"
                )
            time.sleep(0.5)
        yield server
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="session")
def browser(ui_workdir: Path) -> Iterator[Any]:
    """A headless Debian Chromium driven by Playwright (a persistent context on a fresh profile)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} not found: install it with `apt-get install -y chromium` (make test-ui does), "
            "or point QMATIC_CHROMIUM at a Chromium binary"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the `playwright` package is missing: `make test-ui` installs it into .venv")

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(ui_workdir / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 2000},
        )
        context.set_default_timeout(UI_TIMEOUT_MS)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A new tab per test."""
    tab = browser.new_page()
    try:
        yield tab
    finally:
        tab.close()
