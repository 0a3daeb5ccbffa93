"""Daily bulk booking from a CSV file: validated first, paced to Qmatic's limit, exactly once.

``data/bulk_customers.csv`` (next to this file) lists the customers to book, each with the branch
and service wanted. Its ids are those of the local sandbox's seed 0 (``qmatic-sandbox``): replace
them with your tenant's (``QmaticHook().list_branches()`` and ``list_services(branch_id)`` print
them).

Why the slot times are not in the CSV: the sandbox's slots are relative to today (its first day is
tomorrow), so times written into a file would be stale the next day. The ``plan_bookings`` task
therefore asks the find-timeslots API for the next free slots and writes the complete booking file
(``start_time`` and ``end_time`` added) for this run; the bulk operator then reads that file. In
production your file usually arrives with its times (``rows="s3://my_conn@bucket/bookings/{{ ds
}}.csv"``) and ``plan_bookings`` goes away.

Safe to schedule and to trigger: pressing Trigger in the UI (which also unpauses the DAG, so the
day's scheduled run comes too) books nobody twice. ``plan_bookings`` gives a customer who already
has an upcoming appointment for the service that appointment's time, and the bulk task runs with
``skip_existing="always"``: it checks each row against Qmatic first and reports it as
``skipped_existing`` (with the appointment id) instead of booking again. The same holds for a file
per day delivered twice. ``max_active_runs=1`` makes a second run start after the first.

Every row's outcome (``row, status, appointment_id, error``: no personal data) is written to
``bulk_book_results.csv`` in the output directory (param ``output_dir``, default
``$QMATIC_EXAMPLE_OUTPUT_DIR`` or ``<tmp>/qmatic-examples``). ``example_qmatic_bulk_reschedule``
and ``example_qmatic_bulk_cancel`` read it, so running the three in that order (as ``make demo``
does) books, moves and cancels the same appointments.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pendulum

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.decorators import task

from airflow_provider_qmatic.operators.bulk import QmaticBulkBookAppointmentsOperator

CUSTOMERS_FILE = Path(__file__).parent / "data" / "bulk_customers.csv"
# Where the results files go (and the bookings' results are read from): one directory for the three
# bulk examples. Override with the environment variable or the DAG param output_dir.
OUTPUT_DIR = os.environ.get("QMATIC_EXAMPLE_OUTPUT_DIR") or os.path.join(
    tempfile.gettempdir(), "qmatic-examples"
)
SEARCH_DAYS = 14

with DAG(
    dag_id="example_qmatic_bulk_book",
    description="Book every customer of a CSV file in one paced, exactly-once bulk task",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["example", "qmatic", "bulk"],
    params={"customers_file": str(CUSTOMERS_FILE), "output_dir": OUTPUT_DIR},
    default_args={
        # A bulk task fails only after every row was tried. Failures a retry can fix (5xx, 429)
        # fail it retryably: the retry skips what is already booked (skip_existing, below).
        # Failures a retry cannot fix (invalid rows, a slot taken) fail it without retries.
        "retries": 2,
        "retry_delay": timedelta(minutes=1),
    },
) as dag:

    @task
    def plan_bookings(params: dict[str, Any], run_id: str) -> str:
        """Give each customer the next free slot of their branch and service; return the file's path.

        The plan is written once per run and reused if the run is cleared, so a cleared run books
        the same slots again, which the bulk task then finds already booked and skips.
        """
        from airflow_provider_qmatic.flows import is_booked
        from airflow_provider_qmatic.hooks.qmatic import QmaticHook

        out_dir = Path(params["output_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        plan = out_dir / f"bulk_bookings_{re.sub(r'[^A-Za-z0-9_.-]', '_', run_id)}.csv"
        if plan.exists():
            return str(plan)
        with open(params["customers_file"], newline="", encoding="utf-8-sig") as handle:
            customers = list(csv.DictReader(handle))
        hook = QmaticHook(qmatic_conn_id="qmatic_default")
        free: dict[tuple[str, str], list[Any]] = {}
        rows = []
        now = datetime.now(timezone.utc)
        for customer in customers:
            key = (customer["branch_id"], customer["service_id"])
            booked = [
                a.time_slot
                for a in hook.search_appointments(customer["personal_identifier"])
                if is_booked(a)
                and (a.branch.id if a.branch else None, a.service.id if a.service else None) == key
                and a.time_slot is not None
                and a.time_slot.start_time is not None
                and a.time_slot.start_time > now
            ]
            if booked:  # already booked (an earlier run): the bulk task finds it and skips the row
                rows.append({**customer, "start_time": booked[0].start_time.isoformat(), "end_time": ""})
                continue
            if key not in free:
                today = date.today()
                slots = hook.find_timeslots(key[0], key[1], today, today + timedelta(days=SEARCH_DAYS))
                free[key] = [s for s in slots if s.is_available]
            if not free[key]:
                raise ValueError(f"no free slot left for service {key[1]} at branch {key[0]}")
            slot = free[key].pop(0)  # one customer per slot, earliest first
            rows.append(
                {
                    **customer,
                    "start_time": slot.start_time.isoformat(),
                    "end_time": slot.end_time.isoformat() if slot.end_time else "",
                }
            )
        temp = plan.with_suffix(".tmp")
        with open(temp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        temp.replace(plan)
        return str(plan)

    QmaticBulkBookAppointmentsOperator(
        task_id="bulk_book",
        qmatic_conn_id="qmatic_default",
        # A path or URI (read through ObjectStoragePath: local, file://, s3://, gs://, ...), or a
        # list of row dicts. Here: the path the planning task returned.
        rows=plan_bookings(),
        # The CSV's columns already have the field names; a file with other headers maps them:
        # column_map={"Branch": "branch_id", "Personnummer": "personal_identifier", ...}.
        results_path="{{ params.output_dir }}/bulk_book_results.csv",
        # Times in the file carry their offset; timezone="Europe/Stockholm" would read naive ones.
        # Check every row against Qmatic before booking (one search per row), not only on a retry:
        # a row already booked by an earlier run is reported as skipped_existing, never booked twice.
        skip_existing="always",
        max_failed_rows=0,  # any failed or invalid row fails the task (after all rows were tried)
        concurrency=4,  # threads; the connection's requests_per_minute (default 100) sets the pace
    )
