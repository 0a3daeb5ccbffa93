"""A DAG that uses QmaticHook from TaskFlow code, then checks its secrets are registered as masked.

It does not print them on purpose: ``airflow dags test`` runs tasks in-process without Airflow's
log-masking step (on 3.x and 2.11 alike; Airflow's own connection passwords show there too), so a
deliberate print would prove nothing about the provider. What it proves: every secret is known to
Airflow's masker (which masks real task logs and rendered fields), and the provider itself logs none.
"""

from __future__ import annotations

import logging

import pendulum

try:
    from airflow.sdk import dag, task
except ImportError:  # Airflow 2.11
    from airflow.decorators import dag, task  # type: ignore[no-redef]

log = logging.getLogger(__name__)


@dag(schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False, tags=["test"])
def qmatic_hook_probe() -> None:
    @task
    def probe() -> dict[str, object]:
        from airflow_provider_qmatic.api.contract import Scope
        from airflow_provider_qmatic.client.auth import basic_credentials
        from airflow_provider_qmatic.hooks.qmatic import QmaticHook

        try:
            from airflow.sdk.log import redact  # type: ignore[attr-defined]
        except ImportError:
            from airflow.utils.log.secrets_masker import redact

        hook = QmaticHook()
        branches = hook.list_branches()
        config = hook.config
        secrets = {
            "token": hook.client.tokens.token(frozenset({Scope.BOOK})),
            "client_secret": config.client_secret,
            "basic": basic_credentials(config.client_id, config.client_secret),
        }
        unmasked = [name for name, value in secrets.items() if value in str(redact(f"x {value} y"))]
        if unmasked:
            raise RuntimeError(f"not registered with the secret masker: {unmasked}")
        log.info("probe listed %d branches for tenant %s", len(branches), config.tenant)
        return {"branches": len(branches), "tenant": config.tenant}

    probe()


qmatic_hook_probe()
