"""pytest plugin: a Qmatic sandbox for your DAG tests (auto-loaded as the ``qmatic`` plugin).

Fixtures:

* ``qmatic_sandbox`` -- a running sandbox, reset to its seed state for each test, with
  ``AIRFLOW_CONN_QMATIC_DEFAULT`` pointing at it for the duration of the test. It is the
  session's one server (``qmatic_sandbox_server``), so a test costs a reset, not a server start.
* ``qmatic_sandbox_server`` -- that session-scoped server, started on first use.
* ``qmatic_sandbox_settings`` -- the session server's settings; override this fixture in your
  ``conftest.py`` to change them (seed, slot capacity, rate limits, extra clients...).
* ``make_qmatic_sandbox`` -- a factory of extra, private servers with their own settings, stopped
  at the end of the test: ``make_qmatic_sandbox(slot_capacity=5000, requests_per_minute=0)``,
  ``make_qmatic_sandbox(moved_paths={"reserve": "/external/v2/reservations"})`` (the connection it
  sets carries the matching ``endpoints`` extra), ``make_qmatic_sandbox(answer_shape="rich")``.
* ``qmatic_answer_shape`` -- the answer shape of ``qmatic_sandbox`` for a test (None: the session's,
  ``public`` unless changed); parametrize it to run a test in both shapes::

      @pytest.mark.parametrize("qmatic_answer_shape", ["public", "rich"])
      def test_book(qmatic_sandbox): ...

Marker ``@pytest.mark.qmatic_sandbox(**settings)`` -- run-time settings of ``qmatic_sandbox`` for one
test (undone by the next test's reset), e.g. ``require_date_of_birth=True``,
``required_questions=["q1"]``, ``max_reservations={"*": 1}``, ``search_answer="object"``,
``service_combinations=False``, ``combination_branches={"Stockholm City": ["Passport application",
"National ID card"]}``, ``tenant_config={"demo": {...}}``. Paths cannot move at run time: use
``make_qmatic_sandbox``.

This module is imported by every pytest run in an environment that has the provider, so it
imports only pytest at module level; the sandbox (FastAPI, uvicorn) is imported by the fixtures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_qmatic import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow_provider_qmatic.sandbox import SandboxServer, SandboxSettings

_MISSING_EXTRA = (
    "the Qmatic sandbox needs FastAPI and uvicorn: pip install 'airflow-provider-qmatic[sandbox]'"
)


def _start_server(settings: SandboxSettings | None = None, **overrides: Any) -> SandboxServer:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        pytest.fail(_MISSING_EXTRA, pytrace=False)
    from airflow_provider_qmatic.sandbox import SandboxServer

    return SandboxServer(settings, **overrides).start()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "qmatic_sandbox(**settings): run-time settings of the qmatic_sandbox fixture for this test "
        "(answer_shape, search_answer, require_date_of_birth, required_questions, max_reservations, "
        "service_groups, service_combinations, combination_branches, tenant_config, ...)",
    )


def _point_airflow_at(
    monkeypatch: pytest.MonkeyPatch, server: SandboxServer, conn_id: str = DEFAULT_CONN_ID
) -> None:
    for name, value in server.connection_env(conn_id).items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="session")
def qmatic_sandbox_settings() -> SandboxSettings:
    """Settings of the session's sandbox: Qmatic's documented defaults. Override to change them."""
    from airflow_provider_qmatic.sandbox import SandboxSettings

    return SandboxSettings()


@pytest.fixture(scope="session")
def qmatic_sandbox_server(qmatic_sandbox_settings: SandboxSettings) -> Iterator[SandboxServer]:
    """One sandbox for the whole session, on a free loopback port. Not reset between tests."""
    server = _start_server(qmatic_sandbox_settings)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def qmatic_answer_shape() -> str | None:
    """``public`` or ``rich`` for this test's ``qmatic_sandbox``; None keeps the session's shape.
    Parametrize it to run one test in both shapes."""
    return None


@pytest.fixture
def qmatic_sandbox(
    qmatic_sandbox_server: SandboxServer,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    qmatic_answer_shape: str | None,
) -> SandboxServer:
    """The session sandbox, reset (seed data, settings, clock, counters, tokens) for this test,
    then given the test's ``qmatic_sandbox`` marker settings and ``qmatic_answer_shape``, with
    ``AIRFLOW_CONN_QMATIC_DEFAULT`` set to it until the test ends."""
    qmatic_sandbox_server.reset()
    knobs: dict[str, Any] = {}
    # Closest marker last, so a test's own marker wins over its module's or class's.
    for mark in reversed(list(request.node.iter_markers("qmatic_sandbox"))):
        if mark.args:
            pytest.fail("the qmatic_sandbox marker takes settings by keyword only", pytrace=False)
        knobs.update(mark.kwargs)
    if qmatic_answer_shape is not None:
        knobs["answer_shape"] = qmatic_answer_shape
    if knobs:
        try:
            qmatic_sandbox_server.configure(**knobs)
        except ValueError as exc:
            pytest.fail(f"qmatic_sandbox marker: {exc}", pytrace=False)
    _point_airflow_at(monkeypatch, qmatic_sandbox_server)
    return qmatic_sandbox_server


@pytest.fixture
def make_qmatic_sandbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., SandboxServer]]:
    """Factory: ``make_qmatic_sandbox(settings=None, *, conn_id="qmatic_default", set_env=True,
    **overrides)`` starts a private sandbox; it is stopped (and the variable undone) after the test.
    """
    servers: list[SandboxServer] = []

    def factory(
        settings: SandboxSettings | None = None,
        *,
        conn_id: str = DEFAULT_CONN_ID,
        set_env: bool = True,
        **overrides: Any,
    ) -> SandboxServer:
        server = _start_server(settings, **overrides)
        servers.append(server)
        if set_env:
            _point_airflow_at(monkeypatch, server, conn_id)
        return server

    try:
        yield factory
    finally:
        for server in servers:
            server.stop()
