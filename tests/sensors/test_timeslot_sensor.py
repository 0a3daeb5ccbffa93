"""QmaticTimeslotAvailableSensor run by Airflow (``dag.test()``, which on Airflow 3 runs a deferred
task's trigger in line) against the sandbox: deferred and poking give the same slots on the same
script (a full slot, then a cancellation); unknown ids fail at once without retries; timeouts and
``soft_fail`` behave as Airflow's own sensors do."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_qmatic.sensors.timeslots import QmaticTimeslotAvailableSensor
from tests.operators.conftest import (
    PASSPORT,
    STOCKHOLM,
    UNKNOWN_GUID,
    Sandbox,
    make_dag,
    run_dag,
    state_of,
    xcom_of,
)
from tests.sensors.conftest import FullSlot

pytestmark = pytest.mark.airflow


def sensor_run(name: str, **kwargs: Any) -> Any:
    """A one-task DAG with the sensor (task id ``wait``), run once; the DagRun."""
    kwargs.setdefault("poke_interval", 0.05)
    kwargs.setdefault("max_poll_interval", 0.2)
    kwargs.setdefault("timeout", 60)
    with make_dag(name) as dag:
        QmaticTimeslotAvailableSensor(task_id="wait", **kwargs)
    return run_dag(dag)


@pytest.mark.parametrize(
    ("deferrable", "mode"),
    [(True, "poke"), (False, "poke"), (False, "reschedule")],
    ids=["deferred", "poking", "rescheduled"],
)
def test_waits_for_a_cancellation_and_returns_the_freed_slot(
    sandbox: Sandbox,
    full_slot: FullSlot,
    deferrable: bool,
    mode: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    canceller = full_slot.free_one_when_polled(sandbox, polls=2)
    dag_run = sensor_run(f"slot_{mode}_{deferrable}", deferrable=deferrable, mode=mode, **full_slot.window)
    canceller.join()

    assert state_of(dag_run, "wait") == ("success", 1)
    assert xcom_of(dag_run, "wait") == [
        {
            "branch_id": STOCKHOLM,
            "service_id": PASSPORT,
            "start_time": full_slot.slot["startTime"],
            "end_time": full_slot.slot["endTime"],
            "available": None,
        }
    ]
    assert sandbox.requests("timeslots") >= 3
    # dag.test says so when the task deferred and it runs the trigger in line, as a triggerer would
    # (in its output on Airflow 3, in its log on 2.11).
    assert ("running trigger in line" in capfd.readouterr().out + caplog.text) is deferrable


def test_deferred_sensor_defers_after_one_poll_on_the_worker(sandbox: Sandbox, full_slot: FullSlot) -> None:
    """The first poll runs in the task; finding nothing, the task hands the trigger to Airflow
    (TaskDeferred) carrying plain kwargs, and the timeout left."""
    from airflow_provider_qmatic.compat import BaseOperator

    try:
        from airflow.sdk.exceptions import TaskDeferred
    except ImportError:  # Airflow 2.11
        from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]

    sensor = QmaticTimeslotAvailableSensor(task_id="wait", timeout=3600, poke_interval=5, **full_slot.window)
    assert isinstance(sensor, BaseOperator)
    assert sensor.deferrable is True  # the default where the deployment did not say
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})

    classpath, kwargs = deferred.value.trigger.serialize()
    assert classpath.endswith("QmaticTimeslotTrigger")
    assert kwargs["time_from"] == full_slot.window["time_from"]
    assert kwargs["poll_interval"] == 5.0
    assert deferred.value.method_name == "execute_complete"
    assert timedelta(seconds=3590) < deferred.value.timeout <= timedelta(seconds=3600)
    assert sandbox.requests("timeslots") == 1


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "poking"])
def test_an_unknown_service_fails_at_once_naming_it_without_retries(
    sandbox: Sandbox, deferrable: bool, capfd: pytest.CaptureFixture[str]
) -> None:
    dag_run = sensor_run(
        f"bad_{deferrable}",
        deferrable=deferrable,
        branch_id=STOCKHOLM,
        service_id=UNKNOWN_GUID,
        retries=2,
        retry_delay=timedelta(seconds=0),
    )
    assert state_of(dag_run, "wait") == ("failed", 1)
    assert sandbox.requests("timeslots") == 1
    assert f"service_id: branch {STOCKHOLM} offers no service {UNKNOWN_GUID}" in capfd.readouterr().out


def test_a_bad_argument_fails_before_any_request(sandbox: Sandbox, capfd: pytest.CaptureFixture[str]) -> None:
    dag_run = sensor_run("bad_window", branch_id=STOCKHOLM, service_id=PASSPORT, time_from="25:00")
    assert state_of(dag_run, "wait") == ("failed", 1)
    assert "time_from: must be a time of day" in capfd.readouterr().out
    assert sandbox.requests("timeslots") == 0


@pytest.mark.parametrize(("soft_fail", "state"), [(False, "failed"), (True, "skipped")])
def test_timeout_fails_or_with_soft_fail_skips(
    sandbox: Sandbox, full_slot: FullSlot, soft_fail: bool, state: str
) -> None:
    dag_run = sensor_run(
        f"timeout_{soft_fail}", deferrable=False, timeout=0.3, soft_fail=soft_fail, **full_slot.window
    )
    assert state_of(dag_run, "wait")[0] == state


def test_the_triggers_error_event_fails_the_task_as_a_poke_would() -> None:
    """Back from the triggerer with an error: a non-retryable one fails without retries
    (AirflowFailException), a retryable one is raised as its own class so that retries apply."""
    from airflow_provider_qmatic.compat import AirflowFailException
    from airflow_provider_qmatic.exceptions import QmaticForbiddenError, QmaticServerError
    from airflow_provider_qmatic.triggers.timeslots import error_payload

    sensor = QmaticTimeslotAvailableSensor(task_id="wait", branch_id=STOCKHOLM, service_id=PASSPORT)
    refused = error_payload(
        QmaticForbiddenError("the system id is not this tenant's", status=403, field="system_id")
    )
    with pytest.raises(
        AirflowFailException, match="QmaticForbiddenError: the system id is not this tenant's"
    ):
        sensor.execute_complete({}, refused)
    with pytest.raises(QmaticServerError, match="gateway timeout") as raised:
        sensor.execute_complete({}, error_payload(QmaticServerError("gateway timeout", status=504)))
    assert raised.value.retryable


def test_unknown_id_with_soft_fail_skips_in_both_modes(sandbox: Sandbox) -> None:
    for deferrable in (True, False):
        dag_run = sensor_run(
            f"soft_{deferrable}",
            deferrable=deferrable,
            soft_fail=True,
            branch_id=UNKNOWN_GUID,
            service_id=PASSPORT,
        )
        assert state_of(dag_run, "wait")[0] == "skipped", deferrable
