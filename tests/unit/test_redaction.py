"""The redaction rules, on text alone (the hostile suite drives them through real servers)."""

from __future__ import annotations

import base64
from urllib.parse import quote, quote_plus

import pytest

from airflow_provider_qmatic.redaction import Redactor, personal_values

SECRET = "s3cr3t:with-colons+plus/slash"
BASIC = base64.b64encode(f"client-id:{SECRET}".encode()).decode()


@pytest.fixture
def redact() -> Redactor:
    return Redactor([SECRET, BASIC])


@pytest.mark.parametrize(
    "fragment",
    [
        SECRET,
        SECRET[4:12],  # exactly eight characters
        SECRET[2:20].upper(),
        quote(SECRET, safe=""),
        quote(SECRET, safe="")[5:20],
        quote_plus(SECRET, safe="").lower(),
        "".join(f"%{byte:02X}" for byte in SECRET[3:14].encode()),
        BASIC,
        BASIC[:8],
        BASIC[10:30],
    ],
)
def test_runs_of_secrets_raw_or_encoded_are_replaced(redact: Redactor, fragment: str) -> None:
    text = redact(f"the gateway said: <{fragment}> end")
    assert fragment not in text
    assert text.startswith("the gateway said: <")
    assert text.endswith("> end")


@pytest.mark.parametrize(
    ("echo", "shown"),
    [
        ("Basic a", "Basic ***"),
        ("basic aG9zdGlsZS1…", "basic ***…"),
        ("Bearer x", "Bearer ***"),
        ("BEARER abc.def", "BEARER ***"),
        ("Basic%20Zm9v", "Basic ***"),
        ("Authorization: Bearer  t0k==", "Authorization: Bearer ***"),
    ],
)
def test_every_basic_or_bearer_credential_is_replaced_however_short(
    redact: Redactor, echo: str, shown: str
) -> None:
    assert redact(f"header {echo} was rejected") == f"header {shown} was rejected"


def test_base64_of_a_prefix_of_the_credentials_is_replaced(redact: Redactor) -> None:
    partial = base64.b64encode(f"client-id:{SECRET[:10]}".encode()).decode()
    assert partial[-4:] not in redact(f"credentials {partial} refused")


def test_ordinary_messages_pass_unchanged(redact: Redactor) -> None:
    text = "customer.email: must be a well-formed email address (at most 255 characters)"
    assert redact(text) == text


def test_a_token_added_later_is_replaced_too(redact: Redactor) -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.payload.signature"
    redact.add(token)
    assert token[6:20] not in redact(f"token {token[6:20]} expired")


def test_personal_values_of_the_request_are_replaced_as_words(redact: Redactor) -> None:
    body = b'{"customer": {"firstName": "Ann", "email": "ann@example.org", "dateOfBirth": "1990-01-02"},'
    body += b' "branchId": "3fa85f64-5717-4562-b3fc-2c963f66afa6", "notes": "X"}'
    personal = personal_values(body)
    assert sorted(personal) == ["1990-01-02", "Ann", "X", "ann@example.org"]
    text = redact(
        "ANN@example.org of Ann (born 1990-01-02) at Annex 3fa85f64-5717-4562-b3fc-2c963f66afa6", personal
    )
    assert "ann@" not in text.lower()
    assert " Ann " not in text
    assert "1990" not in text
    assert "Annex" in text
    assert "3fa85f64-5717-4562-b3fc-2c963f66afa6" in text


def test_personal_values_of_a_body_that_is_not_json_are_none() -> None:
    assert personal_values(b"grant_type=client_credentials") == []
    assert personal_values(None) == []


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("call +46-70-123 45 67 now", "call +*** now"),
        ("id 19850312-7734, born", "id ***, born"),
        ("name Bergstr%C3%B6m+Okafor.", "name ***."),
        ("name Bergstr\\u00f6m Okafor!", "name ***!"),
        ("name Bergstr&ouml;m Okafor;", "name ***;"),
        ("not 4670123456 nor Bergstroms", "not 4670123456 nor Bergstroms"),
    ],
)
def test_personal_values_are_masked_in_their_altered_forms_and_only_there(text: str, shown: str) -> None:
    personal = ["+46701234567", "198503127734", "Bergström Okafor"]
    assert Redactor()(text, personal) == shown
