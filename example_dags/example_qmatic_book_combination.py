"""Book one Qmatic appointment for several services (Qmatic's service combinations): find the
first slot long enough for all of them, then book it for a customer.

The tenant must have service combinations switched on, and the branch must list the services as
combinable (QmaticHook().list_service_combinations(branch_id) shows what it does): otherwise the
booking fails before anything is reserved, naming the services and the branch. The local sandbox
has combinations switched on, every branch's services combinable, so this runs as-is against it.

Safe to trigger twice: a customer who already has an upcoming appointment for these services at
this branch is not booked again (the booking task is skipped and the log names the appointment).

The default ids are those of the local sandbox's seed 0 (branch "Stockholm City", services
"Passport application" and "Document pick-up"); replace them with your own tenant's ids.
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
    dag_id="example_qmatic_book_combination",
    description="Find the first Qmatic slot for several services and book them as one appointment",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,  # two quick Triggers run one after the other, so the second sees the first
    tags=["example", "qmatic"],
    params={
        "branch_id": "e3e70682-c209-4cac-a29f-6fbed82c07cd",  # sandbox seed 0: Stockholm City
        "service_ids": [
            "c8a70639-eb11-47b3-a7a9-c3787c65c1e5",  # sandbox seed 0: Passport application
            "e87a1613-e443-4f78-9558-867f5ba91faf",  # sandbox seed 0: Document pick-up
        ],
        "customer": {
            "personal_identifier": "19361117MARGARET1",
            "first_name": "Margaret",
            "last_name": "Hamilton",
            "email": "margaret@example.com",
        },
    },
    default_args={
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
    },
) as dag:
    # Slots for a combination last as long as all its services together (one resource type).
    find_slot = QmaticFindTimeslotsOperator(
        task_id="find_first_combination_slot",
        qmatic_conn_id="qmatic_default",
        branch_id="{{ params.branch_id }}",
        service_ids="{{ params.service_ids | tojson }}",
        limit=1,
    )

    # Reserve then confirm through Qmatic's /serviceCombination/ calls, with the single-service
    # booking's guarantees: a failed confirm releases the hold, a lost answer is read back.
    book = QmaticBookAppointmentOperator(
        task_id="book_combination",
        qmatic_conn_id="qmatic_default",
        branch_id="{{ params.branch_id }}",
        service_ids="{{ params.service_ids | tojson }}",
        start_time="{{ ti.xcom_pull(task_ids='find_first_combination_slot')[0]['start_time'] }}",
        customer={
            "personal_identifier": "{{ params.customer.personal_identifier }}",
            "first_name": "{{ params.customer.first_name }}",
            "last_name": "{{ params.customer.last_name }}",
            "email": "{{ params.customer.email }}",
        },
    )

    @task.short_circuit(retries=0)
    def not_booked_yet(params: dict[str, Any]) -> bool:
        """False (the booking is skipped) if the customer already has an upcoming appointment for
        these services here, found by Qmatic's combination search."""
        from airflow_provider_qmatic.flows import is_booked
        from airflow_provider_qmatic.hooks.qmatic import QmaticHook

        hook = QmaticHook(qmatic_conn_id="qmatic_default")
        now = datetime.now(timezone.utc)
        wanted = set(params["service_ids"])
        pid = params["customer"]["personal_identifier"]
        for appointment in hook.search_appointments(pid, combination=True):
            slot, branch = appointment.time_slot, appointment.branch
            if (
                is_booked(appointment)
                and branch is not None
                and branch.id == params["branch_id"]
                and appointment.service_ids_shown == wanted
                and slot is not None
                and slot.start_time is not None
                and slot.start_time > now
            ):
                print(f"Already booked: appointment {appointment.appointment_id}; nothing to book")
                return False
        return True

    not_booked_yet() >> find_slot >> book
