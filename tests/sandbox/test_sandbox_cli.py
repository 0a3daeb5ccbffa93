"""The ``qmatic-sandbox`` command: output, a token against it, clean stops, the remote guard,
secrets kept off the command line, and the memory an unauthenticated config change can cost."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from airflow_provider_qmatic.api import contract
from airflow_provider_qmatic.api.contract import ALL_SCOPES, Scope
from airflow_provider_qmatic.sandbox.cli import main, parse_client
from airflow_provider_qmatic.sandbox.settings import derive_system_id

SCRIPT = Path(sys.executable).with_name("qmatic-sandbox")


def command() -> list[str]:
    if SCRIPT.exists():
        return [str(SCRIPT)]
    found = shutil.which("qmatic-sandbox")
    return [found] if found else [sys.executable, "-m", "airflow_provider_qmatic.sandbox"]


class Running:
    def __init__(self, process: subprocess.Popen[str], lines: list[str]) -> None:
        self.process = process
        self.lines = lines

    @property
    def base_url(self) -> str:
        match = re.search(r"listening on (http://\S+)", "\n".join(self.lines))
        assert match, self.lines
        return match.group(1)

    def conn(self, name: str = "AIRFLOW_CONN_QMATIC_DEFAULT") -> dict[str, object]:
        line = next(x for x in self.lines if x.startswith(name + "="))
        value = line.split("=", 1)[1]
        assert value.startswith("'")
        assert value.endswith("'")
        return dict(json.loads(value[1:-1]))


def start(*args: str, env: dict[str, str] | None = None) -> Running:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    process = subprocess.Popen(
        [*command(), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 30
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if line.startswith("Press Ctrl-C"):
            return Running(process, lines)
    process.kill()
    raise AssertionError(f"no start-up banner: {lines} {process.stderr.read() if process.stderr else ''}")


@pytest.fixture
def cli() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(10)


def get_token(base_url: str, conn: dict[str, object]) -> requests.Response:
    import base64

    extra = conn["extra"]
    assert isinstance(extra, dict)
    basic = base64.b64encode(f"{conn['login']}:{conn['password']}".encode()).decode()
    return requests.post(
        base_url + contract.TOKEN.path,
        headers={"Authorization": f"Basic {basic}", "X-ACCOUNT": str(extra["tenant"])},
        data={"grant_type": "client_credentials", "scope": Scope.BOOK.value},
        timeout=10,
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_start_print_token_and_stop(cli: list[Running], sig: signal.Signals) -> None:
    running = start()
    cli.append(running)
    conn = running.conn()
    assert conn["conn_type"] == "qmatic"
    assert conn["login"] == "demo-client"
    extra = conn["extra"]
    assert isinstance(extra, dict)
    assert extra["base_url"] == running.base_url
    assert extra["tenant"] == "demo"
    assert extra["system_id"] == derive_system_id("demo")
    response = get_token(running.base_url, conn)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "X-TENANT-ID": str(extra["system_id"])}
    assert (
        requests.get(running.base_url + contract.BRANCHES.path, headers=headers, timeout=10).status_code
        == 200
    )
    running.process.send_signal(sig)
    assert running.process.wait(15) == 0
    assert running.process.stdout is not None
    assert "stopped" in running.process.stdout.read()


def test_the_demo_secret_is_fixed_by_the_seed(cli: list[Running]) -> None:
    first = start("--seed", "5")
    cli.append(first)
    secret = first.conn()["password"]
    first.process.send_signal(signal.SIGINT)
    first.process.wait(15)
    second = start("--seed", "5")
    cli.append(second)
    assert second.conn()["password"] == secret
    second.process.send_signal(signal.SIGINT)
    assert second.process.wait(15) == 0


def test_clients_system_ids_and_flags(cli: list[Running]) -> None:
    running = start(
        "--client",
        "alpha:se:cr:et:acme:book,cancel",
        "--client",
        "beta:s2:other",
        "--system-id",
        "acme=ACME-SYSTEM-1",
        "--requests-per-minute",
        "6000",
        "--no-retry-after",
        "--token-lifetime",
        "60",
        "--slot-capacity",
        "50",
        "--weeks",
        "1",
        "--fail-rate",
        "0.1",
    )
    cli.append(running)
    conn = running.conn()
    assert conn["login"] == "alpha"
    assert conn["password"] == "se:cr:et"
    assert conn["extra"] == {"tenant": "acme", "system_id": "ACME-SYSTEM-1", "base_url": running.base_url}
    other = running.conn("AIRFLOW_CONN_QMATIC_BETA")
    assert other["password"] == "s2"
    config = requests.get(running.base_url + "/_sandbox/config", timeout=10).json()
    assert config["requests_per_minute"] == 6000
    assert config["retry_after_header"] is False
    assert config["token_lifetime"] == 60
    assert config["slot_capacity"] == 50
    assert config["fail_rate"] == 0.1
    assert config["clients"][0]["scopes"] == sorted([Scope.BOOK.value, Scope.CANCEL.value])
    assert get_token(running.base_url, conn).json()["expires_in"] == 60
    running.process.send_signal(signal.SIGINT)
    assert running.process.wait(15) == 0


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """The exit code and stderr of the command refusing ``argv`` before it serves anything: its
    ``main`` in this process (the tests above start the script itself; an interpreter start per
    refusal would prove nothing more)."""
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--port", "0"])
    code = exited.value.code
    return code if isinstance(code, int) else 1, capsys.readouterr().err


def test_remote_host_needs_allow_remote(capsys: pytest.CaptureFixture[str]) -> None:
    code, stderr = refused(capsys, "--host", "0.0.0.0")
    assert code == 2
    assert "--allow-remote" in stderr
    assert "loopback" in stderr


def test_bad_values_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, stderr = refused(capsys, "--fail-rate", "2")
    assert code == 2
    assert "fail_rate" in stderr


def test_catalogue_prints_the_ids_the_examples_use(qmatic_sandbox: object) -> None:
    """``--catalogue`` prints the seed's branch and service ids (what the quickstart points to)."""
    result = subprocess.run(
        [*command(), "--catalogue"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    printed = set(re.findall(r"(branch|service) ([0-9a-f-]{36})", result.stdout))
    served = qmatic_sandbox.seed()  # type: ignore[attr-defined]
    assert {("branch", b["id"]) for b in served["branches"]} <= printed
    assert ("branch", "e3e70682-c209-4cac-a29f-6fbed82c07cd") in printed  # Stockholm City, seed 0
    assert ("service", "c8a70639-eb11-47b3-a7a9-c3787c65c1e5") in printed  # its Passport application
    other = subprocess.run(
        [*command(), "--catalogue", "--seed", "1"], capture_output=True, text=True, timeout=60, check=False
    )
    assert "e3e70682-c209-4cac-a29f-6fbed82c07cd" not in other.stdout


def test_python_dash_m_help() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_qmatic.sandbox", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "--requests-per-minute" in result.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("id:secret:demo", ("id", "secret", "demo", ALL_SCOPES)),
        ("id:sec:ret:demo", ("id", "sec:ret", "demo", ALL_SCOPES)),
        ("id:secret:demo:book", ("id", "secret", "demo", frozenset({Scope.BOOK}))),
        ("id:s:e:c:demo:book cancel", ("id", "s:e:c", "demo", frozenset({Scope.BOOK, Scope.CANCEL}))),
        (f"id:secret:demo:{Scope.RESCHEDULE.value}", ("id", "secret", "demo", frozenset({Scope.RESCHEDULE}))),
    ],
)
def test_parse_client(text: str, expected: tuple[object, ...]) -> None:
    client = parse_client(text)
    assert (client.client_id, client.client_secret, client.tenant, client.scopes) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("nocolon", "ID:SECRET:TENANT"),
        ("id:onlysecret", "tenant missing"),
        (":secret:demo", "ID:SECRET:TENANT"),
        ("id::demo", "secret"),
        ("id:secret:Bad Tenant!", "tenant"),
    ],
)
def test_parse_client_refuses(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_client(text)


def test_client_secrets_from_a_variable_and_a_file_stay_off_ps_and_the_banner(
    cli: list[Running], tmp_path: Path
) -> None:
    from_env = f"env-secret-{uuid.uuid4().hex}"
    from_file = f"file:secret:{uuid.uuid4().hex}"
    secret_file = tmp_path / "secret"
    secret_file.write_text(from_file + "\n")
    secret_file.chmod(0o600)
    running = start(
        "--client-env",
        "envy:QMATIC_TEST_SECRET:acme:book",
        "--client",
        "plain:visible:acme",
        "--client-file",
        f"filed:{secret_file}:other",
        env={"QMATIC_TEST_SECRET": from_env},
    )
    cli.append(running)
    banner = "\n".join(running.lines)
    with open(f"/proc/{running.process.pid}/cmdline", "rb") as file:
        cmdline = file.read().decode()
    for secret in (from_env, from_file):
        assert secret not in banner
        assert secret not in cmdline
    # Order is kept across the three flags: the first one given is qmatic_default.
    first = running.conn()
    assert first["login"] == "envy"
    assert first["password"] == "<secret from $QMATIC_TEST_SECRET>"
    assert running.conn("AIRFLOW_CONN_QMATIC_PLAIN")["password"] == "visible"
    filed = running.conn("AIRFLOW_CONN_QMATIC_FILED")
    assert filed["password"] == f"<secret in {secret_file}>"
    # The secrets read are the ones the sandbox accepts (the file's trailing newline dropped).
    assert get_token(running.base_url, {**first, "password": from_env}).status_code == 200
    token = get_token(running.base_url, {**filed, "password": from_file})
    assert token.status_code == 200, token.text
    running.process.send_signal(signal.SIGINT)
    assert running.process.wait(15) == 0


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--client-env", "envy:QMATIC_UNSET_SECRET:acme"], {}, "'QMATIC_UNSET_SECRET' is not set or empty"),
        (["--client-env", "envy:QMATIC_EMPTY_SECRET:acme"], {"QMATIC_EMPTY_SECRET": ""}, "not set or empty"),
        (
            ["--client-file", "filed:/nonexistent/secret:acme"],
            {},
            "cannot read the secret from '/nonexistent/secret'",
        ),
        (
            ["--client-env", "envy:QMATIC_BAD_SECRET:acme"],
            {"QMATIC_BAD_SECRET": "bad\tsecret-9f3k"},
            "printable",
        ),
        (["--client-env", "envy"], {}, "ID:VARIABLE:TENANT"),
    ],
    ids=["unset", "empty", "no-file", "unprintable", "malformed"],
)
def test_client_secret_sources_fail_clearly(
    args: list[str],
    env: dict[str, str],
    expected: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("QMATIC_UNSET_SECRET", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code, stderr = refused(capsys, *args)
    assert code == 2
    assert expected in stderr
    assert "secret-9f3k" not in stderr


def test_allow_host_is_answered_and_other_names_are_not(cli: list[Running]) -> None:
    running = start("--allow-host", "sandbox.test")
    cli.append(running)
    assert "answers for Host: loopback names, sandbox.test" in "\n".join(running.lines)
    port = running.base_url.rsplit(":", 1)[1]
    allowed = requests.get(
        running.base_url + "/_sandbox/health", headers={"Host": f"sandbox.test:{port}"}, timeout=10
    )
    assert allowed.status_code == 200
    other = requests.get(
        running.base_url + "/_sandbox/health", headers={"Host": f"rebound.test:{port}"}, timeout=10
    )
    assert other.status_code == 421
    assert other.json()["error"] == "misdirected_request"
    running.process.send_signal(signal.SIGINT)
    assert running.process.wait(15) == 0


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as file:
        line = next(x for x in file if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def test_an_unauthenticated_config_change_cannot_grow_the_process(cli: list[Running]) -> None:
    """At c67c2ae one POST of seed-shaping settings grew the sandbox from 57 MB to 3.2 GB. Now every
    such POST is refused naming the field, and the largest accepted configuration stays small."""
    running = start()
    cli.append(running)
    pid = running.process.pid
    config_url = running.base_url + "/_sandbox/config"
    session = requests.Session()
    session.trust_env = False
    before = _rss_mib(pid)
    hostile = [
        ({"weeks": 520, "branch_count": 12, "open_hour": 0, "close_hour": 24}, "weeks"),
        ({"weeks": 104, "branch_count": 12}, "branch_count, weeks"),
        ({"max_body_bytes": 2**40}, "max_body_bytes"),
        ({"slot_capacity": 10**12}, "slot_capacity"),
    ]
    for changes, field in hostile:
        response = session.post(config_url, json=changes, timeout=120)
        assert response.status_code == 400, response.text
        assert response.json()["message"].startswith(field)
    huge = session.post(
        config_url,
        data=b"{" + b" " * (50 * 1024 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
        timeout=120,
    )
    assert huge.status_code == 413
    refused = _rss_mib(pid)
    assert refused - before < 50, (before, refused)
    # The largest seed the bound admits, built twice (old and new store overlap during a rebuild).
    for seed in (1, 2):
        largest = {"seed": seed, "weeks": 7, "branch_count": 12, "open_hour": 0, "close_hour": 24}
        assert session.post(config_url, json=largest, timeout=300).status_code == 200
    largest_rss = _rss_mib(pid)
    assert largest_rss < 400, (before, refused, largest_rss)
    print(
        f"sandbox RSS: start {before:.0f} MiB, after refused POSTs {refused:.0f} MiB, largest seed {largest_rss:.0f} MiB"
    )
    running.process.send_signal(signal.SIGINT)
    assert running.process.wait(30) == 0


def test_answer_path_and_tenant_flags(cli: list[Running]) -> None:
    """The second-edition flags reach the running sandbox: shape, search answer, a moved path (the
    printed connection carries it as ``endpoints``), required fields, caps and service groups."""
    running = start(
        "--client",
        "alpha:secret-a:acme",
        "--client",
        "beta:secret-b:other",
        "--answer-shape",
        "rich",
        "--search-answer",
        "object",
        "--move-path",
        "reserve=/external/v2/reservations",
        "--require-date-of-birth",
        "--required-question",
        "q1",
        "--max-reservations",
        "*=3",
        "--max-reservations",
        "Passport application=1",
        "--service-group",
        "Identity=Passport application,c8a70639-eb11-47b3-a7a9-c3787c65c1e5",
        "--tenant-config",
        'other={"require_date_of_birth": false, "required_questions": []}',
    )
    cli.append(running)
    assert any("rich shape" in line for line in running.lines)
    conn = running.conn()
    extra = conn["extra"]
    assert isinstance(extra, dict)
    assert extra["endpoints"] == {"reserve": "/external/v2/reservations"}
    config = requests.get(running.base_url + "/_sandbox/config", timeout=10).json()
    assert config["answer_shape"] == "rich"
    assert config["search_answer"] == "object"
    assert config["moved_paths"] == {"reserve": "/external/v2/reservations"}
    assert config["require_date_of_birth"] is True
    assert config["required_questions"] == ["q1"]
    assert config["max_reservations"] == {"*": 3, "Passport application": 1}
    assert config["service_groups"] == {
        "Identity": ["Passport application", "c8a70639-eb11-47b3-a7a9-c3787c65c1e5"]
    }
    assert config["tenant_config"] == {"other": {"require_date_of_birth": False, "required_questions": []}}
    seed = requests.get(running.base_url + "/_sandbox/seed", timeout=10).json()
    assert seed["paths"]["reserve"] == "POST /external/v2/reservations"
    token = get_token(running.base_url, conn).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "X-TENANT-ID": str(extra["system_id"])}
    old = requests.post(running.base_url + contract.RESERVE.path, json={}, headers=headers, timeout=10)
    assert old.status_code == 404
    new = requests.post(running.base_url + "/external/v2/reservations", json={}, headers=headers, timeout=10)
    assert new.status_code == 400  # served there: the empty body is refused, naming a field
    running.process.send_signal(signal.SIGTERM)
    assert running.process.wait(15) == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--move-path", "reserve"], "--move-path 'reserve': write it as KEY=VALUE"),
        (["--move-path", "reserv=/x"], "unknown operation"),
        (["--max-reservations", "*=many"], "N must be a whole number"),
        (["--tenant-config", "demo={oops"], "not valid JSON"),
        (["--tenant-config", 'demo={"seed": 1}'], "unknown setting"),
        (["--answer-shape", "full"], "invalid choice"),
        (["--service-group", "Ghost=No such service"], "no seeded service"),
    ],
)
def test_second_edition_flags_fail_clearly(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, stderr = refused(capsys, *args)
    assert code in (1, 2), stderr
    assert expected in stderr
