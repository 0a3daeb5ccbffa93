"""Move a Qmatic appointment to another time (same branch and service).

Trigger it with the appointment's id and the new start::

    airflow dags trigger example_qmatic_reschedule --conf '{
        "appointment_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
        "new_start_time": "2026-12-02 10:00", "timezone": "Europe/Stockholm"}'

``new_start_time`` may carry its own offset (``2026-12-02T10:00:00+01:00``); without one it is read
in ``timezone`` (the branch's zone). The appointment keeps its length unless ``new_end_time`` is set.
"""

from __future__ import annotations

from datetime import datetime, timedelta

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG

from airflow_provider_qmatic.operators.appointments import QmaticRescheduleAppointmentOperator

with DAG(
    dag_id="example_qmatic_reschedule",
    description="Reschedule one Qmatic appointment",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "qmatic"],
    params={
        "appointment_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
        "new_start_time": "2026-12-02 10:00",
        "new_end_time": "",
        "timezone": "Europe/Stockholm",
    },
    default_args={
        # Rate limits (100 requests per minute) and gateway faults are worth a retry; a taken slot
        # or an unknown appointment fails at once, without retries.
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
    },
) as dag:
    # Reserve the new slot, then move the appointment onto it. If the move fails the new
    # reservation is released (no 15-minute hold left behind) and the old time is kept. A retry
    # after a move whose answer was lost finds the appointment already there and succeeds.
    # The token asks for the reschedule scope only (least privilege).
    QmaticRescheduleAppointmentOperator(
        task_id="reschedule_appointment",
        qmatic_conn_id="qmatic_default",
        appointment_id="{{ params.appointment_id }}",
        start_time="{{ params.new_start_time }}",
        end_time="{{ params.new_end_time }}",
        timezone="{{ params.timezone }}",
    )
