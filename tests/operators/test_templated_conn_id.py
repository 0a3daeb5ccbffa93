"""``qmatic_conn_id`` is templated on every Qmatic operator, and the rendered id is the one used.

A DAG that picks its Qmatic connection per run (``qmatic_conn_id="{{ params.qmatic_conn_id }}"``,
one connection per tenant or per environment) must reach the connection the template names, not
look up the literal ``{{ ... }}`` text.
"""

from __future__ import annotations

import pytest

from airflow_provider_qmatic.operators import appointments, bulk
from tests.operators.conftest import PASSPORT, STOCKHOLM, Sandbox, customer, make_dag, run_dag, state_of

pytestmark = pytest.mark.airflow

OPERATORS = [getattr(appointments, name) for name in appointments.__all__] + [
    getattr(bulk, name) for name in bulk.__all__
]


@pytest.mark.parametrize("operator", OPERATORS, ids=lambda cls: cls.__name__)
def test_every_operator_templates_its_connection_id(operator: type) -> None:
    assert "qmatic_conn_id" in operator.template_fields  # type: ignore[attr-defined]


def test_the_rendered_connection_is_the_one_used(sandbox: Sandbox) -> None:
    """Each step renders to a connection whose client holds only that step's scope: a step that
    used any other connection (or the unrendered text, which names none) could not succeed."""
    person = customer()
    dag = make_dag(
        "templated_conn",
        params={"book": "book_only", "reschedule": "reschedule_only", "cancel": "cancel_only"},
    )
    with dag:
        find = appointments.QmaticFindTimeslotsOperator(
            task_id="find",
            branch_id=STOCKHOLM,
            service_id=PASSPORT,
            limit=2,
            qmatic_conn_id="qmatic_{{ params.book }}",
        )
        book = appointments.QmaticBookAppointmentOperator(
            task_id="book",
            branch_id=STOCKHOLM,
            service_id=PASSPORT,
            start_time="{{ ti.xcom_pull('find')[0]['start_time'] }}",
            customer=person,
            qmatic_conn_id="qmatic_{{ params.book }}",
        )
        move = appointments.QmaticRescheduleAppointmentOperator(
            task_id="reschedule",
            appointment_id="{{ ti.xcom_pull('book')['appointment_id'] }}",
            start_time="{{ ti.xcom_pull('find')[1]['start_time'] }}",
            qmatic_conn_id="qmatic_{{ params.reschedule }}",
        )
        cancel = appointments.QmaticCancelAppointmentOperator(
            task_id="cancel",
            appointment_id="{{ ti.xcom_pull('book')['appointment_id'] }}",
            qmatic_conn_id="qmatic_{{ params.cancel }}",
        )
        find >> book >> move >> cancel

    dag_run = run_dag(dag)

    for task_id in ("find", "book", "reschedule", "cancel"):
        assert state_of(dag_run, task_id) == ("success", 1), task_id
    (stored,) = sandbox.of_customer(person["personal_identifier"])
    assert stored["status"] == "CANCELLED"
