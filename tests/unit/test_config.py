"""ClientConfig: every refusal names its field, says how to fix it, and never quotes the secret."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_qmatic.config import ClientConfig, check_base_url, normalise_tenant
from airflow_provider_qmatic.exceptions import QmaticConfigError

SECRET = "s3cr3t:with-colon"
GOOD: dict[str, Any] = {
    "client_id": "client-1",
    "client_secret": SECRET,
    "tenant": "isb",
    "region": "eu-west-1",
    "system_id": "sys-1",
}


def build(**changes: Any) -> ClientConfig:
    values = {**GOOD, **changes}
    return ClientConfig.from_values(**values)


def test_defaults_and_region_url() -> None:
    config = build()
    assert config.base_url == "https://api.eu-west-1.qmatic.io"
    assert config.timeout == (10.0, 30.0)
    assert config.requests_per_minute == 100
    assert config.language == "en_US"
    assert config.credential_cache == "file"
    assert build(region="us-east-1").base_url == "https://api.us-east-1.qmatic.io"


def test_secret_not_in_repr_and_fingerprint_changes_with_secret() -> None:
    config = build()
    assert SECRET not in repr(config)
    assert config.secret_fingerprint != build(client_secret="other").secret_fingerprint
    assert SECRET not in config.secret_fingerprint


@pytest.mark.parametrize(
    ("changes", "field", "hint"),
    [
        ({"client_id": None}, "client_id", "Login"),
        ({"client_id": "  "}, "client_id", "Login"),
        ({"client_id": 42}, "client_id", "text"),
        ({"client_id": "a\nb"}, "client_id", "control"),
        ({"client_secret": None}, "client_secret", "Password"),
        ({"client_secret": ""}, "client_secret", "Password"),
        ({"client_secret": "abc\ndef"}, "client_secret", "line break"),
        ({"client_secret": 12345}, "client_secret", "text"),
        ({"tenant": None}, "tenant", "tenant"),
        ({"tenant": "bad/tenant"}, "tenant", "account name"),
        ({"region": "eu-west-2"}, "region", "eu-west-1"),
        ({"region": "eu-west-1/../evil"}, "region", "eu-west-1"),
        ({"region": "evil.example.com"}, "region", "base_url"),
        ({"region": None}, "region", "base_url"),
        ({"region": ["eu-west-1"]}, "region", "eu-west-1"),
        ({"base_url": "http://example.com"}, "base_url", "loopback"),
        ({"base_url": "ftp://example.com"}, "base_url", "https://"),
        ({"base_url": "https://user:pw@example.com"}, "base_url", "user name"),
        ({"base_url": "https://example.com/api"}, "base_url", "path"),
        ({"base_url": "https://example.com?x=1"}, "base_url", "path"),
        ({"base_url": "https://example.com:99999"}, "base_url", "port"),
        ({"base_url": "https://example.com:0"}, "base_url", "port"),
        ({"base_url": "https://example.com:abc"}, "base_url", "port"),
        ({"base_url": "https://"}, "base_url", "host"),
        ({"timeout": "ten"}, "timeout", "number"),
        ({"timeout": "-1"}, "timeout", "at least 1"),
        ({"timeout": 1000}, "timeout", "at most"),
        ({"timeout": True}, "timeout", "true/false"),
        ({"requests_per_minute": "fast"}, "requests_per_minute", "number"),
        ({"requests_per_minute": 0}, "requests_per_minute", "at least 1"),
        ({"language": "sv_SE"}, "language", "en_US"),
        ({"credential_cache": "etcd"}, "credential_cache", "redis"),
        ({"system_id": "has space"}, "system_id", "system id"),
    ],
)
def test_refusals_name_field_and_fix(changes: dict[str, Any], field: str, hint: str) -> None:
    with pytest.raises(QmaticConfigError) as info:
        build(**changes)
    assert info.value.field == field
    assert field in str(info.value)
    assert hint in str(info.value)
    assert SECRET not in str(info.value)
    assert "fix" in str(info.value).lower() or "set" in str(info.value).lower() or "use" in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:5000/", "http://localhost:5000"),
        ("http://[::1]:9000", "http://[::1]:9000"),
        ("http://127.10.0.3", "http://127.10.0.3"),
        ("https://mytenant.qmatic.cloud", "https://mytenant.qmatic.cloud"),
        (" https://api.eu-west-1.qmatic.io:443 ", "https://api.eu-west-1.qmatic.io:443"),
    ],
)
def test_base_url_accepted(raw: str, expected: str) -> None:
    assert check_base_url(raw) == expected
    assert build(base_url=raw, region=None).base_url == expected


def test_base_url_overrides_region() -> None:
    config = build(base_url="https://custom.example")
    assert config.base_url == "https://custom.example"
    # The pre-filled region is not the endpoint in use, so nothing may name it.
    assert config.region is None


@pytest.mark.parametrize(
    ("raw", "expected"), [("ISB", "isb"), (" My Tenant ", "mytenant"), ("a-b.c_d", "a-b.c_d")]
)
def test_tenant_normalised(raw: str, expected: str) -> None:
    assert normalise_tenant(raw) == expected
    assert build(tenant=raw).tenant == expected


def test_numbers_from_strings() -> None:
    config = build(timeout="12.5", requests_per_minute="6000")
    assert config.read_timeout == 12.5
    assert config.connect_timeout == 10.0
    assert config.requests_per_minute == 6000
    assert build(timeout="3").timeout == (3.0, 3.0)


def test_unicode_secret_accepted_and_stripped() -> None:
    config = build(client_secret="  pässwörd:ünïcode  ")
    assert config.client_secret == "pässwörd:ünïcode"
