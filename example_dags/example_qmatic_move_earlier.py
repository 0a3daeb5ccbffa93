"""Move a customer's appointment to an earlier slot as soon as one frees up.

A customer booked more than ``wanted_within_days`` ahead would rather come sooner. The sensor waits
(deferred to Airflow's triggerer, holding no worker slot) for a free slot that starts before the
appointment, for example when another customer cancels, and the reschedule operator moves the
appointment onto the earliest one. Without such a slot within ``timeout`` the wait is skipped
(``soft_fail``): the customer keeps the appointment they have.

Run as-is (no config) it finds the upcoming appointment of the customer ``personal_identifier``,
booking one at the last free slot of the coming two weeks if there is none, so that it works against
a fresh ``qmatic-sandbox``; your DAG would get the appointment from upstream. Safe to trigger twice:
a second run finds the appointment already within ``wanted_within_days`` and moves nothing, and it
never books anyone twice. Trigger it for a given appointment with::

    airflow dags trigger example_qmatic_move_earlier --conf '{"appointment_id": "<appointment id>"}'
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
from airflow_provider_qmatic.sensors.timeslots import QmaticTimeslotAvailableSensor

with DAG(
    dag_id="example_qmatic_move_earlier",
    description="Move a Qmatic appointment to an earlier slot when one frees up",
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["example", "qmatic"],
    params={
        "appointment_id": "",  # empty: the customer's upcoming appointment (see below)
        "wanted_within_days": 7,  # appointments sooner than this are left alone
        # Used only without an appointment_id. The sandbox's seed-0 ids; replace with yours.
        "personal_identifier": "19181226KJ001",
        "branch_id": "e3e70682-c209-4cac-a29f-6fbed82c07cd",  # Stockholm City
        "service_id": "c8a70639-eb11-47b3-a7a9-c3787c65c1e5",  # Passport application
    },
    default_args={
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
    },
) as dag:

    @task.short_circuit(retries=0)
    def appointment_to_move(params: dict[str, Any]) -> dict[str, str] | None:
        """``{appointment_id, branch_id, service_id, start_time, day}`` of the appointment to bring
        forward, or None (the wait and the move are skipped) when it is already within
        ``wanted_within_days``."""
        from airflow_provider_qmatic.api.models import BookingRequest
        from airflow_provider_qmatic.flows import is_booked
        from airflow_provider_qmatic.hooks.qmatic import QmaticHook

        hook = QmaticHook(qmatic_conn_id="qmatic_default")
        now = datetime.now(timezone.utc)
        if params["appointment_id"]:
            appointment = hook.get_appointment(params["appointment_id"])
        else:
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
                # Nothing to move yet (a fresh sandbox): book the last free slot of the coming two
                # weeks, so the example has an appointment to bring forward.
                today = date.today()
                last = [
                    s
                    for s in hook.find_timeslots(
                        params["branch_id"], params["service_id"], today, today + timedelta(days=14)
                    )
                    if s.is_available
                ][-1]
                appointment = hook.book(
                    BookingRequest.parse(
                        {
                            "branch_id": params["branch_id"],
                            "service_id": params["service_id"],
                            "start_time": last.start_time.isoformat(),
                            "end_time": last.end_time.isoformat() if last.end_time else None,
                            "customer": {
                                "personal_identifier": params["personal_identifier"],
                                "first_name": "Katherine",
                                "last_name": "Johnson",
                                "email": "katherine@example.com",
                            },
                        }
                    )
                ).appointment
                print(f"No upcoming appointment found: booked {appointment.appointment_id} to move")
        slot, branch, service = appointment.time_slot, appointment.branch, appointment.service
        if slot is None or slot.start_time is None or branch is None or service is None:
            raise ValueError(f"appointment {appointment.appointment_id} has no branch, service or time")
        if slot.start_time <= now + timedelta(days=int(params["wanted_within_days"])):
            print(
                f"Appointment {appointment.appointment_id} at {slot.start_time.isoformat()} is within "
                f"{params['wanted_within_days']} days: nothing to move"
            )
            return None
        return {
            "appointment_id": appointment.appointment_id,
            "branch_id": branch.id or "",
            "service_id": service.id or "",
            "start_time": slot.start_time.isoformat(),
            "day": slot.start_time.date().isoformat(),
        }

    move = appointment_to_move()

    # A free slot from today up to the appointment's day that starts before the appointment.
    # Deferred by default; soft_fail: no earlier slot within the timeout skips the move.
    earlier = QmaticTimeslotAvailableSensor(
        task_id="wait_for_earlier_slot",
        qmatic_conn_id="qmatic_default",
        branch_id="{{ ti.xcom_pull(task_ids='appointment_to_move')['branch_id'] }}",
        service_id="{{ ti.xcom_pull(task_ids='appointment_to_move')['service_id'] }}",
        date_to="{{ ti.xcom_pull(task_ids='appointment_to_move')['day'] }}",
        start_before="{{ ti.xcom_pull(task_ids='appointment_to_move')['start_time'] }}",
        poke_interval=60,
        max_poll_interval=300,
        timeout=timedelta(days=7),
        soft_fail=True,
    )

    # Reserve the earliest such slot and move the appointment onto it (same branch and service;
    # the appointment keeps its length). If the move fails, the new hold is released and the
    # customer keeps the old time; a retry after a lost answer finds the move done.
    reschedule = QmaticRescheduleAppointmentOperator(
        task_id="move_appointment",
        qmatic_conn_id="qmatic_default",
        appointment_id="{{ ti.xcom_pull(task_ids='appointment_to_move')['appointment_id'] }}",
        start_time="{{ ti.xcom_pull(task_ids='wait_for_earlier_slot')[0]['start_time'] }}",
    )

    move >> earlier >> reschedule
