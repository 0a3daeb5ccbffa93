"""Move a Qmatic appointment to another time (same branch and service).

Trigger it with the appointment's id and the new start::

    airflow dags trigger example_qmatic_reschedule --conf '{
        "appointment_id": "<appointment id>",
        "new_start_time": "2026-12-02 10:00", "timezone": "Europe/Stockholm"}'

``new_start_time`` may carry its own offset (``2026-12-02T10:00:00+01:00``); without one it is read
in ``timezone`` (the branch's zone). The appointment keeps its length unless ``new_end_time`` is set.

Run as-is (no config) it finds the appointment itself: the upcoming appointment of the customer
``personal_identifier`` (booking one at the first free slot if there is none, so it works against a
fresh ``qmatic-sandbox``), and moves it to the next free slot after its current time. Triggering it
twice moves the appointment twice; it never books anyone twice.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.decorators import task

from airflow_provider_qmatic.operators.appointments import QmaticRescheduleAppointmentOperator

with DAG(
    dag_id="example_qmatic_reschedule",
    description="Reschedule one Qmatic appointment",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["example", "qmatic"],
    params={
        "appointment_id": "",  # empty: the customer's upcoming appointment (see below)
        "new_start_time": "",  # empty: the next free slot after the appointment's current time
        "new_end_time": "",
        "timezone": "Europe/Stockholm",
        # Used only without an appointment_id. The sandbox's seed-0 ids; replace with yours.
        "personal_identifier": "19800430ADA01",
        "branch_id": "e3e70682-c209-4cac-a29f-6fbed82c07cd",  # Stockholm City
        "service_id": "c8a70639-eb11-47b3-a7a9-c3787c65c1e5",  # Passport application
    },
    default_args={
        # Rate limits (100 requests per minute) and gateway faults are worth a retry; a taken slot
        # or an unknown appointment fails at once, without retries.
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
    },
) as dag:

    @task
    def choose_move(params: dict[str, Any]) -> dict[str, str]:
        """``{appointment_id, start_time}``: the configured ones, or found through the API."""
        from airflow_provider_qmatic.api.models import BookingRequest
        from airflow_provider_qmatic.flows import is_booked
        from airflow_provider_qmatic.hooks.qmatic import QmaticHook

        hook = QmaticHook(qmatic_conn_id="qmatic_default")
        if params["appointment_id"] and params["new_start_time"]:
            return {"appointment_id": params["appointment_id"], "start_time": params["new_start_time"]}
        if params["appointment_id"]:
            appointment = hook.get_appointment(params["appointment_id"])
        else:
            now = datetime.now(timezone.utc)
            upcoming = sorted(
                (
                    a
                    for a in hook.search_appointments(params["personal_identifier"])
                    if is_booked(a)
                    and a.time_slot is not None
                    and a.time_slot.start_time is not None
                    and a.time_slot.start_time > now
                ),
                key=lambda a: a.time_slot.start_time,  # type: ignore[union-attr]
            )
            if upcoming:
                appointment = upcoming[0]
            else:
                # Nothing to move yet (a fresh sandbox): book one at the first free slot, so the
                # example has an appointment to move. Your DAG would get the id from upstream.
                today = date.today()
                first = next(
                    s
                    for s in hook.find_timeslots(
                        params["branch_id"], params["service_id"], today, today + timedelta(days=14)
                    )
                    if s.is_available
                )
                booked = hook.book(
                    BookingRequest.parse(
                        {
                            "branch_id": params["branch_id"],
                            "service_id": params["service_id"],
                            "start_time": first.start_time.isoformat(),
                            "end_time": first.end_time.isoformat() if first.end_time else None,
                            "customer": {
                                "personal_identifier": params["personal_identifier"],
                                "first_name": "Ada",
                                "last_name": "Lovelace",
                                "email": "ada@example.com",
                            },
                        }
                    )
                )
                appointment = booked.appointment
                print(f"No upcoming appointment found: booked {appointment.appointment_id} to move")
        if params["new_start_time"]:
            return {"appointment_id": appointment.appointment_id, "start_time": params["new_start_time"]}
        slot = appointment.time_slot
        if (
            slot is None
            or slot.start_time is None
            or appointment.branch is None
            or appointment.service is None
        ):
            raise ValueError(f"appointment {appointment.appointment_id} has no branch, service or time")
        day = slot.start_time.date()
        later = next(
            (
                s
                for s in hook.find_timeslots(
                    appointment.branch.id, appointment.service.id, day, day + timedelta(days=14)
                )
                if s.is_available and s.start_time > slot.start_time
            ),
            None,
        )
        if later is None:
            raise ValueError(f"no free slot in the 14 days after {slot.start_time.isoformat()}")
        return {"appointment_id": appointment.appointment_id, "start_time": later.start_time.isoformat()}

    move = choose_move()

    # Reserve the new slot, then move the appointment onto it. If the move fails the new
    # reservation is released (no 15-minute hold left behind) and the old time is kept. A retry
    # after a move whose answer was lost finds the appointment already there and succeeds.
    # The token asks for the reschedule scope only (least privilege).
    QmaticRescheduleAppointmentOperator(
        task_id="reschedule_appointment",
        qmatic_conn_id="qmatic_default",
        appointment_id="{{ ti.xcom_pull(task_ids='choose_move')['appointment_id'] }}",
        start_time="{{ ti.xcom_pull(task_ids='choose_move')['start_time'] }}",
        end_time="{{ params.new_end_time }}",
        timezone="{{ params.timezone }}",
    ).set_upstream(move)
