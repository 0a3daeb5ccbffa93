"""The provider's description for Airflow (the ``apache_airflow_provider`` entry point).

In a module of its own, as Airflow's providers keep it: it names the hook, operators, sensors and
triggers, so it sits above them; the package's ``__init__`` holds only constants every layer reads.
"""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    """What Airflow's ProvidersManager reads through the ``apache_airflow_provider`` entry point.

    Keys are checked against Airflow's provider-info schema by a test, since a misspelt key is
    silently ignored and a malformed dict breaks provider discovery for every DAG.
    """
    from airflow_provider_qmatic.hooks.connection_fields import CONN_TYPE, conn_fields, ui_field_behaviour

    return {
        "package-name": "airflow-provider-qmatic",
        "name": "Qmatic",
        "description": "Book, reschedule and cancel appointments through the Qmatic Cloud Appointments API.",
        "integrations": [
            {
                "integration-name": "Qmatic Cloud Appointments",
                "external-doc-url": "https://qmatic.atlassian.net/wiki/spaces/ECAEAD",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Qmatic Cloud Appointments",
                "python-modules": ["airflow_provider_qmatic.hooks.qmatic"],
            }
        ],
        "operators": [
            {
                "integration-name": "Qmatic Cloud Appointments",
                "python-modules": [
                    "airflow_provider_qmatic.operators.appointments",
                    "airflow_provider_qmatic.operators.bulk",
                    "airflow_provider_qmatic.operators.update_customer",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Qmatic Cloud Appointments",
                "python-modules": ["airflow_provider_qmatic.sensors.timeslots"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Qmatic Cloud Appointments",
                # Not triggers.timeslot_events: it imports on Airflow 3 only (asset watchers).
                "python-modules": ["airflow_provider_qmatic.triggers.timeslots"],
            }
        ],
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": "airflow_provider_qmatic.hooks.qmatic.QmaticHook",
                "hook-name": "Qmatic Cloud",
                "conn-fields": conn_fields(),
                "ui-field-behaviour": ui_field_behaviour(),
            }
        ],
    }
