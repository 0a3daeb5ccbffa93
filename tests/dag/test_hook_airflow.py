"""QmaticHook through Airflow itself: connections from the environment, the CLI connection test,
TaskFlow use, and secret masking. The sandbox is the Qmatic on the other end."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.client.auth import basic_credentials
from airflow_provider_qmatic.exceptions import QmaticConfigError
from airflow_provider_qmatic.sandbox import SandboxServer
from tests.conftest import AIRFLOW_HOME, REPO, run_airflow

pytestmark = pytest.mark.airflow


def conn_env(
    sandbox: SandboxServer, conn_id: str = "qmatic_default", *, replace_extra: bool = False, **changes: Any
) -> dict[str, str]:
    """The sandbox connection as an AIRFLOW_CONN_ variable, with fields changed and extras merged
    (or replaced)."""
    conn = json.loads(sandbox.conn_json)
    extra = changes.pop("extra", None)
    conn.update(changes)
    if extra is not None:
        conn["extra"] = extra if replace_extra else {**conn["extra"], **extra}
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn)}


def api_requests(sandbox: SandboxServer) -> int:
    return sum(sum(by_status.values()) for by_status in sandbox.stats()["requests"].values())


@pytest.mark.lines
def test_cli_connection_test_succeeds(qmatic_sandbox: SandboxServer, airflow_db: Path) -> None:
    result = run_airflow("connections", "test", "qmatic_default", env=conn_env(qmatic_sandbox))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Connection success" in output
    assert qmatic_sandbox.stats()["token_requests"] >= 1
    assert qmatic_sandbox.client_secret not in output


def test_cli_connection_test_fails_clearly_for_wrong_secret(
    qmatic_sandbox: SandboxServer, airflow_db: Path
) -> None:
    wrong = "not-the-secret-0123456789"
    result = run_airflow(
        "connections", "test", "qmatic_default", env=conn_env(qmatic_sandbox, password=wrong)
    )
    output = result.stdout + result.stderr
    assert "Connection failed" in output
    assert "Client Secret" in output
    assert "tenant 'demo'" in output
    assert wrong not in output
    assert basic_credentials(qmatic_sandbox.client_id, wrong) not in output


def test_test_connection_reports_tenant_lifetime_and_scopes(
    qmatic_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    qmatic_sandbox.configure(token_lifetime=1800)
    ok, message = QmaticHook().test_connection()
    assert ok, message
    assert "tenant demo" in message
    assert f"system id {qmatic_sandbox.system_id}" in message
    assert f"base URL {qmatic_sandbox.base_url}" in message
    assert "token valid for 1800 s" in message
    assert "scopes granted: book, reschedule, cancel" in message
    assert "3 branches listed" in message
    # One token per scope, and the read reused the first one instead of asking for another.
    # Counted as tokens granted: on a loaded machine two requests sent 1.1 s apart can still reach
    # the server inside one second, and the hook then rightly retries the 429.
    assert qmatic_sandbox.stats()["requests"]["token"]["200"] == 3
    assert qmatic_sandbox.stats()["api_requests"] == 1


def test_cli_connection_test_fails_clearly_for_wrong_system_id(
    qmatic_sandbox: SandboxServer, airflow_db: Path
) -> None:
    """Tokens do not depend on X-TENANT-ID, so only the test's read can catch a wrong system id."""
    env = conn_env(qmatic_sandbox, extra={"system_id": "another-tenants-id"})
    result = run_airflow("connections", "test", "qmatic_default", env=env)
    output = " ".join((result.stdout + result.stderr).split())  # Airflow 2.11's CLI wraps long lines
    assert "Connection failed" in output, output[-3000:]
    assert "Connection success" not in output
    assert "forbidden_tenant" in output
    assert "System ID 'another-tenants-id'" in output
    assert "set the `system_id` extra (System ID on the form)" in output
    assert qmatic_sandbox.stats()["token_requests"] >= 1
    assert qmatic_sandbox.client_secret not in output


def test_test_connection_names_a_missing_system_id(
    qmatic_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    for name, value in conn_env(qmatic_sandbox, extra={"system_id": ""}).items():
        monkeypatch.setenv(name, value)
    ok, message = QmaticHook().test_connection()
    assert not ok
    assert message.startswith("Credentials accepted by Qmatic"), message
    assert "system_id is missing" in message
    assert "set the `system_id` extra" in message
    assert qmatic_sandbox.stats()["api_requests"] == 0  # the read was not sent without X-TENANT-ID


def test_test_connection_and_errors_name_the_base_url_not_the_prefilled_region(
    qmatic_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The form pre-fills Region; with a Base URL set, the base URL is what is used and named."""
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    for name, value in conn_env(qmatic_sandbox, extra={"region": "us-east-1"}).items():
        monkeypatch.setenv(name, value)
    ok, message = QmaticHook().test_connection()
    assert ok, message
    assert f"base URL {qmatic_sandbox.base_url}" in message
    assert "us-east-1" not in message

    changes = {"password": "not-the-secret-0123456789", "extra": {"region": "us-east-1"}}
    for name, value in conn_env(qmatic_sandbox, **changes).items():
        monkeypatch.setenv(name, value)
    ok, message = QmaticHook().test_connection()
    assert not ok
    assert f"base URL {qmatic_sandbox.base_url}" in message
    assert "us-east-1" not in message


def test_port_must_match_the_url_in_use(
    qmatic_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Port is on the form for Airflow 3.3.2's Test button; a wrong one is an error, not ignored."""
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    sandbox_port = int(qmatic_sandbox.base_url.rsplit(":", 1)[1])
    for name, value in conn_env(qmatic_sandbox, port=sandbox_port).items():
        monkeypatch.setenv(name, value)
    assert QmaticHook().test_connection()[0]

    for name, value in conn_env(qmatic_sandbox, port=443).items():
        monkeypatch.setenv(name, value)
    ok, message = QmaticHook().test_connection()
    assert not ok
    assert f"port 443 is not the port of {qmatic_sandbox.base_url} ({sandbox_port})" in message
    assert f"set the connection's Port to {sandbox_port} or clear it" in message

    region_conn = {"port": 443, "extra": {"base_url": "", "region": "eu-west-1"}}
    for name, value in conn_env(qmatic_sandbox, **region_conn).items():
        monkeypatch.setenv(name, value)
    assert QmaticHook().config.base_url == "https://api.eu-west-1.qmatic.io"


def test_test_connection_explains_a_masked_secret_without_asking_qmatic(
    qmatic_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow 3.3.1's Test button sends the API's '***' mask as the secret of a saved connection."""
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    for name, value in conn_env(qmatic_sandbox, password="***").items():
        monkeypatch.setenv(name, value)
    ok, message = QmaticHook().test_connection()
    assert not ok
    assert "Airflow's mask '***'" in message
    assert "airflow connections test <conn_id>" in message
    assert qmatic_sandbox.stats()["token_requests"] == 0


def test_test_connection_without_secret_says_what_to_do_on_airflow_2(
    qmatic_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Airflow 2.11's edit page shows: its Test button posts the form, whose secret is empty."""
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    for name, value in conn_env(qmatic_sandbox, password=None).items():
        monkeypatch.setenv(name, value)
    ok, message = QmaticHook().test_connection()
    assert not ok
    assert "client_secret is missing" in message
    assert "type the Client Secret again, then press Test" in message
    assert "airflow connections test <conn_id>" in message
    assert qmatic_sandbox.stats()["token_requests"] == 0


def test_test_connection_false_with_reason(
    qmatic_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    for name, value in conn_env(qmatic_sandbox, extra={"tenant": "demo", "region": "mars-1"}).items():
        monkeypatch.setenv(name, value)
    ok, message = QmaticHook().test_connection()
    assert not ok
    assert "region" in message
    assert qmatic_sandbox.stats()["token_requests"] == 0


def test_extras_in_legacy_prefixed_form_and_tenant_normalised(
    qmatic_sandbox: SandboxServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    plain = json.loads(qmatic_sandbox.conn_json)["extra"]
    legacy = {f"extra__qmatic__{k}": v for k, v in plain.items()}
    legacy["extra__qmatic__tenant"] = " DEMO "
    legacy["extra__qmatic__credential_cache"] = "memory"
    for name, value in conn_env(qmatic_sandbox, extra=legacy, replace_extra=True).items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.INFO)
    hook = QmaticHook()
    assert hook.config.tenant == "demo"
    assert hook.config.base_url == qmatic_sandbox.base_url
    assert hook.config.credential_cache == "memory"
    # Airflow 3 logs hooks through structlog to stdout; 2.11 through logging.
    assert "normalised to 'demo'" in caplog.text + capsys.readouterr().out
    assert len(hook.list_branches()) == 3


def test_old_token_cache_key_still_read(
    qmatic_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    for name, value in conn_env(qmatic_sandbox, extra={"token_cache": "memory"}).items():
        monkeypatch.setenv(name, value)
    assert QmaticHook().config.credential_cache == "memory"


def test_host_field_used_when_no_base_url(
    qmatic_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    extra = json.loads(qmatic_sandbox.conn_json)["extra"]
    del extra["base_url"]
    for name, value in conn_env(
        qmatic_sandbox, extra=extra, replace_extra=True, host=qmatic_sandbox.base_url
    ).items():
        monkeypatch.setenv(name, value)
    hook = QmaticHook()
    assert hook.config.base_url == qmatic_sandbox.base_url
    assert len(hook.list_branches()) == 3


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"login": None}, "client_id"),
        ({"password": None}, "client_secret"),
        ({"extra": {"tenant": ""}}, "tenant"),
        ({"extra": {"base_url": "http://qmatic.example.com"}}, "base_url"),
        ({"extra": {"timeout": "soon"}}, "timeout"),
        ({"extra": {"requests_per_minute": "lots"}}, "requests_per_minute"),
        ({"extra": {"system_id": "", "region": "eu-west-1"}}, "system_id"),
    ],
)
def test_bad_connection_fails_before_any_request(
    qmatic_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch, changes: dict[str, Any], field: str
) -> None:
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    for name, value in conn_env(qmatic_sandbox, **changes).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(QmaticConfigError) as info:
        QmaticHook().list_branches()
    assert info.value.field == field
    assert qmatic_sandbox.client_secret not in str(info.value)
    assert api_requests(qmatic_sandbox) == 0
    assert qmatic_sandbox.stats()["token_requests"] == 0


def test_hook_builds_client_once_and_lazily(qmatic_sandbox: SandboxServer) -> None:
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    hook = QmaticHook()
    assert "client" not in hook.__dict__  # nothing built, nothing read, in __init__
    assert hook.get_conn() is hook.client is hook.get_conn()
    for _ in range(4):
        hook.list_branches()
    assert qmatic_sandbox.stats()["token_requests"] == 1
    assert qmatic_sandbox.client_secret not in repr(hook) + repr(hook.client) + repr(hook.config)


def test_taskflow_use_of_the_hook_registers_secrets_and_logs_none(
    qmatic_sandbox: SandboxServer, airflow_db: Path
) -> None:
    env = conn_env(qmatic_sandbox)
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "tests" / "dag" / "dags")
    result = run_airflow("dags", "test", "qmatic_hook_probe", env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "state=success" in output or "success" in output.lower()
    tokens = [t["access_token"] for t in qmatic_sandbox.tokens()]
    assert tokens, "the probe must have fetched a token"
    logs = "".join(
        p.read_text(errors="ignore") for p in (AIRFLOW_HOME / "logs").rglob("*qmatic_hook_probe*/**/*.log")
    )
    secret = qmatic_sandbox.client_secret
    basic = basic_credentials(qmatic_sandbox.client_id, secret)
    for value in (secret, basic, *tokens):
        assert value not in output
        assert value not in logs
    assert "probe listed 3 branches for tenant demo" in output + logs
