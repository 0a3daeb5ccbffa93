"""Ids from the server are checked before they go into a URL path: an appointment id that would
change the path (``../``, ``/``, ``%2e``, spaces, ...) fails the row it came with as an unexpected
answer from Qmatic, never the whole run as a configuration error, and is never sent anywhere.

A scripted loopback server plays the misbehaving Qmatic (the sandbox only issues GUIDs).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_qmatic.bulk.runner import FAILED, SUCCEEDED, BulkRunner
from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.exceptions import QmaticConfigError, QmaticError
from tests.scripted_server import Reply, ScriptedServer, scripted, token_reply

pytestmark = pytest.mark.airflow

GOOD = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
BRANCH = "e3e70682-c209-4cac-a29f-6fbed82c07cd"
SERVICE = "c8a70639-eb11-47b3-a7a9-c3787c65c1e5"
UNSAFE = ["../../branches", "a/b", "..", "%2e%2e", "x y", "id?q=1", "x" * 200, "", "=cmd|'/c calc'!A1"]


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    yield from scripted()


@pytest.fixture
def client(server: ScriptedServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[QmaticClient]:
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    conn = {
        "conn_type": "qmatic",
        "login": "scripted-client",
        "password": "scripted-secret-9b1f",
        "extra": {
            "tenant": "demo",
            "system_id": "sys-1",
            "base_url": server.base_url,
            "credential_cache": "memory",
            "requests_per_minute": 600000,
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_QMATIC_DEFAULT", json.dumps(conn))
    client = QmaticClient(QmaticHook().config)
    yield client
    client.close()


def appointment(appointment_id: str, status: str = "RESERVED") -> dict[str, Any]:
    return {
        "appointmentId": appointment_id,
        "status": status,
        "branch": {"id": BRANCH},
        "service": {"id": SERVICE},
        "timeSlot": {"startTime": "2030-12-02T09:00:00+01:00", "endTime": "2030-12-02T09:15:00+01:00"},
    }


def row(pid: str) -> dict[str, str]:
    return {
        "branch_id": BRANCH,
        "service_id": SERVICE,
        "start_time": "2030-12-02T09:00:00+01:00",
        "end_time": "2030-12-02T09:15:00+01:00",
        "personal_identifier": pid,
        "first_name": "Karin",
        "last_name": "Boye",
        "email": "karin@example.com",
    }


@pytest.mark.parametrize("bad", UNSAFE, ids=range(len(UNSAFE)))
def test_unsafe_id_from_reserve_fails_that_row_not_the_run(
    server: ScriptedServer, client: QmaticClient, bad: str
) -> None:
    server.script("/oauth2/token", token_reply())
    server.script("/external/v1/reservations", Reply(201, appointment(bad)), Reply(201, appointment(GOOD)))
    server.script(f"/external/v1/appointments/{GOOD}/confirm", Reply(201, appointment(GOOD, "CONFIRMED")))

    result = BulkRunner(client, concurrency=1).book([row("PERSON0000001"), row("PERSON0000002")])

    first, second = result.outcomes
    assert (first.status, second.status) == (FAILED, SUCCEEDED), result.outcomes
    assert first.error is not None
    assert first.error.startswith("reserve: unexpected answer from Qmatic")
    assert "appointment_id" in first.error
    assert not first.retryable
    assert not result.fatal
    assert second.appointment_id == GOOD
    if bad:
        assert bad not in (first.error or "")
    # Nothing but the token, two reserves and the good confirm was sent: the bad id went nowhere.
    assert server.paths() == [
        "/oauth2/token",
        "/external/v1/reservations",
        "/external/v1/reservations",
        f"/external/v1/appointments/{GOOD}/confirm",
    ]


@pytest.mark.parametrize("bad", UNSAFE[:4], ids=range(4))
def test_unsafe_id_in_a_read_or_search_answer_is_a_server_error(
    server: ScriptedServer, client: QmaticClient, bad: str
) -> None:
    server.script("/oauth2/token", token_reply())
    server.script("/external/v1/appointments/search", Reply(200, [appointment(GOOD), appointment(bad)]))
    server.script(f"/external/v1/appointments/{GOOD}", Reply(200, appointment(bad, "CONFIRMED")))

    for call in (lambda: client.get_appointment(GOOD), lambda: client.search_appointments("PERSON0000001")):
        with pytest.raises(QmaticError) as info:
            call()
        assert not isinstance(info.value, QmaticConfigError)
        assert "appointment_id" in str(info.value)
