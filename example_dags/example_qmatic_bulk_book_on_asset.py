"""Book a new file of bookings when it arrives: a data-aware schedule on an Asset.

Whatever delivers the file (another DAG whose task writes it and declares
``outlets=[NEW_BOOKINGS]``, or an outside system calling Airflow's REST API to create an asset
event for this URI) tells Airflow that ``incoming/bookings.csv`` (in the output directory,
``$QMATIC_EXAMPLE_OUTPUT_DIR`` or ``<tmp>/qmatic-examples``) is new; Airflow then runs this DAG.
No clock is involved, so there is no scheduled run to collide with a manual one.

The file has the bulk booking columns with times (``branch_id, service_id, start_time,
personal_identifier, first_name, last_name, email``, ...; see ``docs/bulk.md``). Write it
atomically (to a temporary name, then rename), so a run never reads half a file.

Safe to trigger twice, and to receive the same file twice: the bulk task runs with
``skip_existing="always"``, so a row already booked is reported as ``skipped_existing`` and not
booked again. Triggered by hand before any file arrived, the run has nothing to book and skips
the booking task. On Airflow 2.11 an Asset is called a Dataset; the DAG is the same.
"""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from pathlib import Path

import pendulum

try:  # Airflow 3
    from airflow.sdk import DAG, Asset, task
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.datasets import Dataset as Asset
    from airflow.decorators import task

from airflow_provider_qmatic.operators.bulk import QmaticBulkBookAppointmentsOperator

OUTPUT_DIR = os.environ.get("QMATIC_EXAMPLE_OUTPUT_DIR") or os.path.join(
    tempfile.gettempdir(), "qmatic-examples"
)
INCOMING = Path(OUTPUT_DIR) / "incoming" / "bookings.csv"
# The asset is the file's location: every event on it means "a new bookings.csv is there".
NEW_BOOKINGS = Asset(uri=INCOMING.as_uri())

with DAG(
    dag_id="example_qmatic_bulk_book_on_asset",
    description="Book every row of a new bookings file as soon as it arrives (Asset-triggered)",
    schedule=[NEW_BOOKINGS],
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # two files in quick succession are booked one after the other
    tags=["example", "qmatic", "bulk"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
) as dag:

    @task.short_circuit
    def bookings_file() -> str:
        """The file's path, or "" (the booking is skipped) when no file has arrived yet."""
        if not INCOMING.exists():
            print(f"No file at {INCOMING} yet: nothing to book")
            return ""
        return str(INCOMING)

    QmaticBulkBookAppointmentsOperator(
        task_id="bulk_book",
        qmatic_conn_id="qmatic_default",
        rows=bookings_file(),
        results_path=f"{OUTPUT_DIR}/incoming/bookings_results.csv",
        skip_existing="always",  # one search per row: the same file twice books nobody twice
        max_failed_rows=0,
    )
