"""Hostile connections, read by QmaticHook from an ``AIRFLOW_CONN_QMATIC_DEFAULT`` variable exactly
as a task would read them: each is refused before any request, naming the field, quoting no secret.
The awkward-but-valid ones (colons or unicode in the secret, a tenant typed with spaces and
capitals) must work."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_provider_qmatic.exceptions import QmaticConfigError
from airflow_provider_qmatic.sandbox import SandboxClient, SandboxServer
from tests.hostile.conftest import (
    COLON,
    PLAIN,
    UNICODE,
    assert_no_secret,
    assert_untouched,
    conn_json,
    requests_made,
)

pytestmark = pytest.mark.airflow

NO_BASE = ("tenant", "system_id", "requests_per_minute")  # the extras kept when base_url is removed


def _without_base_url(server: SandboxServer, **extra: Any) -> dict[str, Any]:
    import json

    kept = json.loads(conn_json(server))["extra"]
    kept.pop("base_url")
    return {**kept, **extra}


@dataclass(frozen=True)
class Case:
    """A connection change, the field the error must name, and values the message must not show."""

    id: str
    field: str
    fields: dict[str, Any] = field(default_factory=dict)  # login/password/host/port/extra...
    extra: dict[str, Any] | None = None  # merged into the sandbox extras
    replace_extra: Any = None  # replaces the extras entirely (any JSON value)
    drop_base_url: bool = False  # remove base_url so region/host decide the URL
    drop: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()  # values that must not appear in the message
    says: str = ""  # a phrase the message must contain


CASES = [
    # -- missing or empty -----------------------------------------------------------------------------
    Case("login-missing", "client_id", drop=("login",), says="is missing"),
    Case("login-empty", "client_id", fields={"login": "   "}, says="is missing"),
    Case("password-missing", "client_secret", drop=("password",), says="is missing"),
    Case("password-empty", "client_secret", fields={"password": ""}, says="is missing"),
    Case("extra-missing", "tenant", drop=("extra",), says="tenant is missing"),
    Case("extra-empty-object", "tenant", replace_extra={}, says="tenant is missing"),
    Case("tenant-empty", "tenant", extra={"tenant": ""}, says="tenant is missing"),
    Case("system-id-empty", "system_id", extra={"system_id": ""}, says="system_id is missing"),
    Case("no-region-no-url", "region", drop_base_url=True, says="region is missing"),
    # -- wrong types ------------------------------------------------------------------------------------
    Case("extra-is-a-list", "extra", replace_extra=["tenant", "demo"], says="JSON object"),
    Case("extra-is-a-number", "extra", replace_extra=42, says="JSON object"),
    Case("tenant-a-number", "tenant", extra={"tenant": 42}, says="must be text"),
    Case("tenant-a-list", "tenant", extra={"tenant": ["demo"]}, says="must be text"),
    Case("tenant-an-object", "tenant", extra={"tenant": {"name": "demo"}}, says="must be text"),
    Case("region-a-list", "region", drop_base_url=True, extra={"region": ["eu-west-1"]}),
    Case("timeout-a-list", "timeout", extra={"timeout": [30]}, says="must be a number"),
    Case("timeout-true", "timeout", extra={"timeout": True}, says="not true/false"),
    Case("rpm-text", "requests_per_minute", extra={"requests_per_minute": "lots"}),
    Case("rpm-zero", "requests_per_minute", extra={"requests_per_minute": 0}, says="at least 1"),
    Case("timeout-over-350", "timeout", extra={"timeout": 3600}, says="at most 350"),
    # -- bounds: a value that would make every call fail or a task wait forever ---------------------------
    Case("rpm-tiny", "requests_per_minute", extra={"requests_per_minute": 1e-300}, says="at least 1"),
    Case("rpm-tiny-text", "requests_per_minute", extra={"requests_per_minute": "1e-300"}, says="at least 1"),
    Case("rpm-half", "requests_per_minute", extra={"requests_per_minute": 0.5}, says="at least 1"),
    Case("rpm-nan", "requests_per_minute", extra={"requests_per_minute": "NaN"}),
    Case("rpm-infinite", "requests_per_minute", extra={"requests_per_minute": "inf"}, says="at most"),
    Case("rpm-huge", "requests_per_minute", extra={"requests_per_minute": 1e12}, says="at most"),
    Case("timeout-tiny", "timeout", extra={"timeout": 0.001}, says="at least 1"),
    Case("timeout-nan", "timeout", extra={"timeout": "nan"}),
    Case("timeout-infinite", "timeout", extra={"timeout": "Infinity"}, says="at most 350"),
    # -- Basic authentication cannot carry a ':' in the id (it ends the id) ------------------------------
    Case("login-with-colon", "client_id", fields={"login": "hostile:plain"}, says="':'"),
    Case("base-url-a-number", "base_url", extra={"base_url": 8080}),
    # -- region and base URL: where the credentials would go -----------------------------------------
    Case("region-with-slash", "region", drop_base_url=True, extra={"region": "eu-west-1/../evil"}),
    Case("region-a-host", "region", drop_base_url=True, extra={"region": "evil.example.com"}),
    Case("region-host-suffix", "region", drop_base_url=True, extra={"region": "eu-west-1.evil.example.com"}),
    Case("region-unknown", "region", drop_base_url=True, extra={"region": "mars-1"}, says="eu-west-1"),
    Case("url-http-remote", "base_url", extra={"base_url": "http://qmatic.example.com"}, says="https"),
    Case("url-http-lookalike", "base_url", extra={"base_url": "http://127.0.0.1.evil.example.com"}),
    Case("url-http-localhost-suffix", "base_url", extra={"base_url": "http://localhost.evil.example.com"}),
    Case("url-ftp", "base_url", extra={"base_url": "ftp://qmatic.example.com"}),
    Case("url-no-scheme-no-host", "base_url", extra={"base_url": "https://"}),
    Case(
        "url-userinfo",
        "base_url",
        extra={"base_url": "https://admin:hunter2-URLPASS@qmatic.example.com"},
        hidden=("hunter2-URLPASS",),
        says="user name or password",
    ),
    Case(
        "url-userinfo-loopback",
        "base_url",
        extra={"base_url": "http://user:loopPASS-123@127.0.0.1:8080"},
        hidden=("loopPASS-123",),
    ),
    Case("url-port-0", "base_url", extra={"base_url": "https://qmatic.example.com:0"}),
    Case("url-port-too-big", "base_url", extra={"base_url": "https://qmatic.example.com:99999"}),
    Case("url-port-text", "base_url", extra={"base_url": "https://qmatic.example.com:https"}),
    Case("url-with-path", "base_url", extra={"base_url": "https://qmatic.example.com/api/v1"}, says="path"),
    Case("url-with-query", "base_url", extra={"base_url": "https://qmatic.example.com/?x=1"}),
    Case("url-with-fragment", "base_url", extra={"base_url": "https://qmatic.example.com#frag"}),
    Case(
        "host-http-remote",
        "base_url",
        drop_base_url=True,
        fields={"host": "http://qmatic.example.com"},
        says="https",
    ),
    Case("host-with-path", "base_url", drop_base_url=True, fields={"host": "qmatic.example.com/api"}),
    Case(
        "host-port-too-big",
        "base_url",
        drop_base_url=True,
        fields={"host": "qmatic.example.com", "port": 70000},
    ),
    # -- control characters: copy-paste slips -----------------------------------------------------------
    Case(
        "secret-with-newline",
        "client_secret",
        fields={"password": "FIRSTHALF-secret\nSECONDHALF-secret"},
        hidden=("FIRSTHALF-secret", "SECONDHALF-secret"),
        says="line break",
    ),
    Case(
        "secret-with-cr",
        "client_secret",
        fields={"password": "CRHALF-secret\rOTHERHALF-secret"},
        hidden=("CRHALF-secret", "OTHERHALF-secret"),
    ),
    Case(
        "secret-with-nul",
        "client_secret",
        fields={"password": "NULHALF-secret\x00TAILHALF-secret"},
        hidden=("NULHALF-secret", "TAILHALF-secret"),
    ),
    Case("login-with-newline", "client_id", fields={"login": "hostile-plain\nX-Injected: 1"}),
    Case("tenant-with-slash", "tenant", extra={"tenant": "de/mo"}),
    Case("tenant-with-newline", "tenant", extra={"tenant": "demo\r\nX-Injected: 1"}),
    Case("system-id-with-slash", "system_id", extra={"system_id": "../other-tenant"}),
    Case("system-id-with-newline", "system_id", extra={"system_id": "abc\nX-Injected: 1"}),
    Case("language-unknown", "language", extra={"language": "klingon"}),
]


def _connection(server: SandboxServer, case: Case) -> str:
    import json

    if case.replace_extra is not None:
        conn = json.loads(conn_json(server, drop=case.drop, **case.fields))
        conn["extra"] = case.replace_extra
        return json.dumps(conn)
    extra = case.extra
    if case.drop_base_url:
        return conn_json(
            server,
            extra=_without_base_url(server, **(extra or {})),
            replace_extra=True,
            drop=case.drop,
            **case.fields,
        )
    return conn_json(server, extra=extra, drop=case.drop, **case.fields)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_connection_is_refused_before_any_request(
    server: SandboxServer, use_conn: Any, case: Case
) -> None:
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    use_conn(_connection(server, case))
    with pytest.raises(QmaticConfigError) as info:
        QmaticHook().list_branches()
    error = info.value
    message = str(error)
    assert error.field == case.field, message
    assert case.field.lower() in message.lower(), message
    assert case.says in message, message
    assert_untouched(server)
    assert_no_secret(message + repr(error), *case.hidden)


def test_extra_that_is_not_json_is_named_as_such(server: SandboxServer, use_conn: Any) -> None:
    """Extra text that is not JSON at all. Airflow's ``extra_dejson`` logs the decode error and
    hands back ``{}``, so a hook that reads ``extra_dejson`` can only say "tenant is missing",
    sending the user to the wrong field."""
    import json

    conn = json.loads(conn_json(server))
    conn["extra"] = '{"tenant": "demo", "base_url": oops}'
    use_conn(json.dumps(conn))
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    with pytest.raises(QmaticConfigError) as info:
        QmaticHook().list_branches()
    assert_untouched(server)
    assert_no_secret(str(info.value))
    assert info.value.field == "extra", str(info.value)
    assert "not valid JSON" in str(info.value)


def test_unknown_credential_cache_names_the_extra_the_user_set(server: SandboxServer, use_conn: Any) -> None:
    """The form and the docs call the extra ``credential_cache``; the error must name that one."""
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    use_conn(conn_json(server, extra={"credential_cache": "redis"}))
    with pytest.raises(QmaticConfigError) as info:
        QmaticHook().list_branches()
    assert_untouched(server)
    assert "credential_cache" in str(info.value), str(info.value)


# -- awkward but valid: these must work ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client", "tenant"),
    [
        pytest.param(COLON, "demo", id="secret-with-colons"),
        pytest.param(UNICODE, "demo", id="secret-in-unicode"),
        pytest.param(PLAIN, " De Mo ", id="tenant-spaces-and-capitals"),
        pytest.param(PLAIN, "DEMO", id="tenant-capitals"),
    ],
)
def test_awkward_but_valid_connection_works(
    server: SandboxServer, use_conn: Any, client: SandboxClient, tenant: str
) -> None:
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    use_conn(conn_json(server, client, extra={"tenant": tenant}))
    hook = QmaticHook()
    branches = hook.list_branches()
    assert len(branches) == 3
    assert hook.config.tenant == "demo"
    assert requests_made(server) == {"token": {"200": 1}, "branches": {"200": 1}}
    issued = server.tokens()
    assert len(issued) == 1
    assert issued[0]["client_id"] == client.client_id
    assert_no_secret(repr(hook) + repr(hook.client) + repr(hook.config), server=server)
