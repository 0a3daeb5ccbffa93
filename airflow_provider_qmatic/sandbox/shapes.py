"""How the sandbox's answers look: Qmatic's public shape, or the rich one.

The public shape (the default) is exactly what Qmatic's public examples show, so a client tested
against the sandbox cannot come to depend on a field a real tenant may not send. The rich shape
adds what the first edition of Part B promised (``status``, ``expiresAt``, ``notes``,
``durationMinutes``, ``timeZone``, a slot's ``available``, the customer's ``personalIdentifier``)
for anyone who wants them. The introspection endpoints always show the rich shape and more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_qmatic.sandbox.records import iso_utc
from airflow_provider_qmatic.sandbox.seed import Branch, Service
from airflow_provider_qmatic.sandbox.settings import TenantSettings

if TYPE_CHECKING:
    from airflow_provider_qmatic.sandbox.records import Appointment, Slot

# Customer fields of the public example (no personalIdentifier: the example never echoes it).
_PUBLIC_CUSTOMER = ("firstName", "lastName", "phoneNumber", "email", "dateOfBirth")


def branch(b: Branch, *, rich: bool) -> dict[str, Any]:
    """``{id, name, address{streetName, zipCode, city, country}, location{longitude, latitude}}``,
    plus ``timeZone`` when rich."""
    data = b.to_json()
    if not rich:
        del data["timeZone"]
    return data


def service(b: Branch, s: Service, tenant: TenantSettings, *, rich: bool) -> dict[str, Any]:
    """One item of the tenant-wide service list: the service at one branch, with its cap."""
    data: dict[str, Any] = {
        "id": s.id,
        "name": s.name,
        "branch": {"id": b.id, "name": b.name},
        "config": {"maxNumberOfReservations": tenant.cap(s.id, s.name)},
    }
    if rich:
        data["durationMinutes"] = s.duration_minutes
    return data


def time_slot(slot: Slot, free: int, *, rich: bool) -> dict[str, Any]:
    """``{startTime, endTime}``, plus ``available`` (places left) when rich."""
    data: dict[str, Any] = slot.time_slot()
    if rich:
        data["available"] = free
    return data


def appointment(a: Appointment, tenant: TenantSettings, *, rich: bool) -> dict[str, Any]:
    """The Appointment of the public examples; rich adds status, notes, expiry, the customer's
    personal identifier, the service's duration and the branch's time zone.

    An appointment of several services carries ``services[]`` instead of ``service`` (Part B allows
    either beside the other; the sandbox sends the stricter form, so a client cannot lean on
    ``service`` for a combination) and ``numberOfReservations`` as the sum over its services.
    """
    customer: dict[str, Any] | None = None
    if a.customer is not None:
        names = ("personalIdentifier", *_PUBLIC_CUSTOMER) if rich else _PUBLIC_CUSTOMER
        customer = {name: a.customer.get(name) for name in names}
    services: list[dict[str, Any]] = []
    for s in a.services:
        item: dict[str, Any] = {
            "id": s.id,
            "name": s.name,
            "config": {"maxNumberOfReservations": tenant.cap(s.id, s.name)},
        }
        if rich:
            item["durationMinutes"] = s.duration_minutes
        services.append(item)
    data: dict[str, Any] = {
        "appointmentId": a.id,
        "timeSlot": a.slot.time_slot(),
        "customer": customer,
        **({"services": services} if len(services) > 1 else {"service": services[0]}),
        "branch": branch(a.branch, rich=rich),
        "numberOfReservations": a.number,
    }
    if rich:
        data.update(status=a.status, notes=a.notes, expiresAt=a.expires_at_iso())
    return data


def admin_appointment(a: Appointment, tenant: TenantSettings) -> dict[str, Any]:
    """The rich shape plus what only the sandbox knows (tenant, client, timestamps, answers,
    whether a cancel deleted it): tests judge the outcome by this, whatever the API shape."""
    data = appointment(a, tenant, rich=True)
    data.update(
        tenant=a.tenant,
        clientId=a.client_id,
        resourceId=a.resource_id,
        informationQuestions=list(a.information_questions),
        deleted=a.deleted,
        createdAt=iso_utc(a.created_at),
        updatedAt=iso_utc(a.updated_at),
    )
    return data
