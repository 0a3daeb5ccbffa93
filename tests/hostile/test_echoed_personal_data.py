"""Personal data quoted back *altered* by a server or gateway never reaches an exception's text.

A refusal may quote the request's customer percent-encoded (a gateway logging the form of a URL),
lower- or upper-cased, with JSON ``\\uXXXX`` escapes (a raw body quoted inside a JSON message),
HTML-escaped (an error page), or a phone number or personal identifier re-spaced or dashed. Each
form is sent by a loopback server as the message of a real 400 refusal of a confirm; the client's
error text must hold none of them, and still name the field.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest

from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.exceptions import QmaticValidationError
from tests.scripted_server import Reply, ScriptedServer, scripted, token_reply

APPOINTMENT = "6f1c2a9e-4b7d-4e21-9a3c-5d8e7f601234"
TOKEN_PATH = "/oauth2/token"
CONFIRM = f"/external/v1/appointments/{APPOINTMENT}/confirm"
CUSTOMER = {
    "personalIdentifier": "198503127734",
    "firstName": "Zoë",
    "lastName": "Bergström Okafor",
    "email": "Zoe.Bergstrom+appts@example.org",
    "phoneNumber": "+46 70 123 45 67",
    "dateOfBirth": "1985-03-12",
}


def _fully_escaped(value: str) -> str:
    return "".join(f"\\u{ord(ch):04x}" for ch in value)


# (label, the altered form a server quotes back)
FORMS = [
    ("email-percent-encoded", quote(CUSTOMER["email"], safe="")),
    ("email-form-encoded", quote_plus(CUSTOMER["email"])),
    ("email-lower-cased", CUSTOMER["email"].lower()),
    ("email-upper-cased", CUSTOMER["email"].upper()),
    ("name-plus-for-space", quote_plus(CUSTOMER["lastName"])),
    ("name-percent20-for-space", quote(CUSTOMER["lastName"])),
    ("name-json-escaped", json.dumps(CUSTOMER["lastName"])[1:-1]),
    ("first-name-json-escaped", json.dumps(CUSTOMER["firstName"])[1:-1]),
    ("name-fully-json-escaped", _fully_escaped(CUSTOMER["lastName"])),
    ("email-fully-json-escaped", _fully_escaped(CUSTOMER["email"])),
    ("name-html-escaped", html.escape(CUSTOMER["lastName"]).replace("ö", "&ouml;")),
    ("name-html-numeric", "Bergstr&#246;m Okafor"),
    ("name-html-hex", "Bergstr&#xF6;m Okafor"),
    ("phone-dashes", "+46-70-123-45-67"),
    ("phone-dots", "46.70.123.45.67"),
    ("phone-no-spaces", "+46701234567"),
    ("phone-brackets", "+46 (70) 1234567"),
    ("identifier-dash", "19850312-7734"),
    ("identifier-spaces", "1985 0312 7734"),
    ("identifier-mixed-separators", "19850312-77 34"),
    ("birth-date-dots", "1985.03.12"),
    ("birth-date-plain", "19850312"),
]


@pytest.fixture
def origin() -> Iterator[ScriptedServer]:
    yield from scripted()


def _client(server: ScriptedServer) -> QmaticClient:
    config = ClientConfig.from_values(
        client_id="echo-client",
        client_secret="echo-SECRET-5d2c81f0a9b3",
        tenant="demo",
        system_id="sys-1",
        base_url=server.base_url,
        requests_per_minute=600000,
        credential_cache="memory",
    )
    return QmaticClient(config, sleep=lambda _s: None, max_attempts=1)


@pytest.mark.parametrize(("label", "form"), FORMS, ids=[label for label, _ in FORMS])
def test_an_altered_echo_of_the_customer_is_not_in_the_error(
    origin: ScriptedServer, label: str, form: str
) -> None:
    message = f"customer.email: value [{form}] was rejected by the gateway"
    origin.script(TOKEN_PATH, token_reply("TOKEN-echo-0b7e5c"))
    origin.script(CONFIRM, Reply(400, {"error": "invalid_request", "message": message}))
    with pytest.raises(QmaticValidationError) as info:
        _client(origin).confirm(APPOINTMENT, {"customer": CUSTOMER})
    text = str(info.value) + repr(info.value)
    assert form not in text, f"{label} leaked: {text}"
    assert form.lower() not in text.lower(), f"{label} leaked: {text}"
    assert "customer.email" in text, "the field name is what the user needs: it stays"
    assert "was rejected by the gateway" in text, "the rest of the message stays readable"


def test_the_whole_body_quoted_back_escaped_leaves_no_value(origin: ScriptedServer) -> None:
    """A gateway quoting the raw request body (ASCII-only JSON, so ``\\u00eb``) inside its message."""
    body = json.dumps({"customer": CUSTOMER})  # ensure_ascii: every non-ASCII letter escaped
    origin.script(TOKEN_PATH, token_reply("TOKEN-echo-0b7e5c"))
    origin.script(CONFIRM, Reply(400, {"error": "invalid_request", "message": f"bad body: {body}"}))
    with pytest.raises(QmaticValidationError) as info:
        _client(origin).confirm(APPOINTMENT, {"customer": CUSTOMER})
    text = str(info.value)
    for value in CUSTOMER.values():
        for shown in (value, json.dumps(value)[1:-1]):
            assert shown.lower() not in text.lower(), text
    assert "personalIdentifier" in text, "field names stay"
    assert "lastName" in text, "field names stay"
