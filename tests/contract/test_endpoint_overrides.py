"""The connection's ``endpoints`` extra: a deployment corrects a guessed path without a release.

Bad forms are refused when the connection is read, before any request, with an error naming the
key and the fix; a good one moves the request (a scripted loopback server records where it went),
and a whole booking works against a sandbox that serves operations at moved paths.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import pytest

from airflow_provider_qmatic.api.models import BookingRequest
from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.exceptions import QmaticConfigError, QmaticNotFoundError
from airflow_provider_qmatic.hooks.qmatic import QmaticHook
from airflow_provider_qmatic.sandbox import SandboxServer
from airflow_provider_qmatic.state.tokens import MemoryTokenCache
from tests.scripted_server import Reply, ScriptedServer, scripted, token_reply

APPOINTMENT = "0f8fad5b-d9cb-469f-a165-70867728950e"
MOVED = {
    "reserve": "/external/v2/reservations",
    "confirm": "/external/v1/Appointments/{appointment_id}/confirmation",
}


def _config(base_url: str = "http://127.0.0.1:9", endpoints: Any = None) -> ClientConfig:
    return ClientConfig.from_values(
        client_id="override-client",
        client_secret="override-secret",
        tenant="override",
        base_url=base_url,
        system_id="sys-1",
        credential_cache="memory",
        endpoints=endpoints,
    )


@pytest.mark.parametrize(
    ("endpoints", "named", "fix"),
    [
        ({"reserv": "/x"}, "reserv", "use one of"),
        ({"reserve": "external/v1/reservations"}, "endpoints.reserve", "absolute path"),
        ({"reserve": "//evil.example/reservations"}, "endpoints.reserve", "absolute path"),
        ({"reserve": "https://evil.example/reservations"}, "endpoints.reserve", "absolute path"),
        ({"reserve": "/external/v1/reservations?x=1"}, "endpoints.reserve", "no scheme, host, query"),
        ({"reserve": "/external/v1/a://b"}, "endpoints.reserve", "no scheme, host, query"),
        ({"get": "/external/v1/../admin/{appointment_id}"}, "endpoints.get", "'..'"),
        ({"get": "/external/v1/appointments/{id}"}, "endpoints.get", "{appointment_id}"),
        ({"get": "/external/v1/appointments"}, "endpoints.get", "{appointment_id}"),
        ({"branches": "/external/v1/branches/{branch_id}"}, "endpoints.branches", "no placeholders"),
        ({"reserve": 5}, "endpoints.reserve", "absolute path"),
        (  # the combination rows are checked like every other row of the table
            {"combination_timeslots": "/external/v1/serviceCombination/branch/{service_id}/timeslots"},
            "endpoints.combination_timeslots",
            "{branch_id}",
        ),
        ({"service_combination": "/x"}, "service_combination", "service_combinations"),
        (["reserve", "/x"], "endpoints must be a JSON object", '"reserve"'),
        ('{"reserve": ', "endpoints is not valid JSON", "JSON object"),
        ('["reserve"]', "endpoints must be a JSON object", '"reserve"'),
    ],
)
@pytest.mark.airflow
def test_a_bad_endpoints_extra_is_refused_before_any_request(
    server: ScriptedServer, monkeypatch: pytest.MonkeyPatch, endpoints: Any, named: str, fix: str
) -> None:
    server.script("/", Reply(500))
    extra = {"tenant": "override", "system_id": "sys-1", "base_url": server.base_url, "endpoints": endpoints}
    monkeypatch.setenv(
        "AIRFLOW_CONN_QMATIC_OVERRIDE",
        json.dumps({"conn_type": "qmatic", "login": "c", "password": "override-secret", "extra": extra}),
    )
    hook = QmaticHook("qmatic_override")
    with pytest.raises(QmaticConfigError) as info:
        hook.list_branches()
    assert info.value.field == "endpoints"
    assert named in info.value.message
    assert fix in info.value.message
    assert "the `endpoints` extra" in info.value.message
    ok, message = QmaticHook("qmatic_override").test_connection()
    assert not ok
    assert named in message
    assert server.requests == []


@pytest.mark.parametrize("form", ["object", "json text", "blank"])
def test_endpoints_extra_as_an_object_or_its_json_text(form: str) -> None:
    value: Any = {"object": MOVED, "json text": json.dumps(MOVED), "blank": "  "}[form]
    config = _config(endpoints=value)
    assert config.endpoints == ({} if form == "blank" else MOVED)
    client = QmaticClient(config, token_cache=MemoryTokenCache())
    assert client.operations["reserve"].path == (
        "/external/v1/reservations" if form == "blank" else MOVED["reserve"]
    )
    assert client.operations["get"].path == "/external/v1/appointments/{appointment_id}"
    hash(config)  # still usable as a key


def test_requests_go_to_the_moved_paths(server: ScriptedServer) -> None:
    server.script("/oauth2/token", token_reply("tok-moved"))
    server.script("/external/v2/reservations", Reply(201, {"appointmentId": APPOINTMENT, "customer": None}))
    server.script("/external/v1/Appointments/", Reply(201, {"appointmentId": APPOINTMENT}))
    server.script("/external/v1/appointments/", Reply(200, {"appointmentId": APPOINTMENT}))
    request = BookingRequest.parse(
        {
            "branch_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
            "service_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
            "start_time": "2030-01-07T09:00:00+01:00",
            "end_time": "2030-01-07T09:20:00+01:00",
            "customer": {
                "personalIdentifier": "CUST000000001",
                "firstName": "A",
                "lastName": "B",
                "email": "a@b.se",
            },
        }
    )
    with QmaticClient(_config(server.base_url, MOVED), token_cache=MemoryTokenCache()) as client:
        client.reserve(request.reservation_body())
        client.confirm(APPOINTMENT, request.confirmation_body())
        client.get_appointment(APPOINTMENT)
    assert [(r.method, r.path) for r in server.requests] == [
        ("POST", "/oauth2/token"),
        ("POST", "/external/v2/reservations"),
        ("POST", f"/external/v1/Appointments/{APPOINTMENT}/confirmation"),
        ("GET", f"/external/v1/appointments/{APPOINTMENT}"),  # not moved: the contract's path
    ]


def test_combination_reads_go_to_the_moved_paths(server: ScriptedServer) -> None:
    """The combination calls take overrides by their operation names, like the rest of the table."""
    moved = {
        "service_combinations": "/serviceCombination/branch",
        "combination_timeslots": "/serviceCombination/branches/{branch_id}/timeslots",
    }
    server.script("/oauth2/token", token_reply("tok-moved"))
    server.script("/serviceCombination/", Reply(200, []))
    branch = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
    with QmaticClient(_config(server.base_url, moved), token_cache=MemoryTokenCache()) as client:
        assert client.list_service_combinations() == []
        client.find_combination_timeslots(branch, ["s1", "s2"], date(2030, 1, 7), date(2030, 1, 7))
    assert [(r.method, r.path.split("?")[0]) for r in server.requests] == [
        ("POST", "/oauth2/token"),
        ("GET", "/serviceCombination/branch"),
        ("GET", f"/serviceCombination/branches/{branch}/timeslots"),
    ]


@pytest.mark.airflow
def test_a_booking_through_the_hook_against_a_sandbox_with_moved_paths(
    make_qmatic_sandbox: Callable[..., SandboxServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = make_qmatic_sandbox(moved_paths=MOVED)
    slot = sandbox.free_slots(limit=1)[0]
    request = BookingRequest.parse(
        {
            "branch_id": slot["branchId"],
            "service_id": slot["serviceId"],
            "start_time": slot["startTime"],
            "customer": {
                "personalIdentifier": "MOVED00000001",
                "firstName": "A",
                "lastName": "B",
                "email": "a@b.se",
            },
        }
    )
    result = QmaticHook().book(request)  # the connection carries the sandbox's moved paths
    assert result.changed
    booked = [a for a in sandbox.appointments() if a["appointmentId"] == result.appointment_id]
    assert len(booked) == 1
    assert booked[0]["status"] == "CONFIRMED"
    # A connection that does not know of the moved paths meets the sandbox's 404 at the old one.
    stored = len(sandbox.appointments())
    for name, value in sandbox.connection_env(endpoints={}).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(QmaticNotFoundError):
        QmaticHook().book(request)
    assert len(sandbox.appointments()) == stored  # nothing reserved at a path the sandbox left


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    yield from scripted()
