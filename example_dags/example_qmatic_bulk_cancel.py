"""Cancel a list of appointments in one bulk task.

The list here is every appointment that ``example_qmatic_bulk_book`` booked (the ids in its
``bulk_book_results.csv``), so running book, reschedule and cancel in that order (``make demo``)
leaves the sandbox as it was. In production the list is usually a file or a query result: pass a
path/URI (``rows="s3://my_conn@bucket/cancellations/{{ ds }}.csv"``, one ``appointment_id``
column) or an upstream task's list of ``{"appointment_id": ...}`` dicts, as here.

Safe to trigger twice, and as-is: without booking results there is nothing to cancel, and ids that
Qmatic does not know are left out. Exactly once: an appointment already cancelled is reported as
``skipped_existing``, so a retry or a cleared run cancels nothing twice and does not fail on
Qmatic's 409.
"""

from __future__ import annotations

import csv
import os
import tempfile
from datetime import timedelta
from typing import Any

import pendulum

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.decorators import task

from airflow_provider_qmatic.operators.bulk import QmaticBulkCancelAppointmentsOperator

# Where the results files go (and the bookings' results are read from): one directory for the three
# bulk examples. Override with the environment variable or the DAG param output_dir.
OUTPUT_DIR = os.environ.get("QMATIC_EXAMPLE_OUTPUT_DIR") or os.path.join(
    tempfile.gettempdir(), "qmatic-examples"
)

with DAG(
    dag_id="example_qmatic_bulk_cancel",
    description="Cancel a list of Qmatic appointments (bulk)",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "qmatic", "bulk"],
    params={
        "booking_results": os.path.join(OUTPUT_DIR, "bulk_book_results.csv"),
        "output_dir": OUTPUT_DIR,
    },
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
) as dag:

    @task
    def appointments_to_cancel(params: dict[str, Any]) -> list[dict[str, str]]:
        """The appointment ids the bulk booking reported, one row each; none if it has not run.

        Ids Qmatic does not know (a results file left from an earlier sandbox) are left out.
        """
        from airflow_provider_qmatic.exceptions import QmaticNotFoundError
        from airflow_provider_qmatic.hooks.qmatic import QmaticHook

        if not os.path.exists(params["booking_results"]):
            print("No booking results yet (run example_qmatic_bulk_book first): nothing to cancel")
            return []
        with open(params["booking_results"], newline="", encoding="utf-8") as handle:
            booked = [
                row["appointment_id"]
                for row in csv.DictReader(handle)
                if row["status"] in ("succeeded", "skipped_existing") and row["appointment_id"]
            ]
        hook = QmaticHook(qmatic_conn_id="qmatic_default")
        rows = []
        for appointment_id in booked:
            try:
                hook.get_appointment(appointment_id)
            except QmaticNotFoundError:
                print(f"Appointment {appointment_id} is unknown to Qmatic: left out")
                continue
            rows.append({"appointment_id": appointment_id})
        return rows

    QmaticBulkCancelAppointmentsOperator(
        task_id="bulk_cancel",
        qmatic_conn_id="qmatic_default",
        rows=appointments_to_cancel(),
        results_path="{{ params.output_dir }}/bulk_cancel_results.csv",
        # Cancel as many as possible; fail the task only if more than 10% could not be cancelled.
        max_failed_rows=None,
        max_failed_ratio=0.1,
    )
