"""Wait for a free Qmatic slot in a window, then book it for a customer.

The branch may be fully booked: the sensor waits (deferred to Airflow's triggerer, holding no
worker slot) until a slot in the window frees up, for example when another customer cancels, and
hands the slot to the booking task. Waiting sensors of a tenant together use at most half of its
100 requests a minute, and poll less often while nothing changes (see docs/sensors.md).

Safe to trigger twice: a customer who already has an upcoming appointment for this service at this
branch is not booked again (the wait and the booking are skipped, and the log names the appointment).
If someone else takes the slot between the wait and the booking, the booking fails without retries
(the slot is taken); trigger the DAG again to wait for the next one.

Trigger it with a config to choose the window and the customer, for example::

    airflow dags trigger example_qmatic_wait_and_book --conf '{"time_from": "08:00", "time_to": "10:00",
        "weekdays": ["mon", "tue"], "customer": {"personal_identifier": "19120623ALAN",
        "first_name": "Alan", "last_name": "Turing", "email": "alan@example.com"}}'

The default ids are those of the local sandbox's seed 0 (``qmatic-sandbox``); replace them with your
tenant's ids.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.decorators import task

from airflow_provider_qmatic.operators.appointments import QmaticBookAppointmentOperator
from airflow_provider_qmatic.sensors.timeslots import QmaticTimeslotAvailableSensor

with DAG(
    dag_id="example_qmatic_wait_and_book",
    description="Wait for a free Qmatic slot in a window, then book it for one customer",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,  # two quick Triggers run one after the other, so the second sees the first
    tags=["example", "qmatic"],
    params={
        "branch_id": "e3e70682-c209-4cac-a29f-6fbed82c07cd",  # sandbox seed 0: Stockholm City
        "service_id": "c8a70639-eb11-47b3-a7a9-c3787c65c1e5",  # sandbox seed 0: Passport application
        # The window: the coming week (empty dates), any time of day, any weekday. Times are the
        # branch's wall clock ("08:00"); weekdays as ["mon", "fri"].
        "date_from": "",
        "date_to": "",
        "time_from": "",
        "time_to": "",
        "weekdays": None,
        "customer": {
            "personal_identifier": "19120623ALAN",
            "first_name": "Alan",
            "last_name": "Turing",
            "email": "alan@example.com",
        },
    },
    default_args={
        # A 429 or a gateway fault is worth a retry; an unknown id, a forbidden tenant or a taken
        # slot fails at once anyway.
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
    },
) as dag:

    @task.short_circuit(retries=0)
    def not_booked_yet(params: dict[str, Any]) -> bool:
        """False (the wait and the booking are skipped) if the customer already has an upcoming
        appointment for this service at this branch: a second run books nobody twice."""
        from airflow_provider_qmatic.flows import is_booked
        from airflow_provider_qmatic.hooks.qmatic import QmaticHook

        hook = QmaticHook(qmatic_conn_id="qmatic_default")
        now = datetime.now(timezone.utc)
        for appointment in hook.search_appointments(params["customer"]["personal_identifier"]):
            slot, branch, service = appointment.time_slot, appointment.branch, appointment.service
            if (
                is_booked(appointment)
                and branch is not None
                and branch.id == params["branch_id"]
                and service is not None
                and service.id == params["service_id"]
                and slot is not None
                and slot.start_time is not None
                and slot.start_time > now
            ):
                print(f"Already booked: appointment {appointment.appointment_id}; nothing to wait for")
                return False
        return True

    # Deferred by default: one poll here, then the wait runs in the triggerer. It gives up after
    # `timeout` (failing the run; soft_fail=True would skip it instead). Its XCom is the matching
    # slots, earliest first, in the form QmaticFindTimeslotsOperator returns.
    wait = QmaticTimeslotAvailableSensor(
        task_id="wait_for_free_slot",
        qmatic_conn_id="qmatic_default",
        branch_id="{{ params.branch_id }}",
        service_id="{{ params.service_id }}",
        date_from="{{ params.date_from }}",
        date_to="{{ params.date_to }}",
        time_from="{{ params.time_from }}",
        time_to="{{ params.time_to }}",
        weekdays="{{ params.weekdays | join(',') if params.weekdays else '' }}",
        poke_interval=60,  # the first interval; it grows to max_poll_interval while nothing changes
        max_poll_interval=300,
        timeout=timedelta(days=3),
    )

    # Reserve and confirm in one task, exactly once (a retry finds its own booking).
    book = QmaticBookAppointmentOperator(
        task_id="book_appointment",
        qmatic_conn_id="qmatic_default",
        branch_id="{{ params.branch_id }}",
        service_id="{{ params.service_id }}",
        start_time="{{ ti.xcom_pull(task_ids='wait_for_free_slot')[0]['start_time'] }}",
        end_time="{{ ti.xcom_pull(task_ids='wait_for_free_slot')[0]['end_time'] }}",
        customer={
            "personal_identifier": "{{ params.customer.personal_identifier }}",
            "first_name": "{{ params.customer.first_name }}",
            "last_name": "{{ params.customer.last_name }}",
            "email": "{{ params.customer.email }}",
        },
        notes="Booked by Airflow when a slot opened",
    )

    not_booked_yet() >> wait >> book
