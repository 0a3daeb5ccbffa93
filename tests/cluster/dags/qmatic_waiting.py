"""The test cluster's waiting DAGs: the slot sensor deferred to a real triggerer, and an asset watcher.

- ``qmatic_cluster_wait_and_book``: the sensor (deferrable by default: no ``deferrable`` argument)
  waits for a free slot in the window its run's conf names, and a booking task books the slot it
  found for one customer. The harness fills that one slot first and frees it once the task is seen
  deferred.
- ``qmatic_cluster_wait_timeout``: four sensors on a window with no slot at all (the branch is
  closed at 03:00), each with a 20 s ``timeout``: deferred and poking, each with and without
  ``soft_fail``. The deferred ones time out through the triggerer and the scheduler's trigger
  timeout; all four must end as Airflow's own sensors do (failed without retry, or skipped).
- ``qmatic_cluster_book_on_free_slot``: scheduled on an asset whose watcher is
  :class:`~airflow_provider_qmatic.triggers.timeslot_events.QmaticTimeslotEventTrigger`; each run
  books the first slot of the event that started it. Paused at creation, so the watcher runs only
  once the harness has filled the watched window and unpauses it (Airflow runs no watcher of a
  paused DAG): a free slot in the window would otherwise start a run while the bulk test runs.

Short poll intervals keep the wait a few seconds; the tenant's waiting budget (half of the
connection's 30 requests a minute) still paces every poll.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

try:  # Airflow 3 (the cluster's); the fallback only keeps the module importable by other test runs
    from airflow.sdk import DAG, Asset, AssetWatcher, task

    from airflow_provider_qmatic.triggers.timeslot_events import QmaticTimeslotEventTrigger
except ImportError:  # Airflow 2.11: no asset watchers
    AssetWatcher = None
    from airflow import DAG

from airflow_provider_qmatic.operators.appointments import QmaticBookAppointmentOperator
from airflow_provider_qmatic.sensors.timeslots import QmaticTimeslotAvailableSensor

WAIT_DAG_ID = "qmatic_cluster_wait_and_book"
TIMEOUT_DAG_ID = "qmatic_cluster_wait_timeout"
WATCH_DAG_ID = "qmatic_cluster_book_on_free_slot"
# The sandbox's seed 0 (the harness starts it with --seed 0): "Stockholm City", and two services the
# bulk DAG leaves alone.
BRANCH_ID = "e3e70682-c209-4cac-a29f-6fbed82c07cd"
PICKUP_SERVICE_ID = "e87a1613-e443-4f78-9558-867f5ba91faf"  # "Document pick-up": the sensors
LICENCE_SERVICE_ID = "7a024204-f7c1-4d87-8da5-e709d4713d60"  # "Driving licence renewal": the watcher
# The watched window: the 09:00 slots (branch time) of today and the next WATCH_DAYS_AHEAD days.
WATCH_TIME = "09:00"
WATCH_DAYS_AHEAD = 3
TIMEOUT_SECONDS = 20
# (task id, deferrable, soft_fail) of the timeout DAG's sensors, and how each must end.
TIMEOUT_SENSORS = {
    "deferred": (True, False, "failed"),
    "deferred_soft_fail": (True, True, "skipped"),
    "poking": (False, False, "failed"),
    "poking_soft_fail": (False, True, "skipped"),
}


def customer(personal_identifier: str) -> dict[str, str]:
    return {
        "personal_identifier": personal_identifier,
        "first_name": "Test",
        "last_name": personal_identifier.title(),
        "email": f"{personal_identifier.lower()}@example.com",
    }


WAITING_CUSTOMER = "CLUSTERW0000001"
WATCHING_CUSTOMER = "CLUSTERW0000002"
_TEMPLATED_CUSTOMER = {
    key: f"{{{{ params.customer.{key} }}}}"
    for key in ("personal_identifier", "first_name", "last_name", "email")
}


def book_task(start: str, end: str) -> QmaticBookAppointmentOperator:
    return QmaticBookAppointmentOperator(
        task_id="book_appointment",
        branch_id="{{ params.branch_id }}",
        service_id="{{ params.service_id }}",
        start_time=start,
        end_time=end,
        customer=_TEMPLATED_CUSTOMER,
        notes="Booked by the cluster test when a slot opened",
    )


with DAG(
    dag_id=WAIT_DAG_ID,
    description="Wait (deferred, in the triggerer) for a slot to open, then book it",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    params={
        "branch_id": BRANCH_ID,
        "service_id": PICKUP_SERVICE_ID,
        "date": "",
        "time_from": "",
        "time_to": "",
        "customer": customer(WAITING_CUSTOMER),
    },
) as wait_dag:
    found = QmaticTimeslotAvailableSensor(
        task_id="wait_for_free_slot",
        branch_id="{{ params.branch_id }}",
        service_id="{{ params.service_id }}",
        date_from="{{ params.date }}",
        date_to="{{ params.date }}",
        time_from="{{ params.time_from }}",
        time_to="{{ params.time_to }}",
        poke_interval=1,
        max_poll_interval=3,
        timeout=300,
    )
    slot = "ti.xcom_pull(task_ids='wait_for_free_slot')[0]"
    found >> book_task(f"{{{{ {slot}['start_time'] }}}}", f"{{{{ {slot}['end_time'] }}}}")


with DAG(
    dag_id=TIMEOUT_DAG_ID,
    description="Sensors that time out: deferred and poking, with and without soft_fail",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    # A sensor's timeout is final: Airflow does not retry it, whatever the retries.
    default_args={"retries": 1, "retry_delay": timedelta(seconds=5)},
) as timeout_dag:
    for task_id, (deferrable, soft_fail, _) in TIMEOUT_SENSORS.items():
        QmaticTimeslotAvailableSensor(
            task_id=task_id,
            branch_id=BRANCH_ID,
            service_id=PICKUP_SERVICE_ID,
            time_from="03:00",  # the branch is closed: no slot, ever
            time_to="03:01",
            deferrable=deferrable,
            soft_fail=soft_fail,
            poke_interval=4,
            max_poll_interval=8,
            timeout=TIMEOUT_SECONDS,
        )


if AssetWatcher is not None:
    FREE_SLOT = Asset(
        name="qmatic_cluster_free_licence_slot",
        watchers=[
            AssetWatcher(
                name="qmatic_cluster_free_licence_slot_watch",
                trigger=QmaticTimeslotEventTrigger(
                    branch_id=BRANCH_ID,
                    service_id=LICENCE_SERVICE_ID,
                    days_ahead=WATCH_DAYS_AHEAD,
                    time_from=WATCH_TIME,
                    time_to="09:01",
                    poll_interval=1,
                    max_poll_interval=3,
                ),
            )
        ],
    )

    with DAG(
        dag_id=WATCH_DAG_ID,
        description="Book the slot a watched window frees up (asset watcher)",
        schedule=[FREE_SLOT],
        start_date=datetime(2025, 1, 1),
        catchup=False,
        is_paused_upon_creation=True,  # the harness unpauses it once the window is full
        max_active_runs=1,
        params={
            "branch_id": BRANCH_ID,
            "service_id": LICENCE_SERVICE_ID,
            "customer": customer(WATCHING_CUSTOMER),
        },
    ) as watch_dag:

        @task
        def announced_slot(triggering_asset_events: Any = None) -> dict[str, Any]:
            """The first slot of the event that started this run."""
            events = [event for found in (triggering_asset_events or {}).values() for event in found]
            if not events:
                raise ValueError("no asset event started this run")
            return dict(events[-1].extra["payload"]["slots"][0])

        announced_slot() >> book_task(
            "{{ ti.xcom_pull(task_ids='announced_slot')['start_time'] }}",
            "{{ ti.xcom_pull(task_ids='announced_slot')['end_time'] }}",
        )
