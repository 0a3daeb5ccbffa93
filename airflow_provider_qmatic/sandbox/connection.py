"""The Airflow connection that points at a sandbox, in the forms Airflow accepts from the environment.

Plain strings only (no Airflow import): Airflow reads ``AIRFLOW_CONN_<CONN_ID>`` as JSON
(``{"conn_type": "qmatic", "login": ..., "password": ..., "extra": {...}}``) or as a URI.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

from airflow_provider_qmatic import DEFAULT_CONN_ID
from airflow_provider_qmatic.sandbox.settings import SandboxClient


def connection_extra(
    client: SandboxClient, base_url: str, endpoints: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The connection's extra; ``endpoints`` (the sandbox's moved paths) only when there are any."""
    extra: dict[str, Any] = {"tenant": client.tenant, "system_id": client.system_id, "base_url": base_url}
    if endpoints:
        extra["endpoints"] = dict(endpoints)
    return extra


def connection_json(client: SandboxClient, base_url: str, endpoints: Mapping[str, str] | None = None) -> str:
    """The JSON form of the connection (what ``AIRFLOW_CONN_...`` may hold)."""
    return json.dumps(
        {
            "conn_type": "qmatic",
            "login": client.client_id,
            "password": client.client_secret,
            "extra": connection_extra(client, base_url, endpoints),
        }
    )


def connection_uri(client: SandboxClient, base_url: str, endpoints: Mapping[str, str] | None = None) -> str:
    """The URI form: ``qmatic://<id>:<secret>@/?tenant=...&system_id=...&base_url=...``; an
    ``endpoints`` object travels as JSON text (a URI's extra values are strings)."""
    login = quote(client.client_id, safe="")
    password = quote(client.client_secret, safe="")
    extra = connection_extra(client, base_url, endpoints)
    if "endpoints" in extra:
        extra["endpoints"] = json.dumps(extra["endpoints"])
    return f"qmatic://{login}:{password}@/?{urlencode(extra)}"


def env_var_name(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def connection_env(
    client: SandboxClient,
    base_url: str,
    conn_id: str = DEFAULT_CONN_ID,
    endpoints: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``{"AIRFLOW_CONN_<CONN_ID>": <json>}``, ready for ``os.environ.update`` or a subprocess."""
    return {env_var_name(conn_id): connection_json(client, base_url, endpoints)}
