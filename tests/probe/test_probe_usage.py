"""qmatic-probe refuses an unusable connection or command line with exit status 2 and a message
that names what to fix, before any API request."""

from __future__ import annotations

import json

import pytest

from airflow_provider_qmatic.probe import main
from airflow_provider_qmatic.sandbox import SandboxServer
from tests.probe.conftest import conn_json, run_probe

pytestmark = pytest.mark.airflow


def api_requests(sandbox: SandboxServer) -> int:
    return sum(sum(s.values()) for op, s in sandbox.stats()["requests"].items() if op != "token")


def test_missing_connection(
    qmatic_sandbox: SandboxServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = run_probe(capsys, monkeypatch, "--conn-id", "qmatic_nowhere")
    assert run.code == 2
    assert "'qmatic_nowhere' not found" in run.err
    assert "AIRFLOW_CONN_QMATIC_NOWHERE" in run.err
    assert run.out == ""


@pytest.mark.parametrize(
    ("endpoints", "named"),
    [
        ({"reserv": "/x"}, "unknown operation 'reserv'"),
        ({"get": "https://elsewhere.example/appointments/{appointment_id}"}, "endpoints.get"),
        ("{not json", "endpoints is not valid JSON"),
    ],
)
def test_bad_endpoints_extra(
    qmatic_sandbox: SandboxServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    endpoints: object,
    named: str,
) -> None:
    run = run_probe(capsys, monkeypatch, conn=conn_json(qmatic_sandbox.conn_json, endpoints=endpoints))
    assert run.code == 2
    assert named in run.err
    assert "`endpoints` extra" in run.err
    assert api_requests(qmatic_sandbox) == 0


def test_refused_credentials(
    qmatic_sandbox: SandboxServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = json.loads(qmatic_sandbox.conn_json)
    wrong = "not-the-secret-7c1d90aa"
    conn["password"] = wrong
    run = run_probe(capsys, monkeypatch, "--json", conn=json.dumps(conn))
    assert run.code == 2
    assert "airflow connections test qmatic_default" in run.err
    assert wrong not in run.text
    assert run.out == ""
    assert api_requests(qmatic_sandbox) == 0


@pytest.mark.parametrize("days", ["0", "32", "seven"])
def test_bad_days(days: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--days", days])
    assert exit_info.value.code == 2
    assert "--days" in capsys.readouterr().err
