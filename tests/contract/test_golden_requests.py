"""Golden requests: every Part B endpoint (second edition), byte for byte as a server receives it.

Written from ``qmatic-cloud-api.md`` (Part A headers, Part B table and scope rules), NOT from the
provider's contract table: the sandbox reads that table too, so only an independent statement of
the contract catches a mistake in it. Each case uses a fresh client against a scripted loopback
server, so exactly two requests arrive: the token request (whose ``scope`` shows which token the
call used) and the call itself.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_provider_qmatic.api.contract import BOOK_SCOPES, CANCEL_SCOPES, RESCHEDULE_SCOPES, Scope
from airflow_provider_qmatic.api.models import BookingRequest, CustomerUpdate
from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.state.tokens import MemoryTokenCache
from tests.scripted_server import Recorded, Reply, ScriptedServer, scripted, token_reply

CLIENT_ID = "golden-client"
SECRET = "golden-secret-0123456789abcdef"
TENANT = "Golden Tenant"  # sent as X-ACCOUNT lowercase, spaces stripped
SYSTEM_ID = "a1b2c3d4-0000-4000-8000-000000000001"
LANGUAGE = "fr_FR"
BRANCH = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
SERVICE = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
APPOINTMENT = "0f8fad5b-d9cb-469f-a165-70867728950e"
RESERVATION = "9b2d3c4e-1111-4222-8333-444455556666"
PERSON = "CUST000000001"
RESOURCE = "5d4c3b2a-aaaa-4bbb-8ccc-ddddeeeeffff"
OTHER_BRANCH = "44444444-5555-4666-8777-888888888888"
SERVICE_2 = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
RESOURCE_TYPE = "6ec0bd7f-11c0-43da-975e-2a8ad9ebae0b"

BOOK = "com.qmatic.saas.appointments/external.appointment.book"
RESCHEDULE = "com.qmatic.saas.appointments/external.appointment.reschedule"
CANCEL = "com.qmatic.saas.appointments/external.appointment.cancel"

# Answers in the public shape: no status, notes, expiresAt or personal identifier.
_APPOINTMENT: dict[str, Any] = {
    "appointmentId": APPOINTMENT,
    "timeSlot": {"startTime": "2030-01-07T09:00:00+01:00", "endTime": "2030-01-07T09:20:00+01:00"},
    "branch": {"id": BRANCH, "name": "Central"},
    "service": {"id": SERVICE, "name": "Passport", "config": {"maxNumberOfReservations": 0}},
    "customer": {"firstName": "Ada", "lastName": "Lovelace", "email": "a@b.se", "phoneNumber": "+46 8 1"},
    "numberOfReservations": 1,
}
_SERVICES = [
    {"id": SERVICE, "name": "Passport", "branch": {"id": BRANCH, "name": "Central"}},
    {"id": SERVICE, "name": "Passport", "branch": {"id": OTHER_BRANCH, "name": "North"}},
]
# Part B: {branchId, serviceId, requestedResourceId?, timeSlot{startTime,endTime}, notes?,
# numberOfReservations} (always sent, default 1).
_RESERVE_BODY = {
    "branchId": BRANCH,
    "serviceId": SERVICE,
    "timeSlot": {"startTime": "2030-01-07T09:00:00+01:00", "endTime": "2030-01-07T09:20:00+01:00"},
    "numberOfReservations": 1,
}
_RESERVE_BODY_FULL = {
    "branchId": BRANCH,
    "serviceId": SERVICE,
    "requestedResourceId": RESOURCE,
    "timeSlot": {"startTime": "2030-01-07T09:00:00+01:00", "endTime": "2030-01-07T09:20:00+01:00"},
    "notes": "ramp",
    "numberOfReservations": 2,
}
_CUSTOMER = {"personalIdentifier": PERSON, "firstName": "Ada", "lastName": "Lovelace", "email": "a@b.se"}
_CONFIRM_BODY = {"customer": _CUSTOMER}
# Part B: {personalIdentifier, firstName, lastName, email, phoneNumber?, dateOfBirth?} at the top
# level; phoneNumber as a string.
_UPDATE_BODY = {**_CUSTOMER, "phoneNumber": "+46 8 123 45", "dateOfBirth": "1990-12-10"}


# Part B, service combinations: GET /serviceCombination/branch answers
# [{branchId, serviceCombinations:[{resourceTypeId, combinableServices[], unCombinableServices[],
# combinedServices[]}]}], ids as GUID strings.
_COMBINATIONS = [
    {
        "branchId": BRANCH,
        "serviceCombinations": [
            {
                "resourceTypeId": RESOURCE_TYPE,
                "combinableServices": [SERVICE, SERVICE_2],
                "unCombinableServices": [],
                "combinedServices": [],
            }
        ],
    },
    {"branchId": OTHER_BRANCH, "serviceCombinations": []},
]
_COMBINATION_RESERVE_BODY = {
    "branchId": BRANCH,
    "serviceIds": [SERVICE, SERVICE_2],  # "serviceIds[] instead of serviceId"
    "timeSlot": {"startTime": "2030-01-07T09:00:00+01:00", "endTime": "2030-01-07T09:35:00+01:00"},
    "numberOfReservations": 2,
}


def _expect(found: object, wanted: object) -> None:
    """What a call returned, checked inside the golden case (the request is checked after it)."""
    assert found == wanted


def _booking(**extra: Any) -> BookingRequest:
    return BookingRequest.parse(
        {
            "branch_id": BRANCH,
            "service_id": SERVICE,
            "start_time": "2030-01-07T09:00:00+01:00",
            "end_time": "2030-01-07T09:20:00+01:00",
            "customer": _CUSTOMER,
            **extra,
        }
    )


@dataclass(frozen=True)
class Golden:
    """One call and the request Part B says it is."""

    call: Callable[[QmaticClient], object]
    method: str
    path: str
    scope: str  # the scope string of the token the call must carry
    answer: Reply
    localised: bool = False  # listing and search calls send Accept-Language
    body: Any = None  # the JSON body, or None for none at all
    query: dict[str, list[str]] | None = None


GOLDEN: dict[str, Golden] = {
    "list branches": Golden(
        lambda c: c.list_branches(),
        "GET",
        "/external/v1/branches",
        BOOK,
        Reply(200, [{"id": BRANCH, "name": "Central", "timeZone": "Europe/Stockholm"}]),
        localised=True,
    ),
    "list branches, cancel token": Golden(
        lambda c: c.list_branches(scopes=frozenset({Scope.CANCEL})),
        "GET",
        "/external/v1/branches",
        CANCEL,  # reads accept any of the three: the caller's least privilege is kept
        Reply(200, []),
        localised=True,
    ),
    "list services": Golden(
        lambda c: c.list_services(),
        "GET",
        "/external/v1/services",  # tenant-wide: no branch in the path or query
        BOOK,
        Reply(200, _SERVICES),
        localised=True,
    ),
    "list services of a branch": Golden(
        lambda c: _expect([s.branch.id for s in c.list_services(BRANCH) if s.branch], [BRANCH]),
        "GET",
        "/external/v1/services",  # the same request; the branch is picked from the answer
        BOOK,
        Reply(200, _SERVICES),
        localised=True,
    ),
    "list service groups": Golden(
        lambda c: c.list_service_groups(),
        "GET",
        "/external/v1/servicegroups",  # not in Part B's table: the contract's guess
        BOOK,
        Reply(200, [{"id": "g1", "name": "Passports"}]),
        localised=True,
    ),
    "free time slots": Golden(
        lambda c: c.find_timeslots(BRANCH, SERVICE, date(2030, 1, 7), date(2030, 1, 9)),
        "GET",
        f"/external/v1/branches/{BRANCH}/services/{SERVICE}/timeslots",
        BOOK,
        Reply(200, []),
        localised=True,
        query={"from": ["2030-01-07"], "to": ["2030-01-09"]},
    ),
    "reserve": Golden(
        lambda c: c.reserve(_booking().reservation_body()),
        "POST",
        "/external/v1/reservations",
        BOOK,
        Reply(201, {**_APPOINTMENT, "customer": None}),
        body=_RESERVE_BODY,
    ),
    "reserve with a resource, notes and two places": Golden(
        lambda c: c.reserve(
            _booking(resource_id=RESOURCE, notes="ramp", number_of_reservations=2).reservation_body()
        ),
        "POST",
        "/external/v1/reservations",
        BOOK,
        Reply(201, {**_APPOINTMENT, "customer": None}),
        body=_RESERVE_BODY_FULL,
    ),
    "reserve for a reschedule": Golden(
        lambda c: c.reserve(_RESERVE_BODY, scopes=frozenset({Scope.RESCHEDULE})),
        "POST",
        "/external/v1/reservations",
        RESCHEDULE,  # "its reserve step needs book or reschedule"
        Reply(201, {**_APPOINTMENT, "customer": None}),
        body=_RESERVE_BODY,
    ),
    "release": Golden(
        lambda c: c.release_reservation(RESERVATION),
        "DELETE",
        f"/external/v1/reservations/reservations/{RESERVATION}",
        BOOK,
        Reply(204),
    ),
    "release after a failed reschedule": Golden(
        lambda c: c.release_reservation(RESERVATION, scopes=frozenset({Scope.RESCHEDULE})),
        "DELETE",
        f"/external/v1/reservations/reservations/{RESERVATION}",
        BOOK,  # release needs book, even when the flow that reserved held a reschedule token
        Reply(204),
    ),
    "confirm": Golden(
        lambda c: c.confirm(RESERVATION, _booking().confirmation_body()),
        "POST",
        f"/external/v1/appointments/{RESERVATION}/confirm",
        BOOK,
        Reply(201, _APPOINTMENT),
        body=_CONFIRM_BODY,
    ),
    "get": Golden(
        lambda c: c.get_appointment(APPOINTMENT),
        "GET",
        f"/external/v1/appointments/{APPOINTMENT}",
        BOOK,
        Reply(200, _APPOINTMENT),
        localised=True,  # Part B: Accept-Language on every read
    ),
    "get, reschedule token": Golden(
        lambda c: c.get_appointment(APPOINTMENT, scopes=frozenset({Scope.RESCHEDULE})),
        "GET",
        f"/external/v1/appointments/{APPOINTMENT}",
        RESCHEDULE,
        Reply(200, _APPOINTMENT),
        localised=True,  # Part B: Accept-Language on every read
    ),
    "search": Golden(
        lambda c: c.search_appointments(PERSON),
        "POST",
        "/external/v1/appointments/search",
        BOOK,
        Reply(200, [_APPOINTMENT]),
        localised=True,
        body={"customer": {"personalIdentifier": PERSON}},
    ),
    "search answered with one object": Golden(
        lambda c: _expect([a.appointment_id for a in c.search_appointments(PERSON)], [APPOINTMENT]),
        "POST",
        "/external/v1/appointments/search",
        BOOK,
        Reply(200, _APPOINTMENT),  # the public example's form
        localised=True,
        body={"customer": {"personalIdentifier": PERSON}},
    ),
    "search, cancel token": Golden(
        lambda c: c.search_appointments(PERSON, scopes=frozenset({Scope.CANCEL})),
        "POST",
        "/external/v1/appointments/search",
        CANCEL,
        Reply(200, []),
        localised=True,
        body={"customer": {"personalIdentifier": PERSON}},
    ),
    "reschedule": Golden(
        lambda c: c.reschedule(APPOINTMENT, RESERVATION),
        "PUT",
        f"/external/v1/appointments/{APPOINTMENT}/reschedule",
        RESCHEDULE,
        Reply(200, _APPOINTMENT),
        body={"reservationId": RESERVATION},
    ),
    "reschedule asked with a book token": Golden(
        lambda c: c.reschedule(APPOINTMENT, RESERVATION, scopes=frozenset({Scope.BOOK})),
        "PUT",
        f"/external/v1/appointments/{APPOINTMENT}/reschedule",
        RESCHEDULE,  # reschedule needs reschedule
        Reply(200, _APPOINTMENT),
        body={"reservationId": RESERVATION},
    ),
    "cancel": Golden(
        lambda c: c.cancel(APPOINTMENT),
        "DELETE",
        f"/external/v1/appointments/{APPOINTMENT}",
        CANCEL,
        Reply(204),
    ),
    "update customer": Golden(
        lambda c: c.update_customer(APPOINTMENT, CustomerUpdate.parse(_UPDATE_BODY).to_wire()),
        "PUT",
        f"/external/v1/appointments/{APPOINTMENT}/customer",
        BOOK,
        Reply(204),
        body=_UPDATE_BODY,
    ),
    "update customer asked with a cancel token": Golden(
        lambda c: c.update_customer(
            APPOINTMENT, CustomerUpdate.parse(_CUSTOMER).to_wire(), scopes=frozenset({Scope.CANCEL})
        ),
        "PUT",
        f"/external/v1/appointments/{APPOINTMENT}/customer",
        BOOK,  # update customer needs book
        Reply(204),
        body=_CUSTOMER,
    ),
    "cancel asked with a book token": Golden(
        lambda c: c.cancel(APPOINTMENT, scopes=frozenset({Scope.BOOK})),
        "DELETE",
        f"/external/v1/appointments/{APPOINTMENT}",
        CANCEL,  # cancel needs cancel
        Reply(204),
    ),
    "list service combinations": Golden(
        lambda c: _expect(
            [
                (b.branch_id, [s.combinable_services for s in b.service_combinations])
                for b in c.list_service_combinations()
            ],
            [(BRANCH, [[SERVICE, SERVICE_2]]), (OTHER_BRANCH, [])],
        ),
        "GET",
        "/external/v1/serviceCombination/branch",
        BOOK,
        Reply(200, _COMBINATIONS),
        localised=True,
    ),
    "service combinations of one branch": Golden(
        lambda c: _expect(
            [
                b.branch_id
                for b in c.list_service_combinations(OTHER_BRANCH, scopes=frozenset({Scope.CANCEL}))
            ],
            [OTHER_BRANCH],
        ),
        "GET",
        "/external/v1/serviceCombination/branch",  # every branch's; the branch is picked from the answer
        CANCEL,
        Reply(200, _COMBINATIONS),
        localised=True,
    ),
    "combination time slots": Golden(
        lambda c: c.find_combination_timeslots(
            BRANCH, [SERVICE, SERVICE_2], date(2030, 1, 7), date(2030, 1, 9)
        ),
        "GET",
        f"/external/v1/serviceCombination/branch/{BRANCH}/timeslots",
        BOOK,
        Reply(200, [{"startTime": "2030-01-07T09:00:00+01:00", "endTime": "2030-01-07T09:35:00+01:00"}]),
        localised=True,
        # several serviceIds; numberOfReservations the sum over the services (one person each)
        query={
            "serviceId": [SERVICE, SERVICE_2],
            "numberOfReservations": ["2"],
            "from": ["2030-01-07"],
            "to": ["2030-01-09"],
        },
    ),
    "combination time slots, two people and a resource": Golden(
        lambda c: c.find_combination_timeslots(
            BRANCH,
            [SERVICE, SERVICE_2],
            date(2030, 1, 7),
            date(2030, 1, 7),
            number_of_reservations=2,
            resource_id=RESOURCE,
        ),
        "GET",
        f"/external/v1/serviceCombination/branch/{BRANCH}/timeslots",
        BOOK,
        Reply(200, []),
        localised=True,
        query={
            "serviceId": [SERVICE, SERVICE_2],
            "numberOfReservations": ["4"],
            "requestedResourceId": [RESOURCE],
            "from": ["2030-01-07"],
            "to": ["2030-01-07"],
        },
    ),
    # The /serviceCombination/ twins, through the client methods the flows call (combination=True).
    "combination search": Golden(
        lambda c: c.search_appointments(PERSON, combination=True),
        "GET",  # a GET with a body, as the page writes it
        "/external/v1/serviceCombination/appointments/search",
        BOOK,
        Reply(200, [_APPOINTMENT]),
        localised=True,
        body={"customer": {"personalIdentifier": PERSON}},
    ),
    "combination reserve": Golden(
        # Two people's places over two services: the booking's body, the sum of 1 per service.
        lambda c: c.reserve(
            _booking(
                service_id=None,
                service_ids=[SERVICE, SERVICE_2],
                end_time="2030-01-07T09:35:00+01:00",
            ).reservation_body(),
            scopes=RESCHEDULE_SCOPES,
            combination=True,
        ),
        "POST",
        "/external/v1/serviceCombination/reservations",
        RESCHEDULE,  # as reserve: book or reschedule
        Reply(201, {**_APPOINTMENT, "customer": None}),
        body=_COMBINATION_RESERVE_BODY,
    ),
    "combination confirm": Golden(
        lambda c: c.confirm(RESERVATION, _CONFIRM_BODY, scopes=RESCHEDULE_SCOPES, combination=True),
        "POST",
        f"/external/v1/serviceCombination/appointments/{RESERVATION}/confirm",
        BOOK,  # as confirm: book only
        Reply(201, _APPOINTMENT),
        body=_CONFIRM_BODY,
    ),
    "combination get": Golden(
        lambda c: c.get_appointment(APPOINTMENT, scopes=CANCEL_SCOPES, combination=True),
        "GET",
        f"/external/v1/serviceCombination/appointments/{APPOINTMENT}",
        CANCEL,  # a read: any scope
        Reply(200, _APPOINTMENT),
        localised=True,
    ),
    "combination reschedule": Golden(
        lambda c: c.reschedule(APPOINTMENT, RESERVATION, scopes=BOOK_SCOPES, combination=True),
        "PUT",
        f"/external/v1/serviceCombination/appointments/{APPOINTMENT}/reschedule",
        RESCHEDULE,
        Reply(200, _APPOINTMENT),
        body={"reservationId": RESERVATION},
    ),
}


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    yield from scripted()


def _client(server: ScriptedServer) -> QmaticClient:
    config = ClientConfig.from_values(
        client_id=CLIENT_ID,
        client_secret=SECRET,
        tenant=TENANT,
        base_url=server.base_url,
        system_id=SYSTEM_ID,
        language=LANGUAGE,
        credential_cache="memory",
    )
    return QmaticClient(config, token_cache=MemoryTokenCache())


def _headers(request: Recorded) -> dict[str, str]:
    return {name.lower(): value for name, value in request.headers.items()}


def _check_token_request(request: Recorded, scope: str) -> None:
    headers = _headers(request)
    assert (request.method, request.path) == ("POST", "/oauth2/token")
    assert headers["authorization"] == "Basic " + base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    assert headers["x-account"] == "goldentenant"
    assert headers["content-type"] == "application/x-www-form-urlencoded"
    assert "x-tenant-id" not in headers
    assert parse_qs(request.body.decode(), strict_parsing=True) == {
        "grant_type": ["client_credentials"],
        "scope": [scope],
    }


@pytest.mark.parametrize("name", list(GOLDEN))
def test_golden_request(server: ScriptedServer, name: str) -> None:
    golden = GOLDEN[name]
    token = "tok-" + name.replace(" ", "-").replace(",", "")
    server.script("/oauth2/token", token_reply(token))
    server.script("/external/v1/", golden.answer)
    with _client(server) as client:
        golden.call(client)
    token_request, call = server.requests  # exactly these two
    _check_token_request(token_request, golden.scope)

    url = urlsplit(call.path)
    assert call.method == golden.method
    assert url.path == golden.path
    assert (parse_qs(url.query) if url.query else None) == golden.query
    headers = _headers(call)
    assert headers["authorization"] == f"Bearer {token}"
    assert headers["x-tenant-id"] == SYSTEM_ID
    assert "x-account" not in headers
    if golden.localised:
        assert headers["accept-language"] == LANGUAGE
    else:
        assert "accept-language" not in headers
    if golden.body is None:
        assert call.body == b""
        assert "content-type" not in headers
    else:
        assert headers["content-type"] == "application/json"
        assert json.loads(call.body) == golden.body


def test_every_part_b_endpoint_has_a_golden_request() -> None:
    """The eleven rows of Part B's table (second edition), by method and path template, its seven
    service-combination calls (prose below the table), and the contract's one guess outside it
    (service groups)."""
    part_b = {
        ("GET", "/external/v1/branches"),
        ("GET", "/external/v1/services"),
        ("GET", "/external/v1/branches/{branchId}/services/{serviceId}/timeslots"),
        ("POST", "/external/v1/reservations"),
        ("DELETE", "/external/v1/reservations/reservations/{appointmentId}"),
        ("POST", "/external/v1/appointments/{appointmentId}/confirm"),
        ("GET", "/external/v1/appointments/{appointmentId}"),
        ("POST", "/external/v1/appointments/search"),
        ("PUT", "/external/v1/appointments/{appointmentId}/reschedule"),
        ("DELETE", "/external/v1/appointments/{appointmentId}"),
        ("PUT", "/external/v1/appointments/{appointmentId}/customer"),
    }
    ids = {
        BRANCH: "{branchId}",
        SERVICE: "{serviceId}",
        APPOINTMENT: "{appointmentId}",
        RESERVATION: "{appointmentId}",
    }
    covered = set()
    for golden in GOLDEN.values():
        path = golden.path
        for value, template in ids.items():
            path = path.replace(value, template)
        covered.add((golden.method, path))
    combinations = {
        ("GET", "/external/v1/serviceCombination/branch"),
        ("GET", "/external/v1/serviceCombination/branch/{branchId}/timeslots"),
        ("GET", "/external/v1/serviceCombination/appointments/search"),
        ("POST", "/external/v1/serviceCombination/reservations"),
        ("POST", "/external/v1/serviceCombination/appointments/{appointmentId}/confirm"),
        ("GET", "/external/v1/serviceCombination/appointments/{appointmentId}"),
        ("PUT", "/external/v1/serviceCombination/appointments/{appointmentId}/reschedule"),
    }
    assert covered - part_b - combinations == {("GET", "/external/v1/servicegroups")}
    assert combinations <= covered
    assert part_b <= covered
