"""Update customers' details on their booked appointments: one customer, then a file of many.

Qmatic keeps a copy of the customer on each appointment. When customers change their email, name,
phone number or date of birth, every booked appointment of theirs needs the new details.

* ``update_one_customer`` (:class:`QmaticUpdateCustomerOperator`) sets the details of the DAG param
  ``customer`` on every booked appointment of that personal identifier (by default Ada, whom
  ``example_qmatic_book`` books). Give it ``appointment_id`` instead to update one appointment.
* ``update_customers`` (:class:`QmaticBulkUpdateCustomersOperator`) does the same for every row of
  ``data/customer_updates.csv`` (next to this file): the customers ``example_qmatic_bulk_book``
  books, with new email addresses. Paced, journaled per row (a retried task does not redo finished
  rows), and every row's outcome (``row, status, appointment_id, error``: no personal data) goes to
  ``bulk_update_customers_results.csv`` in the output directory. In production the file usually
  arrives from elsewhere: ``rows="s3://my_conn@bucket/customer-changes/{{ ds }}.csv"``.

Safe to trigger twice, and as-is: a customer with nothing booked is reported ``skipped_existing``
("no booked appointment found"), and an appointment whose customer already shows the new details
is left alone, so a second run sends no update. XCom holds appointment ids and counts only.
"""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from pathlib import Path

import pendulum

try:  # Airflow 3
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.11
    from airflow import DAG

from airflow_provider_qmatic.operators.bulk import QmaticBulkUpdateCustomersOperator
from airflow_provider_qmatic.operators.update_customer import QmaticUpdateCustomerOperator

UPDATES_FILE = Path(__file__).parent / "data" / "customer_updates.csv"
# Where the results file goes: the directory of the other bulk examples. Override with the
# environment variable or the DAG param output_dir.
OUTPUT_DIR = os.environ.get("QMATIC_EXAMPLE_OUTPUT_DIR") or os.path.join(
    tempfile.gettempdir(), "qmatic-examples"
)

with DAG(
    dag_id="example_qmatic_update_customers",
    description="Set customers' new details on their booked Qmatic appointments",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example", "qmatic", "bulk"],
    params={
        "customer": {
            "personal_identifier": "19800430ADA01",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada.lovelace@example.org",
        },
        "output_dir": OUTPUT_DIR,
    },
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1)},
) as dag:
    update_one = QmaticUpdateCustomerOperator(
        task_id="update_one_customer",
        qmatic_conn_id="qmatic_default",
        customer={
            "personal_identifier": "{{ params.customer.personal_identifier }}",
            "first_name": "{{ params.customer.first_name }}",
            "last_name": "{{ params.customer.last_name }}",
            "email": "{{ params.customer.email }}",
        },
    )

    update_many = QmaticBulkUpdateCustomersOperator(
        task_id="update_customers",
        qmatic_conn_id="qmatic_default",
        rows=str(UPDATES_FILE),
        results_path="{{ params.output_dir }}/bulk_update_customers_results.csv",
    )

    update_one >> update_many
