"""Helpers of the sandbox contract tests (a module of its own, so test modules can import it).

The session server (see conftest.py) has rate limits switched off (tests that exercise them switch them on with
``configure``; the per-test reset restores these settings) and four clients:

* ``demo-client`` (tenant ``demo``, all scopes) -- the primary client;
* the example client of Qmatic's OAuth2 page (tenant ``isb``);
* ``book-only`` (tenant ``demo``, only the book scope);
* ``acme-client`` (tenant ``acme``: another tenant, another system id).
"""

from __future__ import annotations

import base64
from typing import Any

import requests

from airflow_provider_qmatic.api import contract
from airflow_provider_qmatic.api.contract import Scope
from airflow_provider_qmatic.sandbox import SandboxClient, SandboxServer, SandboxSettings

EXAMPLE_ID = "5lm7djk7jevsfgaqddalpfu06v"
EXAMPLE_SECRET = "2a6f2cbhtre8mt5tbicf46su5fdsodom24q35f6ds9qu0p6fs016z"

DEMO = SandboxClient("demo-client", "demo-secret-0123456789", "demo")
ISB = SandboxClient(EXAMPLE_ID, EXAMPLE_SECRET, "isb")
BOOK_ONLY = SandboxClient("book-only", "book-only-secret", "demo", scopes=frozenset({Scope.BOOK}))
ACME = SandboxClient("acme-client", "acme-secret", "acme")

SETTINGS = SandboxSettings(
    clients=(DEMO, ISB, BOOK_ONLY, ACME),
    requests_per_minute=0,
    token_requests_per_second=0,
)

CUSTOMER: dict[str, Any] = {
    "personalIdentifier": "CUST000000001",
    "firstName": "Ada",
    "lastName": "Lovelace",
    "email": "ada@example.com",
    "phoneNumber": "+46701234567",
    "dateOfBirth": "1990-12-10",
}


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


class Api:
    """A bearer-authenticated caller of one sandbox, with a fresh session (no env proxies)."""

    def __init__(self, server: SandboxServer, client: SandboxClient = DEMO, scopes: Any = None) -> None:
        self.server = server
        self.client = client
        self.session = requests.Session()
        self.session.trust_env = False
        self.token = server.get_token(scopes, client=client)
        self.headers = server.api_headers(self.token, client)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.session.request(
            method, self.server.base_url + path, headers=headers, timeout=10, **kwargs
        )

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def put(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PUT", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    # The booking steps, asserting success.
    def reserve(self, slot: dict[str, Any], number: int = 1, **extra: Any) -> dict[str, Any]:
        response = self.post(contract.RESERVE.path, json=reserve_body(slot, number, **extra))
        assert response.status_code == 201, response.text
        return dict(response.json())

    def confirm(self, appointment_id: str, customer: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.post(
            contract.CONFIRM.path.format(appointment_id=appointment_id),
            json={"customer": customer or CUSTOMER},
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    def book(self, slot: dict[str, Any], customer: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.confirm(self.reserve(slot)["appointmentId"], customer)


def reserve_body(slot: dict[str, Any], number: int = 1, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "branchId": slot["branchId"],
        "serviceId": slot["serviceId"],
        "timeSlot": {"startTime": slot["startTime"], "endTime": slot["endTime"]},
        "numberOfReservations": number,
    }
    body.update(extra)
    return body


def error_of(response: requests.Response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"error", "message"}, body
    return response.status_code, body["error"], body["message"]
