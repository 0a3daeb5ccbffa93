"""Find free Qmatic slots, then book one per customer with a mapped task.

The slot list and the customer list are paired (``zip``) and turned into the booking operator's
arguments (``map``); ``expand_kwargs`` then creates one booking task per pair, each retried on its
own. Trigger it with your customers::

    airflow dags trigger example_qmatic_find_and_book --conf '{"customers": [{"personal_identifier":
        "19800430ADA01", "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com"}]}'

Safe to trigger twice: customers who already have an upcoming appointment for the service at the
branch are left out, so a second run books nobody twice.

For hundreds or thousands of bookings use the bulk operators instead: they pace requests across
the 100-per-minute limit within one task rather than one task per booking.
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


def booking_kwargs(pair: Any) -> dict[str, Any]:
    """One (slot, customer) pair as the booking operator's arguments.

    Runs when the mapped task starts, so keep it small and free of I/O.
    """
    slot, customer = pair
    return {"start_time": slot["start_time"], "end_time": slot["end_time"], "customer": customer}


with DAG(
    dag_id="example_qmatic_find_and_book",
    description="Find free Qmatic slots and book one per customer (dynamic task mapping)",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    tags=["example", "qmatic"],
    params={
        "branch_id": "e3e70682-c209-4cac-a29f-6fbed82c07cd",  # sandbox seed 0: Stockholm City
        "service_id": "c8a70639-eb11-47b3-a7a9-c3787c65c1e5",  # sandbox seed 0: Passport application
        "customers": [
            {
                "personal_identifier": "19800430ADA01",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "email": "ada@example.com",
            },
            {
                "personal_identifier": "19061209GRACE",
                "first_name": "Grace",
                "last_name": "Hopper",
                "email": "grace@example.com",
            },
        ],
    },
    default_args={
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
    },
    # Parallel bookings share Qmatic's 100 requests per minute (2 requests per booking); a few at a
    # time stay well below it, and any 429 is waited out by the client and then by task retries.
    max_active_tasks=8,
    max_active_runs=1,  # a second run starts after the first, and so sees its bookings
) as dag:
    # No Airflow retries for this read: the client already waits out 429s and server faults, and
    # what is left (a wrong secret, a missing scope) no retry can fix, so the run fails at once.
    @task(retries=0)
    def customers_to_book(params: dict[str, Any]) -> list[dict[str, Any]]:
        """This run's customers without an upcoming appointment for the service at the branch.

        In production, read the customers from your system of record.
        """
        from airflow_provider_qmatic.flows import is_booked
        from airflow_provider_qmatic.hooks.qmatic import QmaticHook

        hook = QmaticHook(qmatic_conn_id="qmatic_default")
        now = datetime.now(timezone.utc)
        to_book = []
        for number, person in enumerate(params["customers"], 1):
            booked = [
                a.appointment_id
                for a in hook.search_appointments(person["personal_identifier"])
                if is_booked(a)
                and a.branch is not None
                and a.branch.id == params["branch_id"]
                and a.service is not None
                and a.service.id == params["service_id"]
                and a.time_slot is not None
                and a.time_slot.start_time is not None
                and a.time_slot.start_time > now
            ]
            if booked:
                print(f"Customer {number} already has appointment {booked[0]}: left out")
            else:
                to_book.append(person)
        return to_book

    customers = customers_to_book()

    # Only as many slots as there are customers: the limit is rendered from the XCom of the task
    # above (each slot's start_time and end_time carry the branch's offset).
    slots = QmaticFindTimeslotsOperator(
        task_id="find_free_slots",
        qmatic_conn_id="qmatic_default",
        branch_id="{{ params.branch_id }}",
        service_id="{{ params.service_id }}",
        # date_from and date_to are left out: today and a week later. Templates such as "{{ ds }}"
        # work too where runs have a logical date (Airflow 3 manual runs may have none).
        limit="{{ ti.xcom_pull(task_ids='customers_to_book') | length }}",
    )
    customers >> slots

    # Each mapped booking reserves and confirms within its own task (a reservation is held for only
    # 15 minutes) and is exactly-once: a retried task finds its confirmed appointment and returns it.
    QmaticBookAppointmentOperator.partial(
        task_id="book_appointment",
        qmatic_conn_id="qmatic_default",
        branch_id="{{ params.branch_id }}",
        service_id="{{ params.service_id }}",
        notes="Booked by Airflow run {{ run_id }}",
    ).expand_kwargs(slots.output.zip(customers).map(booking_kwargs))
