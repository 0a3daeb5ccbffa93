"""Update a customer's details on their appointments (``PUT .../appointments/{id}/customer``).

Qmatic keeps a copy of the customer on each appointment; when a customer's name, email, phone number
or date of birth changes, each booked appointment needs the new details. Qmatic's own page describes
this as a job that runs for each booked appointment of a customer: give the operator the new details
and either one appointment id, or nothing more, and it updates every booked appointment a search for
the customer's personal identifier finds. For many customers at once, see
:class:`~airflow_provider_qmatic.operators.bulk.QmaticBulkUpdateCustomersOperator`.

An update is a PUT: sending it again sets the same details again, so a retried task simply runs
again, and an appointment whose customer already shows every new detail is left alone.

Kept import-light (DAG files import this module at every parse): the models and the hook are
imported inside ``execute``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_qmatic import DEFAULT_CONN_ID
from airflow_provider_qmatic.operators._base import QmaticBaseOperator, rendered

__all__ = ["QmaticUpdateCustomerOperator"]


class QmaticUpdateCustomerOperator(QmaticBaseOperator):
    """Set new customer details on one appointment, or on every booked appointment of the customer.

    With ``appointment_id``, that appointment's customer is set (one PUT). Without it, the customer's
    appointments are searched by ``customer["personal_identifier"]`` and each booked one (found by
    the search, and not shown as reserved, cancelled, released, expired or finalized) whose customer
    does not already show every new detail is updated. Templated and mappable
    (``.partial(...).expand(customer=...)``).

    XCom: ``{"appointment_ids": [...], "updated": n, "unchanged": m}``, ids and counts only, never
    the customer's details. Errors no retry can fix (invalid details, an unknown appointment)
    fail the task at once; rate limits and server faults use the task's ``retries``.

    :param customer: the new details: ``personal_identifier``, ``first_name``, ``last_name``,
        ``email`` and optionally ``phone_number``, ``date_of_birth`` (``YYYY-MM-DD``); snake_case or
        camelCase keys; a dict, an XComArg or a Jinja string that renders to a JSON object. The
        personal identifier is the customer's own: it is what the search looks for, not a new value.
        Templated (rendered as JSON in the UI).
    :param appointment_id: one appointment (GUID) to update; None (default) updates every booked
        appointment of the customer. Templated.
    :param qmatic_conn_id: the Airflow connection to Qmatic Cloud. Templated.
    """

    template_fields: Sequence[str] = ("customer", "appointment_id", "qmatic_conn_id")
    template_fields_renderers = {"customer": "json"}
    ui_color = "#c9e4f6"

    def __init__(
        self,
        *,
        customer: Any,
        appointment_id: str | None = None,
        qmatic_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(qmatic_conn_id=qmatic_conn_id, **kwargs)
        self.customer = customer
        self.appointment_id = appointment_id

    def execute(self, context: Mapping[str, Any]) -> dict[str, Any]:
        from airflow_provider_qmatic.api.models import CustomerUpdate, validate_guid
        from airflow_provider_qmatic.bulk.runner import update_booked

        with self.failing_fast():  # every argument is checked before any request
            details = CustomerUpdate.parse(rendered(self.customer, "customer"))
            given = self.appointment_id
            appointment_id = None
            if given is not None and str(given).strip():
                appointment_id = validate_guid(str(given).strip(), field="appointment_id")
            flows = self.hook.flows
            if appointment_id is not None:
                ids = [appointment_id]
                updated = int(flows.update_customer(appointment_id, details).changed)
            else:
                ids, updated = update_booked(flows, details)
        if appointment_id is None and not ids:
            self.log.warning("No booked appointment found for this customer; nothing to update")
        else:
            self.log.info(
                "Customer details set on %d of %d appointment(s) (%s); the others already had them",
                updated,
                len(ids),
                ", ".join(ids),
            )
        return {"appointment_ids": ids, "updated": updated, "unchanged": len(ids) - updated}
