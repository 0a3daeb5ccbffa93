"""The Qmatic connection form, described once.

Airflow 3.2+ reads it declaratively from the provider info (``conn-fields`` and
``ui-field-behaviour``); Airflow 2.11, 3.0 and 3.1 ask the hook (``get_connection_form_widgets`` /
``get_ui_field_behaviour``). Both are generated from the tables below, so the two forms cannot
drift apart. Plain data only: this module is imported by ``get_provider_info``.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_qmatic.config import LANGUAGES, REGIONS

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
        "Qmatic account name, sent as X-ACCOUNT (lowercase, no spaces).",
        {"type": ["string", "null"]},
    ),
    "system_id": (
        "System ID",
        "The tenant's system id, sent as X-TENANT-ID on API calls.",
        {"type": ["string", "null"]},
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
        "memory: per process only.",
        {"type": ["string", "null"], "enum": ["file", "memory"], "default": "file"},
    ),
}

# Host and port are hidden because Base URL says the same thing with its scheme; a Host given in a
# connection URI or JSON is still honoured. Extra stays visible for rarely used keys.
HIDDEN_FIELDS: list[str] = ["schema", "port", "host"]
RELABELING: dict[str, str] = {"login": "Client ID", "password": "Client Secret"}
PLACEHOLDERS: dict[str, str] = {
    "login": "client id from your Qmatic representative",
    "password": "client secret",
    "region": REGIONS[0],
    "tenant": "account name, e.g. isb",
    "system_id": "tenant system id",
    "base_url": "optional: https://<subdomain> or http://127.0.0.1:<port> for the sandbox",
    "language": LANGUAGES[0],
    "timeout": "30",
    "requests_per_minute": "100",
    "credential_cache": "file",
}


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
