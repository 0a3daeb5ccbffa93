"""Book a waiting customer as soon as a slot frees up: a DAG scheduled on an asset whose watcher
polls Qmatic (Airflow 3's event-driven scheduling).

The asset's watcher, ``QmaticTimeslotEventTrigger``, runs in the triggerer for as long as this DAG
is scheduled on the asset: it lists the service's slots at the branch for the coming week, paced
with every other waiter of the tenant (at most half its requests a minute together), and emits an
asset event whenever free slots appear that it had not listed before. Each event runs this DAG,
which books the first announced slot for the waiting customer.

Safe to run twice, and to receive an event twice (a restarted triggerer announces the slots it sees
again): a customer with an upcoming appointment for this service at this branch is not booked again.
Triggered by hand, the run has no asset event and books nothing.

Airflow 2.11 has no asset watchers: there this file defines no DAG and logs why.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

try:  # Airflow 3
    from airflow.sdk import DAG, Asset, AssetWatcher, task

    from airflow_provider_qmatic.triggers.timeslot_events import QmaticTimeslotEventTrigger
except ImportError:  # Airflow 2.11
    AssetWatcher = None

from airflow_provider_qmatic.operators.appointments import QmaticBookAppointmentOperator

BRANCH_ID = "e3e70682-c209-4cac-a29f-6fbed82c07cd"  # sandbox seed 0: Stockholm City
SERVICE_ID = "c8a70639-eb11-47b3-a7a9-c3787c65c1e5"  # sandbox seed 0: Passport application

if AssetWatcher is None:
    logging.getLogger(__name__).warning(
        "example_qmatic_book_on_free_slot needs asset watchers (Airflow 3.0 or later); this Airflow "
        "has none, so the file defines no DAG. Use QmaticTimeslotAvailableSensor instead "
        "(example_qmatic_wait_and_book)."
    )
else:
    FREE_SLOT = Asset(
        name="qmatic_free_slot_stockholm_passport",
        watchers=[
            AssetWatcher(
                name="qmatic_free_slot_stockholm_passport_watch",
                trigger=QmaticTimeslotEventTrigger(
                    qmatic_conn_id="qmatic_default",
                    branch_id=BRANCH_ID,
                    service_id=SERVICE_ID,
                    days_ahead=7,
                    time_from="08:00",  # branch time: mornings only
                    time_to="12:00",
                    poll_interval=60,  # grows to max_poll_interval while nothing changes
                    max_poll_interval=300,
                ),
            )
        ],
    )

    with DAG(
        dag_id="example_qmatic_book_on_free_slot",
        description="Book a waiting customer when a watched Qmatic slot frees up (asset watcher)",
        schedule=[FREE_SLOT],
        start_date=datetime(2025, 1, 1),
        catchup=False,
        max_active_runs=1,  # two events in quick succession: the second run sees the first booking
        tags=["example", "qmatic"],
        params={
            "customer": {
                "personal_identifier": "19141109HEDY1",
                "first_name": "Hedy",
                "last_name": "Lamarr",
                "email": "hedy@example.com",
            },
        },
        default_args={"retries": 3, "retry_delay": timedelta(seconds=30), "retry_exponential_backoff": True},
    ) as dag:

        @task.short_circuit(retries=0)
        def slot_to_book(
            params: dict[str, Any], triggering_asset_events: Any = None
        ) -> dict[str, Any] | None:
            """The first slot the latest event announced, or None (the booking is skipped): no event
            (triggered by hand), or the customer is already booked here."""
            from airflow_provider_qmatic.flows import is_booked
            from airflow_provider_qmatic.hooks.qmatic import QmaticHook

            events = [event for found in (triggering_asset_events or {}).values() for event in found]
            slots = (events[-1].extra.get("payload") or {}).get("slots") if events else None
            if not slots:
                print("No asset event with free slots (triggered by hand?): nothing to book")
                return None
            hook = QmaticHook(qmatic_conn_id="qmatic_default")
            now = datetime.now(timezone.utc)
            for appointment in hook.search_appointments(params["customer"]["personal_identifier"]):
                slot, branch, service = appointment.time_slot, appointment.branch, appointment.service
                if (
                    is_booked(appointment)
                    and branch is not None
                    and branch.id == BRANCH_ID
                    and service is not None
                    and service.id == SERVICE_ID
                    and slot is not None
                    and slot.start_time is not None
                    and slot.start_time > now
                ):
                    print(f"Already booked: appointment {appointment.appointment_id}; nothing to book")
                    return None
            return dict(slots[0])

        QmaticBookAppointmentOperator(
            task_id="book_appointment",
            qmatic_conn_id="qmatic_default",
            branch_id=BRANCH_ID,
            service_id=SERVICE_ID,
            start_time="{{ ti.xcom_pull(task_ids='slot_to_book')['start_time'] }}",
            end_time="{{ ti.xcom_pull(task_ids='slot_to_book')['end_time'] }}",
            customer={
                "personal_identifier": "{{ params.customer.personal_identifier }}",
                "first_name": "{{ params.customer.first_name }}",
                "last_name": "{{ params.customer.last_name }}",
                "email": "{{ params.customer.email }}",
            },
            notes="Booked by Airflow when a watched slot freed up",
        ).set_upstream(slot_to_book())
