"""Cancel every upcoming Qmatic appointment of one customer (e.g. after an erasure request).

A TaskFlow task uses :class:`~airflow_provider_qmatic.hooks.qmatic.QmaticHook` to search the
customer's appointments; the cancel operator is then mapped over the ids it returns. To cancel a
single known appointment, use the operator alone with ``appointment_id="..."``.

    airflow dags trigger example_qmatic_cancel --conf '{"personal_identifier": "19800430ADA01"}'
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.decorators import task

from airflow_provider_qmatic.operators.appointments import QmaticCancelAppointmentOperator

with DAG(
    dag_id="example_qmatic_cancel",
    description="Cancel a customer's upcoming Qmatic appointments",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "qmatic"],
    params={"personal_identifier": "19800430ADA01"},
    default_args={
        # 429 (over 100 requests per minute) and 5xx are retried; 403/404/409 fail at once.
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
    },
) as dag:

    @task
    def upcoming_appointment_ids(**context: Any) -> list[str]:
        """Ids of the customer's booked appointments that have not started yet."""
        # Imported inside the task: DAG files are parsed often, the hook is needed only here.
        from airflow_provider_qmatic.api.contract import Scope
        from airflow_provider_qmatic.flows import is_booked
        from airflow_provider_qmatic.hooks.qmatic import QmaticHook

        hook = QmaticHook(qmatic_conn_id="qmatic_default")
        # Reads accept any scope: ask for the cancel scope, the one this DAG needs anyway, so a
        # client granted only "cancel" can run it (least privilege).
        found = hook.client.search_appointments(
            context["params"]["personal_identifier"], scopes=frozenset({Scope.CANCEL})
        )
        now = datetime.now(timezone.utc)
        return [
            a.appointment_id
            for a in found
            if is_booked(a) and a.time_slot is not None and a.time_slot.start_time > now
        ]

    # One mapped task per appointment. A cancel that is retried (or an appointment cancelled
    # meanwhile) succeeds with already_cancelled=True; missing_ok=True also accepts one that is gone.
    QmaticCancelAppointmentOperator.partial(
        task_id="cancel_appointment",
        qmatic_conn_id="qmatic_default",
        missing_ok=True,
    ).expand(appointment_id=upcoming_appointment_ids())
