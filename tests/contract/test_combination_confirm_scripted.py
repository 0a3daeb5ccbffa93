"""A combination's confirm whose answer is lost (a gateway 502, a read timeout), against a scripted
loopback server: the flow reads the reservation back with the combination get and returns it as
booked, sending neither a second reserve nor a release; read back unconfirmed, it is released."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_qmatic.api.models import BookingRequest
from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.exceptions import QmaticServerError
from airflow_provider_qmatic.flows import Flows
from tests.scripted_server import Reply, ScriptedServer, scripted, token_reply

BRANCH = "e3e70682-c209-4cac-a29f-6fbed82c07cd"
SERVICES = ["c8a70639-eb11-47b3-a7a9-c3787c65c1e5", "e87a1613-e443-4f78-9558-867f5ba91faf"]
RESERVATION = "5f1d7e2a-8b3c-4d5e-9f60-718293a4b5c6"
COMBI = "/external/v1/serviceCombination"
CUSTOMER = {
    "personal_identifier": "19800430ADA01",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "email": "ada@example.com",
}
SLOT = {"startTime": "2031-01-07T09:00:00+01:00", "endTime": "2031-01-07T09:25:00+01:00"}


def _appointment(customer: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "appointmentId": RESERVATION,
        "timeSlot": SLOT,
        "services": [{"id": s} for s in SERVICES],
        "branch": {"id": BRANCH},
        "numberOfReservations": 2,
        "customer": customer,
    }


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    for started in scripted():
        started.script("/oauth2/token", token_reply())
        started.script(
            f"{COMBI}/branch",
            Reply(200, [{"branchId": BRANCH, "serviceCombinations": [{"combinableServices": SERVICES}]}]),
        )
        started.script(f"{COMBI}/reservations", Reply(201, _appointment(None)))
        started.script("/external/v1/reservations/reservations/", Reply(204))
        yield started


def _flows(server: ScriptedServer) -> Flows:
    config = ClientConfig.from_values(
        client_id="c",
        client_secret="s" * 20,
        tenant="demo",
        system_id="sys-1",
        base_url=server.base_url,
        requests_per_minute=600000,
        credential_cache="memory",
        timeout=1,
    )
    return Flows(QmaticClient(config, sleep=lambda _s: None, max_attempts=1), sleep=lambda _s: None)


def _request() -> BookingRequest:
    return BookingRequest.parse(
        {
            "branch_id": BRANCH,
            "service_ids": SERVICES,
            "start_time": SLOT["startTime"],
            "end_time": SLOT["endTime"],
            "customer": CUSTOMER,
        }
    )


@pytest.mark.parametrize("lost", ["502", "timeout"])
def test_a_lost_combination_confirm_is_read_back_as_booked(server: ScriptedServer, lost: str) -> None:
    shown = {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com"}
    # Longer prefixes first: the confirm, then the get of the same reservation.
    confirm = f"{COMBI}/appointments/{RESERVATION}/confirm"
    server.script(
        confirm,
        Reply(502, "<html>bad gateway</html>")
        if lost == "502"
        else Reply(201, _appointment(shown), delay=1.5),
    )
    server.script(f"{COMBI}/appointments/{RESERVATION}", Reply(200, _appointment(shown)))

    result = _flows(server).book(_request())

    assert (result.appointment_id, result.changed) == (RESERVATION, True)
    paths = server.paths()
    assert paths.count(f"{COMBI}/reservations") == 1
    assert paths.count(confirm) == 1
    assert f"{COMBI}/appointments/{RESERVATION}" in paths
    assert not any(p.startswith("/external/v1/reservations/reservations/") for p in paths)  # no release
    assert "/external/v1/reservations" not in paths  # never the single-service reserve


def test_an_unconfirmed_combination_is_released_after_a_lost_confirm(server: ScriptedServer) -> None:
    server.script(f"{COMBI}/appointments/{RESERVATION}/confirm", Reply(502, "<html>bad gateway</html>"))
    server.script(f"{COMBI}/appointments/{RESERVATION}", Reply(200, _appointment(None)))

    with pytest.raises(QmaticServerError):
        _flows(server).book(_request())

    assert f"/external/v1/reservations/reservations/{RESERVATION}" in server.paths()


@pytest.mark.parametrize("confirmed", [True, False])
def test_a_bulk_resume_settles_a_combination_reservation_it_cannot_tell_apart(
    server: ScriptedServer, confirmed: bool
) -> None:
    """A bulk journal does not say whether a reservation was of several services: the single get
    answers 404 for it here, so the combination get is asked; what it reads decides."""
    server.script(
        f"/external/v1/appointments/{RESERVATION}", Reply(404, {"error": "not_found", "message": "no"})
    )
    shown = {"firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.com"} if confirmed else None
    server.script(f"{COMBI}/appointments/{RESERVATION}", Reply(200, _appointment(shown)))

    settled = _flows(server).settle(RESERVATION, booking=True, combination=None)

    assert settled.fate == ("done" if confirmed else "released")
    released = f"/external/v1/reservations/reservations/{RESERVATION}" in server.paths()
    assert released is not confirmed
