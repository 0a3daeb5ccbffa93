"""The test cluster's DAG: a bulk booking split into mapped tasks, plus single bookings, at once.

``plan`` asks the sandbox for free slots and writes one CSV file per chunk of customers into
``$QMATIC_CLUSTER_DATA`` (a directory every "host" of the test cluster sees, as object storage would
be on a real one), so no personal data goes through XCom. ``bulk_book`` is mapped over the chunk
files; ``book_single`` is mapped over a few customers and runs beside the bulk tasks, competing for
the same tenant budget. The harness (``tests/cluster/test_cluster.py``) kills one worker while a
``bulk_book`` task runs on it; the retries below let Airflow run that task again on the other one.

The customers' identifiers name their chunk (``CLUSTERB<chunk><row>``) and the singles
(``CLUSTERS<n>``), and a chunk's rows carry its name in their notes, which go with the reservation:
so the harness can tell from the sandbox which chunk a booking, or a held reservation, belongs to.
"""

from __future__ import annotations

import csv
import os
import re
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

try:  # Airflow 3 (the cluster's); the fallback only keeps the module importable by other test runs
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.decorators import task

from airflow_provider_qmatic.operators.appointments import QmaticBookAppointmentOperator
from airflow_provider_qmatic.operators.bulk import QmaticBulkBookAppointmentsOperator

DAG_ID = "qmatic_cluster"
CHUNKS = 4
ROWS_PER_CHUNK = 8
SINGLES = 3
# The sandbox's seed 0 (the harness starts it with --seed 0): "Stockholm City", "Passport application".
BRANCH_ID = "e3e70682-c209-4cac-a29f-6fbed82c07cd"
SERVICE_ID = "c8a70639-eb11-47b3-a7a9-c3787c65c1e5"
SLOTS_USED = 8
FIELDS = [
    "branch_id",
    "service_id",
    "start_time",
    "end_time",
    "personal_identifier",
    "first_name",
    "last_name",
    "email",
    "notes",
]
RETRIES = {"retries": 2, "retry_delay": timedelta(seconds=5)}


def bulk_customer_id(chunk: int, row: int) -> str:
    return f"CLUSTERB{chunk:03d}{row:04d}"


def chunk_note(chunk: int) -> str:
    """The notes of a chunk's bookings: sent with the reservation, so a held one names its chunk."""
    return f"cluster chunk {chunk}"


def single_customer_id(n: int) -> str:
    return f"CLUSTERS{n:07d}"


def customer(personal_identifier: str) -> dict[str, str]:
    return {
        "personal_identifier": personal_identifier,
        "first_name": "Test",
        "last_name": personal_identifier.title(),
        "email": f"{personal_identifier.lower()}@example.com",
    }


with DAG(
    dag_id=DAG_ID,
    description="Bulk booking in mapped tasks plus single bookings, on a two-worker Celery cluster",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=RETRIES,
) as dag:

    @task
    def plan(run_id: str, ti: Any) -> list[str]:
        """Free slots for everyone; one CSV file per chunk (rewritten identically if run again).

        Returns the chunk files (what ``bulk_book`` maps over); the singles' slot goes to XCom
        under ``start_time``.
        """
        from airflow_provider_qmatic.hooks.qmatic import QmaticHook

        today = date.today()
        found = QmaticHook().find_timeslots(BRANCH_ID, SERVICE_ID, today, today + timedelta(days=14))
        slots = [s for s in found if s.is_available][:SLOTS_USED]
        if not slots:
            raise ValueError("the sandbox has no free slot for the cluster test")
        out = Path(os.environ["QMATIC_CLUSTER_DATA"]) / re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for chunk in range(CHUNKS):
            path = out / f"chunk-{chunk}.csv"
            with open(path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=FIELDS)
                writer.writeheader()
                for row in range(ROWS_PER_CHUNK):
                    slot = slots[(chunk * ROWS_PER_CHUNK + row) % len(slots)]
                    writer.writerow(
                        {
                            "branch_id": BRANCH_ID,
                            "service_id": SERVICE_ID,
                            "start_time": slot.start_time.isoformat(),
                            "end_time": slot.end_time.isoformat() if slot.end_time else "",
                            **customer(bulk_customer_id(chunk, row)),
                            "notes": chunk_note(chunk),
                        }
                    )
            paths.append(str(path))
        ti.xcom_push(key="start_time", value=slots[0].start_time.isoformat())
        return paths

    chunks = plan()

    QmaticBulkBookAppointmentsOperator.partial(
        task_id="bulk_book",
        concurrency=2,
        max_failed_rows=0,
        progress_every_seconds=10,
    ).expand(rows=chunks)

    chunks >> QmaticBookAppointmentOperator.partial(
        task_id="book_single",
        branch_id=BRANCH_ID,
        service_id=SERVICE_ID,
        start_time="{{ ti.xcom_pull(task_ids='plan', key='start_time') }}",
    ).expand(customer=[customer(single_customer_id(n)) for n in range(SINGLES)])
