"""Book one Qmatic appointment: find the first free slot, then book it for a customer.

Safe to trigger twice: a customer who already has an upcoming appointment for this service at this
branch is not booked again (the booking task is skipped and the log names the appointment).

Trigger it with a config to choose the branch, service and customer, for example::

    airflow dags trigger example_qmatic_book --conf '{"customer": {"personal_identifier": "19800430X1234",
        "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}}'

The default ids are those of the local sandbox's seed 0 (``qmatic-sandbox``, branch "Stockholm City",
service "Passport application"); replace them with your own tenant's ids (QmaticHook().list_branches()
and list_services(branch_id) print them).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.decorators import task

from airflow_provider_qmatic.operators.appointments import (
    QmaticBookAppointmentOperator,
    QmaticFindTimeslotsOperator,
)

with DAG(
    dag_id="example_qmatic_book",
    description="Find the first free Qmatic slot and book it for one customer",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,  # two quick Triggers run one after the other, so the second sees the first
    tags=["example", "qmatic"],
    params={
        "branch_id": "e3e70682-c209-4cac-a29f-6fbed82c07cd",  # sandbox seed 0: Stockholm City
        "service_id": "c8a70639-eb11-47b3-a7a9-c3787c65c1e5",  # sandbox seed 0: Passport application
        "notes": "Booked by Airflow",
        "customer": {
            "personal_identifier": "19800430ADA01",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada@example.com",
        },
    },
    default_args={
        # Qmatic allows 100 requests per minute: a short back-off lets a 429 or a gateway 5xx pass.
        # Errors that a retry cannot fix (bad input, 403, 404, slot taken) fail at once anyway.
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
    },
) as dag:
    # Slots exist only on future weekdays: take the earliest free one in the coming week (date_from
    # defaults to today, date_to to a week later; both accept templates such as "{{ ds }}").
    # Looking the slot up in the same run avoids booking a stale, hard-coded time.
    find_slot = QmaticFindTimeslotsOperator(
        task_id="find_first_free_slot",
        qmatic_conn_id="qmatic_default",
        branch_id="{{ params.branch_id }}",
        service_id="{{ params.service_id }}",
        limit=1,
    )

    # Reserve then confirm in one task: Qmatic holds a reservation for only 15 minutes, so the two
    # steps never wait for a scheduler slot in between, and a failed confirm releases the hold.
    # Exactly once: if this task is retried after a booking whose answer was lost, it finds the
    # customer's appointment at this slot and returns it instead of booking again.
    book = QmaticBookAppointmentOperator(
        task_id="book_appointment",
        qmatic_conn_id="qmatic_default",
        branch_id="{{ params.branch_id }}",
        service_id="{{ params.service_id }}",
        # Times carry the branch's UTC offset (e.g. 2026-12-01T09:00:00+01:00). end_time is left
        # out: the operator takes the service's duration from Qmatic.
        start_time="{{ ti.xcom_pull(task_ids='find_first_free_slot')[0]['start_time'] }}",
        # Each value is a template; the dict stays a dict (no render_template_as_native_obj needed).
        customer={
            "personal_identifier": "{{ params.customer.personal_identifier }}",
            "first_name": "{{ params.customer.first_name }}",
            "last_name": "{{ params.customer.last_name }}",
            "email": "{{ params.customer.email }}",
        },
        notes="{{ params.notes }}",
    )

    # No Airflow retries for this read: the client already waits out 429s and server faults, and
    # what is left (a wrong secret, a missing scope) no retry can fix, so the run fails at once.
    @task.short_circuit(retries=0)
    def not_booked_yet(params: dict[str, Any]) -> bool:
        """False (the booking is skipped) if the customer already has an upcoming appointment here.

        The booking operator is exactly-once within a run (a retry finds its own booking); this
        check makes a second run, e.g. a second press of Trigger, book nobody twice.
        """
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
                print(f"Already booked: appointment {appointment.appointment_id}; nothing to book")
                return False
        return True

    not_booked_yet() >> find_slot >> book
