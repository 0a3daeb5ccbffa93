"""Plan first: a dry run of a bulk booking, a person approves the plan, then the real run.

``plan`` runs the bulk booking with ``dry_run=True``: every row of the file is validated and looked
up in Qmatic (is the customer booked there already? does the branch still offer that slot, with a
place left?) and nothing is written. Its results file ``bulk_plan_<date>.plan.csv`` says per row
what the real run would do (``planned``, ``skipped_existing``, ``failed`` with the reason,
``invalid``), and its summary counts them, with the requests the real run needs and how long they
take at the tenant's limit. If the plan already breaks the failure policy (a failed or invalid
row, with ``max_failed_rows=0``), the DAG stops there: nobody is asked to approve a broken file.

``approve_plan`` then waits for a person:

* on Airflow 3.1+ it is the standard provider's human-in-the-loop ``ApprovalOperator``: the plan's
  counts appear under "Required actions" in the UI; Approve runs the bookings, Reject skips them,
  and no answer within a day fails the run;
* on older Airflow lines (2.11, 3.0), which have no human-in-the-loop operator, a sensor waits
  (checking every minute, for a day) for the Airflow Variable ``qmatic_bulk_plan_approved`` to
  name this run's plan file (``bulk_plan_<date>.plan.csv``): a person reads the plan and sets the
  Variable (Admin > Variables, or ``airflow variables set qmatic_bulk_plan_approved
  bulk_plan_<date>.plan.csv``).

``book`` is the real run on the same file, with ``skip_existing="always"``, as the plan looked
rows up: a row the plan found booked is skipped, not booked again. Where nothing changed in
between, each row ends as planned (``planned`` becomes ``succeeded``).

The file: ``bookings_file`` gives each customer of ``data/bulk_plan_customers.csv`` (sandbox seed
0 ids, as in ``example_qmatic_bulk_book``) the next free slot and writes one bookings file per
day, reused by every run of that day, so running the DAG twice books nobody twice: the second
plan finds every row booked. In production the file arrives with its times and this task goes.
Results go to the output directory (param ``output_dir``, default ``$QMATIC_EXAMPLE_OUTPUT_DIR``
or ``<tmp>/qmatic-examples``).
"""

from __future__ import annotations

import csv
import os
import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pendulum

try:  # Airflow 3
    from airflow.sdk import DAG, task
except ImportError:  # Airflow 2.11
    from airflow import DAG
    from airflow.decorators import task

try:  # Airflow 3.1+: a person answers in the UI ("Required actions")
    from airflow.providers.standard.operators.hitl import ApprovalOperator
except Exception:  # ImportError, or the provider's "needs Airflow 3.1+" refusal on older lines
    ApprovalOperator = None

from airflow_provider_qmatic.operators.bulk import QmaticBulkBookAppointmentsOperator

CUSTOMERS_FILE = Path(__file__).parent / "data" / "bulk_plan_customers.csv"
OUTPUT_DIR = os.environ.get("QMATIC_EXAMPLE_OUTPUT_DIR") or os.path.join(
    tempfile.gettempdir(), "qmatic-examples"
)
SEARCH_DAYS = 14
APPROVAL_VARIABLE = "qmatic_bulk_plan_approved"
# The plan as the approver sees it: counts, the estimate and where each row's plan is. No names.
PLAN = "ti.xcom_pull(task_ids='plan')"
PLAN_BODY = f"""\
The bulk booking of {{{{ {PLAN}['total'] }}}} rows would:

* book {{{{ {PLAN}['planned'] }}}} appointments,
* skip {{{{ {PLAN}['skipped_existing'] }}}} rows already booked,
* fail {{{{ {PLAN}['failed'] }}}} rows, and refuse {{{{ {PLAN}['invalid'] }}}} invalid rows,

in about {{{{ {PLAN}['estimated_requests'] }}}} requests (at most
{{{{ ((({PLAN}['estimated_duration_s'] or 0) / 60) | round(1)) }}}} minutes at the tenant's limit).
The plan used {{{{ {PLAN}['api_requests'] }}}} read requests and wrote nothing.

Every row's plan: {{{{ {PLAN}['results_path'] }}}}

Approve to run the bookings on the same file; Reject to skip them.
"""

with DAG(
    dag_id="example_qmatic_bulk_plan",
    description="Dry-run a bulk booking, have a person approve the plan, then run it",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["example", "qmatic", "bulk"],
    params={"customers_file": str(CUSTOMERS_FILE), "output_dir": OUTPUT_DIR},
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
) as dag:

    @task
    def bookings_file(params: dict[str, Any]) -> str:
        """Today's bookings file: each customer on the next free slot of their branch and service."""
        from airflow_provider_qmatic.hooks.qmatic import QmaticHook

        out_dir = Path(params["output_dir"])
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"bulk_plan_{date.today().isoformat()}.csv"
        if path.exists():
            return str(path)
        with open(params["customers_file"], newline="", encoding="utf-8-sig") as handle:
            customers = list(csv.DictReader(handle))
        hook = QmaticHook(qmatic_conn_id="qmatic_default")
        free: dict[tuple[str, str], list[Any]] = {}
        rows = []
        for customer in customers:
            key = (customer["branch_id"], customer["service_id"])
            if key not in free:
                today = date.today()
                slots = hook.find_timeslots(key[0], key[1], today, today + timedelta(days=SEARCH_DAYS))
                free[key] = [s for s in slots if s.is_available]
            if not free[key]:
                raise ValueError(f"no free slot left for service {key[1]} at branch {key[0]}")
            slot = free[key].pop(0)
            rows.append({**customer, "start_time": slot.start_time.isoformat()})
        temp = path.with_suffix(".tmp")
        with open(temp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        temp.replace(path)
        return str(path)

    rows = bookings_file()
    plan = QmaticBulkBookAppointmentsOperator(
        task_id="plan",
        qmatic_conn_id="qmatic_default",
        rows=rows,
        results_path="{{ ti.xcom_pull(task_ids='bookings_file') | replace('.csv', '.plan.csv') }}",
        skip_existing="always",
        dry_run=True,
        max_failed_rows=0,  # a plan with a failed or invalid row stops here, before anyone approves
    )

    if ApprovalOperator is not None:
        approve: Any = ApprovalOperator(
            task_id="approve_plan",
            subject="Book {{ ti.xcom_pull(task_ids='plan')['planned'] }} Qmatic appointments?",
            body=PLAN_BODY,
            response_timeout=timedelta(days=1),  # no answer in a day: the run fails, nobody is booked
            retries=0,  # asked once; a retry would ask again
        )
    else:
        try:
            from airflow.providers.standard.sensors.python import PythonSensor
        except ImportError:  # Airflow 2.11 without the standard provider
            from airflow.sensors.python import PythonSensor

        def _approved(plan_path: str) -> bool:
            """True once the Variable names this run's plan file (a person read it and approved)."""
            try:
                from airflow.sdk import Variable

                approved = Variable.get(APPROVAL_VARIABLE, default=None)
            except ImportError:  # Airflow 2.11, whose Variable.get names the default default_var
                from airflow.models import Variable

                approved = Variable.get(APPROVAL_VARIABLE, default_var=None)
            return bool(approved == Path(plan_path).name)

        approve = PythonSensor(
            task_id="approve_plan",
            python_callable=_approved,
            op_kwargs={"plan_path": "{{ ti.xcom_pull(task_ids='plan')['results_path'] }}"},
            mode="reschedule",
            poke_interval=60,
            timeout=24 * 3600,
            retries=0,
        )

    book = QmaticBulkBookAppointmentsOperator(
        task_id="book",
        qmatic_conn_id="qmatic_default",
        rows=rows,  # the very file the plan read
        results_path="{{ ti.xcom_pull(task_ids='bookings_file') | replace('.csv', '.results.csv') }}",
        skip_existing="always",
        max_failed_rows=0,
    )

    plan >> approve >> book
