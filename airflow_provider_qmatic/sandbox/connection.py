"""The Airflow connection that points at a sandbox, in the forms Airflow accepts from the environment.

Plain strings only (no Airflow import): Airflow reads ``AIRFLOW_CONN_<CONN_ID>`` as JSON
(``{"conn_type": "qmatic", "login": ..., "password": ..., "extra": {...}}``) or as a URI.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlencode

from airflow_provider_qmatic import DEFAULT_CONN_ID
from airflow_provider_qmatic.sandbox.settings import SandboxClient


def connection_extra(client: SandboxClient, base_url: str) -> dict[str, Any]:
    return {"tenant": client.tenant, "system_id": client.system_id, "base_url": base_url}


def connection_json(client: SandboxClient, base_url: str) -> str:
    """The JSON form of the connection (what ``AIRFLOW_CONN_...`` may hold)."""
    return json.dumps(
        {
            "conn_type": "qmatic",
            "login": client.client_id,
            "password": client.client_secret,
            "extra": connection_extra(client, base_url),
        }
    )


def connection_uri(client: SandboxClient, base_url: str) -> str:
    """The URI form: ``qmatic://<id>:<secret>@/?tenant=...&system_id=...&base_url=...``."""
    login = quote(client.client_id, safe="")
    password = quote(client.client_secret, safe="")
    return f"qmatic://{login}:{password}@/?{urlencode(connection_extra(client, base_url))}"


def env_var_name(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def connection_env(client: SandboxClient, base_url: str, conn_id: str = DEFAULT_CONN_ID) -> dict[str, str]:
    """``{"AIRFLOW_CONN_<CONN_ID>": <json>}``, ready for ``os.environ.update`` or a subprocess."""
    return {env_var_name(conn_id): connection_json(client, base_url)}
