"""ClientConfig: everything the client needs, validated once, before any request.

The hook turns an Airflow Connection into the plain values below; this module decides whether they
are usable. Each refusal is a :class:`QmaticConfigError` that names the field, says what is wrong
with it and how to fix it, and never quotes a secret.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from airflow_provider_qmatic.exceptions import QmaticConfigError

REGIONS: tuple[str, ...] = ("eu-west-1", "us-east-1")
LANGUAGES: tuple[str, ...] = ("en_US", "en_UK", "fr_FR", "nl_NL", "de_DE", "it_IT", "ES_es")
CREDENTIAL_CACHES: tuple[str, ...] = ("file", "memory", "redis")
DEFAULT_REDIS_CONN_ID = "redis_default"
DEFAULT_LANGUAGE = "en_US"
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_REQUESTS_PER_MINUTE = 100.0
# Qmatic ends operations after 350 s with 504/408 anyway; under a second, a loaded worker cannot
# even finish a TLS handshake, so every call would fail as a timeout.
MIN_TIMEOUT_S = 1.0
MAX_TIMEOUT_S = 350.0
# Qmatic allows 100 requests a minute; below one a minute a task waits minutes per request (and a
# tiny value such as 1e-300 would wait forever); above a million the limiter is no limit at all.
MIN_REQUESTS_PER_MINUTE = 1.0
MAX_REQUESTS_PER_MINUTE = 1_000_000.0
# What a value must match, and how a message says it. A user agent is a header value: printable
# ASCII on one line, or the request could not be sent at all.
_USER_AGENT = (
    re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,199}$"),
    "printable ASCII on one line, at most 200 characters",
)
_SYSTEM_ID = (
    re.compile(r"^[A-Za-z0-9._-]{1,128}$"),
    "the tenant's system id as Qmatic gave it (letters, digits, '.', '_', '-')",
)

# The salt of every key derived from the client secret (first that of the Redis token cache's seal,
# kept so that tokens sealed before still open).
_KEY_SALT = b"airflow-provider-qmatic/redis-token-cache/v2"

_TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_D = TypeVar("_D", str, None)


@dataclass(frozen=True)
class ClientConfig:
    """Validated settings of one Qmatic client. Build it with :meth:`from_values`.

    The secret is excluded from ``repr`` and comparisons print nothing of it; ``secret_fingerprint``
    identifies it (for cache keys) without revealing it.
    """

    client_id: str
    client_secret: str = field(repr=False)
    tenant: str
    base_url: str
    region: str | None = None
    system_id: str | None = None
    language: str = DEFAULT_LANGUAGE
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S
    read_timeout: float = DEFAULT_TIMEOUT_S
    requests_per_minute: float = DEFAULT_REQUESTS_PER_MINUTE
    credential_cache: str = "file"
    credential_cache_dir: str | None = None
    # With credential_cache "redis": the Airflow connection of the Redis shared by the whole cluster.
    redis_conn_id: str = DEFAULT_REDIS_CONN_ID
    user_agent: str = "airflow-provider-qmatic"
    # Operation name -> path template, correcting a guessed path of the contract for this
    # deployment (checked by contract.check_endpoint_overrides); read by the client alone.
    endpoints: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def timeout(self) -> tuple[float, float]:
        """``(connect, total)``: connecting may take ``connect`` seconds, a whole attempt ``total``
        (see :func:`airflow_provider_qmatic.client.transport.send`)."""
        return (self.connect_timeout, self.read_timeout)

    @property
    def where(self) -> str:
        """The endpoint in use, for messages: the region, or the base URL when that decides the host."""
        return f"region {self.region}" if self.region else f"base URL {self.base_url}"

    @property
    def secret_fingerprint(self) -> str:
        """A short one-way hash of the client secret, so a rotated secret gets a new token."""
        return hashlib.sha256(self.client_secret.encode("utf-8")).hexdigest()[:16]

    def derived_key(self, purpose: str) -> bytes:
        """A 32-byte key for one use of the provider's, derived (HKDF-SHA256) from the client secret.

        Whoever holds the secret derives the same key (each attempt of a task, every worker);
        whoever reads only the provider's shared state (Redis, a journal file) has neither. Each
        ``purpose`` gets an independent key: the token cache seals tokens with ``token-cache``, the
        bulk journal keys its row fingerprints with another. A rotated secret gives new keys.
        """
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        hkdf = HKDF(hashes.SHA256(), 32, salt=_KEY_SALT, info=purpose.encode())
        return hkdf.derive(self.client_secret.encode("utf-8"))

    @classmethod
    def from_values(
        cls,
        *,
        client_id: str | None,
        client_secret: str | None,
        tenant: str | None = None,
        region: str | None = None,
        base_url: str | None = None,
        system_id: str | None = None,
        language: str | None = None,
        timeout: Any = None,
        requests_per_minute: Any = None,
        credential_cache: str | None = None,
        credential_cache_dir: str | None = None,
        redis_conn_id: str | None = None,
        user_agent: str | None = None,
        endpoints: Any = None,
    ) -> ClientConfig:
        """Validate raw values (strings as a Connection holds them) and build the config."""
        cid = _required_text("client_id", client_id, "the Connection's Login (Client ID)")
        if ":" in cid:
            raise QmaticConfigError(
                "client_id contains ':', which HTTP Basic authentication cannot carry (it separates the "
                "id from the secret): fix the Connection's Login (Client ID)",
                field="client_id",
            )
        secret = _required_secret(client_secret)
        norm_tenant = normalise_tenant(_required_text("tenant", tenant, "the `tenant` extra"))
        hint = " (for another host use `base_url`)"
        checked_region: str | None = _check_choice("region", region, REGIONS, "", hint=hint) or None
        if not _blank(base_url):
            url = check_base_url(str(base_url))
            # The form pre-fills a region even when Base URL decides the host: keep only the one in
            # use, so that messages naming the endpoint name the one requests go to.
            checked_region = None
        elif checked_region is not None:
            url = f"https://api.{checked_region}.qmatic.io"
        else:
            raise QmaticConfigError(
                "region is missing: set the `region` extra to one of "
                f"{', '.join(REGIONS)}, or set `base_url` for a custom Qmatic host",
                field="region",
            )
        read_timeout = _bounded_number(
            "timeout", timeout, DEFAULT_TIMEOUT_S, minimum=MIN_TIMEOUT_S, maximum=MAX_TIMEOUT_S
        )
        rpm = _bounded_number(
            "requests_per_minute",
            requests_per_minute,
            DEFAULT_REQUESTS_PER_MINUTE,
            minimum=MIN_REQUESTS_PER_MINUTE,
            maximum=MAX_REQUESTS_PER_MINUTE,
        )
        return cls(
            client_id=cid,
            client_secret=secret,
            tenant=norm_tenant,
            base_url=url,
            region=checked_region,
            system_id=_matching("system_id", system_id, _SYSTEM_ID, None),
            language=_check_choice("language", language, LANGUAGES, DEFAULT_LANGUAGE),
            connect_timeout=min(DEFAULT_CONNECT_TIMEOUT_S, read_timeout),
            read_timeout=read_timeout,
            requests_per_minute=rpm,
            credential_cache=_check_choice(
                "credential_cache", credential_cache, CREDENTIAL_CACHES, "file", fold_case=True
            ),
            credential_cache_dir=(str(credential_cache_dir) if credential_cache_dir else None),
            redis_conn_id=DEFAULT_REDIS_CONN_ID
            if _blank(redis_conn_id)
            else _required_text("redis_conn_id", redis_conn_id, "the `redis_conn_id` extra"),
            user_agent=_matching("user_agent", user_agent, _USER_AGENT, "airflow-provider-qmatic"),
            endpoints=check_endpoints(endpoints),
        )


def normalise_tenant(value: str) -> str:
    """The account name as Qmatic documents it for X-ACCOUNT: lowercase, spaces stripped."""
    tenant = "".join(value.split()).lower()
    if not _TENANT_PATTERN.fullmatch(tenant):
        raise QmaticConfigError(
            "tenant must be the Qmatic account name (letters, digits, '.', '_' or '-'); "
            "fix the `tenant` extra of the connection",
            field="tenant",
        )
    return tenant


def check_base_url(value: str) -> str:
    """Refuse URLs that would leak credentials or go somewhere unintended.

    https only, except plain http to a loopback host (the local sandbox); no user info, query,
    fragment or path (API paths are appended to it); a port, if any, within 1-65535.
    """
    text = value.strip()
    fix = "fix the `base_url` extra (for example https://mytenant.qmatic.cloud or http://127.0.0.1:8080)"
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise QmaticConfigError(f"base_url has an invalid port or host; {fix}", field="base_url") from None
    if parts.scheme not in ("https", "http"):
        raise QmaticConfigError(f"base_url must start with https://; {fix}", field="base_url")
    host = parts.hostname or ""
    if not host:
        raise QmaticConfigError(f"base_url has no host; {fix}", field="base_url")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise QmaticConfigError(
            "base_url must not carry a user name or password; credentials belong in the "
            "connection's Client ID and Client Secret",
            field="base_url",
        )
    if parts.query or parts.fragment or parts.path not in ("", "/"):
        raise QmaticConfigError(
            f"base_url must be scheme and host only, without a path or query; {fix}", field="base_url"
        )
    if port == 0:
        raise QmaticConfigError(f"base_url has port 0; {fix}", field="base_url")
    if parts.scheme == "http" and not is_loopback(host):
        raise QmaticConfigError(
            "base_url uses plain http to a host that is not this machine; use https:// "
            "(http is allowed only for loopback hosts such as the local sandbox)",
            field="base_url",
        )
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    return f"{parts.scheme}://{netloc}"


def is_loopback(host: str) -> bool:
    """True for localhost and addresses in 127.0.0.0/8 or ::1."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_endpoints(value: Any) -> dict[str, str]:
    """The ``endpoints`` extra: a JSON object (or its JSON text, as the form's text field saves it)
    mapping an operation of the contract table to a corrected path template.

    Checked here, when the connection is read, so a mistyped path fails before any request with a
    message naming the key and the fix, instead of as a 404 in the middle of a booking.
    """
    from airflow_provider_qmatic.api import contract

    if _blank(value):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise QmaticConfigError(
                'endpoints is not valid JSON: write a JSON object such as {"reserve": '
                '"/external/v1/reservations"} in the `endpoints` extra',
                field="endpoints",
            ) from None
    try:
        return contract.check_endpoint_overrides(value)
    except ValueError as exc:
        raise QmaticConfigError(f"{exc}: fix the `endpoints` extra", field="endpoints") from None


def _blank(value: Any) -> bool:
    """Not given: None, or text of spaces only (an emptied form field, an unset Variable)."""
    return value is None or (isinstance(value, str) and not value.strip())


def _required_text(name: str, value: Any, where: str) -> str:
    if _blank(value):
        raise QmaticConfigError(f"{name} is missing: set {where}", field=name)
    if not isinstance(value, str):
        raise QmaticConfigError(f"{name} must be text, got {type(value).__name__}: fix {where}", field=name)
    text = value.strip()
    if any(ch in text for ch in "\r\n\t") or not text.isprintable():
        raise QmaticConfigError(f"{name} contains control characters: fix {where}", field=name)
    return text


def _required_secret(value: Any) -> str:
    # The secret is never quoted, and its only check is that Basic auth can carry it.
    where = "the Connection's Password (Client Secret)"
    if _blank(value):
        raise QmaticConfigError(f"client_secret is missing: set {where}", field="client_secret")
    if not isinstance(value, str):
        raise QmaticConfigError(f"client_secret must be text: fix {where}", field="client_secret")
    if not value.isprintable():
        raise QmaticConfigError(
            f"client_secret contains a line break or control character (often a copy-paste slip): "
            f"fix {where}",
            field="client_secret",
        )
    return value.strip()


def _check_choice(
    name: str, value: Any, choices: tuple[str, ...], default: str, *, fold_case: bool = False, hint: str = ""
) -> str:
    if _blank(value):
        return default
    text = str(value).strip().lower() if fold_case else str(value).strip()
    if text not in choices:
        raise QmaticConfigError(
            f"{name} must be one of {', '.join(choices)}: fix the `{name}` extra{hint}", field=name
        )
    return text


def _matching(name: str, value: Any, rule: tuple[re.Pattern[str], str], default: _D) -> str | _D:
    """``value`` stripped, if the rule's pattern matches all of it; ``default`` when it is not given."""
    if _blank(value):
        return default
    text = str(value).strip()
    pattern, rule_text = rule
    if not pattern.fullmatch(text):
        raise QmaticConfigError(f"{name} must be {rule_text}: fix the `{name}` extra", field=name)
    return text


def _bounded_number(name: str, value: Any, default: float, *, minimum: float, maximum: float) -> float:
    if _blank(value):
        return default
    if isinstance(value, bool):
        raise QmaticConfigError(
            f"{name} must be a number, not true/false: fix the `{name}` extra", field=name
        )
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise QmaticConfigError(
            f"{name} must be a number (got {type(value).__name__} that is not numeric): "
            f"fix the `{name}` extra",
            field=name,
        ) from None
    if not (minimum <= number <= maximum):  # NaN fails both comparisons
        raise QmaticConfigError(
            f"{name} must be at least {minimum:g} and at most {maximum:g}: fix the `{name}` extra",
            field=name,
        )
    return number
