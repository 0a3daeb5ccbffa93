"""Move everyone booked at one branch on one day to the next free slots, in one bulk task.

Typical use: a branch closes for a day and its appointments move to the following working day.
Qmatic has no "list a branch's appointments" call, so the appointments come from what this
deployment booked: ``example_qmatic_bulk_book`` wrote their ids to ``bulk_book_results.csv``.
``plan_moves`` reads that file, fetches each appointment (through the same connection), keeps
those at the branch on the day (param ``day``, default: the earliest day booked there), and gives
each the next free slot of its service from the following day on. The bulk operator gets the plan
as a list of rows through XCom.

Run as-is before any booking, it has nothing to move and succeeds. The move is exactly once: a row
whose appointment is already at its new time is skipped, so a retry or a cleared run does not move
anything twice; triggered twice, it moves the appointments twice, booking nobody twice. The branch
id is the sandbox's seed 0 "Stockholm City"; replace it with yours.
"""

from __future__ import annotations

import csv
import os
import tempfile
from datetime import date, timedelta
from typing import Any

import pendulum

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.decorators import task

from airflow_provider_qmatic.operators.bulk import QmaticBulkRescheduleAppointmentsOperator

# Where the results files go (and the bookings' results are read from): one directory for the three
# bulk examples. Override with the environment variable or the DAG param output_dir.
OUTPUT_DIR = os.environ.get("QMATIC_EXAMPLE_OUTPUT_DIR") or os.path.join(
    tempfile.gettempdir(), "qmatic-examples"
)
SEARCH_DAYS = 14

with DAG(
    dag_id="example_qmatic_bulk_reschedule",
    description="Move one branch's appointments of one day to the next free slots (bulk)",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "qmatic", "bulk"],
    params={
        "branch_id": "e3e70682-c209-4cac-a29f-6fbed82c07cd",  # sandbox seed 0: Stockholm City
        "day": "",  # YYYY-MM-DD in the branch's time zone; empty: the earliest day booked there
        "booking_results": os.path.join(OUTPUT_DIR, "bulk_book_results.csv"),
        "output_dir": OUTPUT_DIR,
    },
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
) as dag:

    @task
    def plan_moves(params: dict[str, Any]) -> list[dict[str, str]]:
        """One row ``{appointment_id, start_time, end_time}`` per appointment to move."""
        from airflow_provider_qmatic.exceptions import QmaticNotFoundError
        from airflow_provider_qmatic.flows import is_booked
        from airflow_provider_qmatic.hooks.qmatic import QmaticHook

        if not os.path.exists(params["booking_results"]):
            print("No booking results yet (run example_qmatic_bulk_book first): nothing to move")
            return []
        with open(params["booking_results"], newline="", encoding="utf-8") as handle:
            booked = [
                r["appointment_id"]
                for r in csv.DictReader(handle)
                if r["status"] in ("succeeded", "skipped_existing") and r["appointment_id"]
            ]
        hook = QmaticHook(qmatic_conn_id="qmatic_default")
        here = []
        for appointment_id in booked:
            try:
                appointment = hook.get_appointment(appointment_id)
            except QmaticNotFoundError:  # a results file older than this Qmatic (or sandbox) run
                print(f"Appointment {appointment_id} is unknown to Qmatic: left out")
                continue
            slot = appointment.time_slot
            if (
                is_booked(appointment)
                and appointment.branch is not None
                and appointment.branch.id == params["branch_id"]
                and slot is not None
                and slot.start_time is not None
            ):
                here.append(appointment)
        if not here:
            print("No confirmed appointment of the booking results is at this branch: nothing to move")
            return []
        # Slot times carry the branch's offset, so .date() is the branch's local day.
        days = sorted({a.time_slot.start_time.date() for a in here})  # type: ignore[union-attr]
        day = date.fromisoformat(params["day"]) if params["day"] else days[0]
        to_move = sorted(
            (a for a in here if a.time_slot.start_time.date() == day),  # type: ignore[union-attr]
            key=lambda a: a.time_slot.start_time,  # type: ignore[union-attr]
        )
        rows: list[dict[str, str]] = []
        free: dict[str, list[Any]] = {}
        for appointment in to_move:
            service_id = appointment.service.id if appointment.service else None
            if not service_id:
                continue
            if service_id not in free:
                first = day + timedelta(days=1)
                slots = hook.find_timeslots(
                    params["branch_id"], service_id, first, first + timedelta(days=SEARCH_DAYS)
                )
                free[service_id] = [s for s in slots if s.is_available and s.start_time.date() > day]
            if not free[service_id]:
                raise ValueError(
                    f"no free slot of service {service_id} in the {SEARCH_DAYS} days after {day}"
                )
            slot = free[service_id].pop(0)
            rows.append(
                {
                    "appointment_id": appointment.appointment_id,
                    "start_time": slot.start_time.isoformat(),
                    "end_time": slot.end_time.isoformat() if slot.end_time else "",
                }
            )
        print(f"Moving {len(rows)} appointment(s) from {day} to the next free slots")
        return rows

    QmaticBulkRescheduleAppointmentsOperator(
        task_id="bulk_reschedule",
        qmatic_conn_id="qmatic_default",
        rows=plan_moves(),  # a list of row dicts from XCom
        results_path="{{ params.output_dir }}/bulk_reschedule_results.jsonl",  # JSON Lines this time
        max_failed_rows=0,
    )
