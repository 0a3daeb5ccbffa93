"""The Qmatic connection form, described once.

Airflow 3.2+ reads it declaratively from the provider info (``conn-fields`` and
``ui-field-behaviour``); Airflow 2.11, 3.0 and 3.1 ask the hook (``get_connection_form_widgets`` /
``get_ui_field_behaviour``). Both are generated from the tables below, so the two forms cannot
drift apart. Plain data only: this module is imported by ``get_provider_info``.

Required fields have a schema type without ``"null"``: Airflow 3.2+ marks them with its own required
indicator and refuses to save the form while they are empty. The hook-method path has no notion of
required (Airflow 3.0/3.1 turn every WTForms field into an optional one, and Airflow 2.11 validates
every provider's extra fields on every connection type's form, so a real ``InputRequired`` there
would block saving a Postgres connection), so there the label carries the marker instead.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_qmatic.config import CREDENTIAL_CACHES, DEFAULT_REDIS_CONN_ID, LANGUAGES, REGIONS

CONN_TYPE = "qmatic"

# name -> (label, description, JSON schema). Order is the order on the form.
EXTRA_FIELDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "region": (
        "Region",
        "Qmatic Cloud region of the tenant; ignored when Base URL is set.",
        {"type": ["string", "null"], "enum": list(REGIONS), "default": REGIONS[0]},
    ),
    "tenant": (
        "Tenant",
        "Qmatic account name, sent as X-ACCOUNT (lowercase, no spaces), for example isb.",
        {"type": "string"},
    ),
    "system_id": (
        "System ID",
        "The tenant's system id from Qmatic, sent as X-TENANT-ID on every API call.",
        {"type": "string"},
    ),
    "base_url": (
        "Base URL",
        "Optional. A custom Qmatic host (https://...) or the local sandbox (http://127.0.0.1:PORT).",
        {"type": ["string", "null"]},
    ),
    "language": (
        "Language",
        "Accept-Language for listings and searches.",
        {"type": ["string", "null"], "enum": list(LANGUAGES), "default": LANGUAGES[0]},
    ),
    "timeout": (
        "Timeout (s)",
        "Read timeout of each request, in seconds.",
        {"type": ["number", "null"], "default": 30},
    ),
    "requests_per_minute": (
        "Requests per minute",
        "The tenant's API limit; bulk jobs pace themselves to it.",
        {"type": ["number", "null"], "default": 100},
    ),
    # Not "token_cache": Airflow hides the value of any extra whose name contains "token", and its
    # form would then save "***". The hook still accepts token_cache in Extra JSON.
    "credential_cache": (
        "Credential cache",
        "file: share tokens and the request budget between task processes on a host; "
        "memory: per process only; redis: across every host of the cluster (needs the [redis] extra).",
        {"type": ["string", "null"], "enum": list(CREDENTIAL_CACHES), "default": "file"},
    ),
    "redis_conn_id": (
        "Redis connection",
        "With credential cache redis: the Airflow Redis connection every worker shares.",
        {"type": ["string", "null"], "default": DEFAULT_REDIS_CONN_ID},
    ),
    "endpoints": (
        "Endpoints",
        "Optional. A JSON object correcting a guessed API path for this tenant: operation -> path, "
        'e.g. {"reserve": "/external/v1/reservations"}. Checked before any request.',
        {"type": ["string", "null"]},
    ),
}

# Extras the hook reads that the form does not show (set in the connection's Extra JSON).
EXTRA_ONLY: tuple[str, ...] = ("credential_cache_dir",)

# Host is hidden because Base URL says the same thing with its scheme; a Host given in a connection
# URI or JSON is still honoured. Port stays on the form although Region or Base URL already decide
# the port: Airflow 3.3.2 refuses to test a saved connection with its stored secret unless the port
# the UI sends (0 for none) equals the stored one, so a stored port is what lets the Test button work
# there. The hook checks that a given port matches the URL it uses.
HIDDEN_FIELDS: list[str] = ["schema", "host"]
RELABELING: dict[str, str] = {"login": "Client ID", "password": "Client Secret"}
PLACEHOLDERS: dict[str, str] = {
    "login": "client id from your Qmatic representative",
    "password": "client secret",
    "port": "443 (or the Base URL's port)",
    "tenant": "account name, e.g. isb",
    "system_id": "tenant system id from Qmatic",
    "base_url": "optional: https://<subdomain> or http://127.0.0.1:<port> for the sandbox",
    "endpoints": '{"reserve": "/external/v1/reservations"}',
    # A field with a default shows it.
    **{name: str(schema["default"]) for name, (_, _, schema) in EXTRA_FIELDS.items() if "default" in schema},
}
REQUIRED_MARK = " *"


def is_required(schema: dict[str, Any]) -> bool:
    """Airflow's rule: a schema type without ``"null"`` makes the field required."""
    kind = schema.get("type")
    return bool(kind) and not (isinstance(kind, list) and "null" in kind)


def legacy_label(name: str) -> str:
    """The label on the hook-method form: the required marker is part of the text there."""
    label, _description, schema = EXTRA_FIELDS[name]
    return label + REQUIRED_MARK if is_required(schema) else label


def conn_fields() -> dict[str, dict[str, Any]]:
    """``conn-fields`` for provider info (Airflow 3.2+)."""
    return {
        name: {"label": label, "description": description, "schema": dict(schema)}
        for name, (label, description, schema) in EXTRA_FIELDS.items()
    }


def ui_field_behaviour() -> dict[str, Any]:
    """``ui-field-behaviour`` for provider info (kebab-case keys)."""
    return {
        "hidden-fields": list(HIDDEN_FIELDS),
        "relabeling": dict(RELABELING),
        "placeholders": dict(PLACEHOLDERS),
    }
