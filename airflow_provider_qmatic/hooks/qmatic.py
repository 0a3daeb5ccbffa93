"""QmaticHook: the only code that reads an Airflow Connection.

It turns the Connection into a validated :class:`~airflow_provider_qmatic.config.ClientConfig`
(every problem reported before any request, naming the field and the fix), builds one
:class:`~airflow_provider_qmatic.client.client.QmaticClient` on first use, and registers every secret with
Airflow's masker where it is born.
"""

from __future__ import annotations

import json
import platform
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_qmatic import DEFAULT_CONN_ID, __version__
from airflow_provider_qmatic.api.contract import Scope
from airflow_provider_qmatic.compat import BaseHook, airflow_version, incr_stat, mask_secret
from airflow_provider_qmatic.exceptions import QmaticConfigError, QmaticError
from airflow_provider_qmatic.hooks.connection_fields import (
    EXTRA_FIELDS,
    EXTRA_ONLY,
    legacy_label,
    ui_field_behaviour,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from datetime import date

    from airflow_provider_qmatic.api.models import (
        Appointment,
        BookingRequest,
        Branch,
        BranchCombinations,
        CustomerUpdate,
        RescheduleRequest,
        Service,
        ServiceGroup,
        Slot,
    )
    from airflow_provider_qmatic.client.client import QmaticClient
    from airflow_provider_qmatic.config import ClientConfig
    from airflow_provider_qmatic.flows import FlowResult, Flows
    from airflow_provider_qmatic.state.budget import RateLimiter

# What Airflow's API sends in place of a stored secret it will not show. The Test button of a saved
# connection passes it on as the secret in Airflow 3.0.x and 3.1.0-3.1.6 (which never reuse the stored
# one) and in 3.3.1 (which compares the hidden Host "" with the stored NULL and then refuses to reuse
# it); a test with it would only report Qmatic's "invalid client".
MASKED_SECRET = "***"
_MASKED_SECRET_HINT = (
    "The Client Secret reached the test as Airflow's mask '***', not the stored secret, so Qmatic "
    "was not asked. The Test button of a saved connection does this in Airflow 3.0, 3.1.0 to 3.1.6 "
    "and 3.3.1: run `airflow connections test <conn_id>` instead"
)
_MISSING_SECRET_HINT = (
    "On Airflow 2.11 the Test button of a saved connection's edit page does not send the stored "
    "secret: type the Client Secret again, then press Test, or run `airflow connections test <conn_id>`"
)
# Older spellings still accepted. Airflow's UI masks extras named like "*token*", so the form uses
# the credential_* names; Extra JSON written by hand may use either.
EXTRA_ALIASES = {"token_cache": "credential_cache", "token_cache_dir": "credential_cache_dir"}


class QmaticHook(BaseHook):  # type: ignore[misc]
    """Talks to Qmatic Cloud Appointments with a connection's client credentials.

    Connection fields: Login = client ID, Password = client secret; extras ``region``
    (``eu-west-1`` | ``us-east-1``), ``tenant`` (account name, sent as X-ACCOUNT), ``system_id``
    (sent as X-TENANT-ID), and optionally ``base_url`` (or Host), ``language``, ``timeout``,
    ``requests_per_minute``, ``credential_cache`` (``file`` | ``memory`` | ``redis``; also read as
    ``token_cache``), ``credential_cache_dir``, ``redis_conn_id`` and ``endpoints`` (operation ->
    corrected path, a JSON object or its text; see ``docs/connection.md``).

    :param qmatic_conn_id: the Airflow connection id.
    :param limiter: the request budget to draw from; by default the tenant's budget shared by every
        task process of this user on the host (see
        :func:`~airflow_provider_qmatic.state.request_budget`).
    :param bulk: draw from that budget as a bulk job does: leaving a reserve for single calls, so
        they never queue behind it (the bulk operators set it).
    """

    conn_name_attr = "qmatic_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "qmatic"
    hook_name = "Qmatic Cloud"

    def __init__(
        self,
        qmatic_conn_id: str = default_conn_name,
        *,
        limiter: RateLimiter | None = None,
        bulk: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.qmatic_conn_id = qmatic_conn_id
        self._limiter = limiter
        self._bulk = bulk

    def __repr__(self) -> str:
        return f"QmaticHook(qmatic_conn_id={self.qmatic_conn_id!r})"

    # -- connection -> config ------------------------------------------------------------------

    @cached_property
    def config(self) -> ClientConfig:
        """The connection, validated. Raises QmaticConfigError naming the field at fault."""
        from airflow_provider_qmatic.config import ClientConfig, normalise_tenant

        conn = self.get_connection(self.qmatic_conn_id)
        if conn.password:
            mask_secret(conn.password)
        # The raw text, not extra_dejson: Airflow turns invalid JSON into {} and only logs it, which
        # would then be reported as a missing tenant instead of a broken Extra.
        extras = _extras(conn.extra or {})
        # Every extra the form (or Extra JSON) names is the from_values argument of the same name.
        extras["base_url"] = extras.get("base_url") or _base_url_from_host(conn.host, conn.port)
        config = ClientConfig.from_values(
            client_id=conn.login, client_secret=conn.password, user_agent=user_agent(), **extras
        )
        _check_port(conn.port, config.base_url)
        raw_tenant = str(extras.get("tenant", ""))
        if raw_tenant.strip() != config.tenant and normalise_tenant(raw_tenant) == config.tenant:
            self.log.info(
                "Tenant %r normalised to %r (lowercase, spaces stripped) as Qmatic expects for X-ACCOUNT",
                raw_tenant,
                config.tenant,
            )
        return config

    @cached_property
    def client(self) -> QmaticClient:
        """The client, built on first use and kept for the hook's life (also the bulk runner's)."""
        from airflow_provider_qmatic import state
        from airflow_provider_qmatic.client.client import build_client

        limiter = self._limiter
        if limiter is None and self._bulk:
            limiter = state.request_budget(self.config, bulk=True)
        return build_client(self.config, limiter=limiter, on_secret=mask_secret, on_metric=incr_stat)

    def get_conn(self) -> QmaticClient:
        """Airflow's conventional accessor for the underlying client."""
        return self.client

    # -- connection test -----------------------------------------------------------------------

    def test_connection(self) -> tuple[bool, str]:
        """``(ok, message)`` for the UI's Test button and ``airflow connections test``.

        A token for each scope proves the Client ID, Client Secret and tenant; one cheap read (list
        branches) proves the System ID too, which Qmatic checks only on API calls (X-TENANT-ID).
        Nothing is written.
        """
        try:
            config = self.config
            if config.client_secret == MASKED_SECRET:
                return False, _MASKED_SECRET_HINT
            client = self.client
            granted: list[Scope] = []
            lifetime = 0.0
            for scope in Scope:
                try:
                    lifetime = client.tokens.probe(frozenset({scope}))
                    granted.append(scope)
                except QmaticError as exc:
                    if exc.code not in ("invalid_scope", "insufficient_scope"):
                        raise
            where = config.where
            if not granted:
                return False, (
                    f"Qmatic ({where}, tenant {config.tenant}) issued no token: the client is granted "
                    "none of book, reschedule, cancel"
                )
            scopes = ", ".join(scope.name.lower() for scope in granted)
            credentials = f"Credentials accepted by Qmatic ({where}, tenant {config.tenant}; scopes {scopes})"
            try:
                # Reads accept any scope; the token just fetched for it is reused.
                branches = client.list_branches(scopes=frozenset(granted[:1]))
            except QmaticError as exc:
                if exc.field == "system_id":
                    return False, f"{credentials}, but {exc.message}"
                if exc.code == "forbidden_tenant":
                    return False, (
                        f"{credentials}, but listing branches failed: {exc}. The System ID "
                        f"{config.system_id!r} (sent as X-TENANT-ID) is not this tenant's: set the "
                        f"`system_id` extra (System ID on the form) to tenant {config.tenant}'s system id"
                    )
                raise
            return True, (
                f"Connected to Qmatic Cloud ({where}, tenant {config.tenant}, system id "
                f"{config.system_id}): token valid for {lifetime:.0f} s; scopes granted: {scopes}; "
                f"{len(branches)} branches listed"
            )
        except QmaticConfigError as exc:
            if exc.field == "client_secret":
                return False, f"{exc}. {_MISSING_SECRET_HINT}"
            return False, str(exc)
        except QmaticError as exc:
            return False, str(exc)

    # -- the connection form (Airflow 2.11, 3.0, 3.1; 3.2+ reads provider info) -----------------

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields on the connection form; generated from ``connection_fields``."""
        from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import StringField

        # any_of, not AnyOf: Airflow 3.0/3.1 stand in for wtforms and only recognise this name.
        from wtforms.validators import Optional, any_of

        widgets: dict[str, Any] = {}
        for name, (_label, description, schema) in EXTRA_FIELDS.items():
            # Optional even for required fields: see connection_fields for why the label marks them.
            validators: list[Any] = [Optional()]
            if "enum" in schema:
                validators.append(any_of(schema["enum"]))
            widgets[name] = StringField(
                lazy_gettext(legacy_label(name)),
                widget=BS3TextFieldWidget(),
                description=description,
                validators=validators,
                default=schema.get("default"),
            )
        return widgets

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Relabel login/password, hide what Qmatic does not use (``connection_fields``, snake-cased)."""
        return {key.replace("-", "_"): value for key, value in ui_field_behaviour().items()}

    # -- the facade the operators use -----------------------------------------------------------

    @cached_property
    def flows(self) -> Flows:
        """The booking flows over this hook's client (see :mod:`airflow_provider_qmatic.flows`)."""
        from airflow_provider_qmatic.flows import Flows

        return Flows(self.client)

    def book(self, request: BookingRequest, *, check_existing: bool = False) -> FlowResult[Appointment]:
        """Reserve and confirm (see :meth:`~airflow_provider_qmatic.flows.Flows.book`)."""
        return self.flows.book(request, check_existing=check_existing)

    def reschedule(self, request: RescheduleRequest) -> FlowResult[Appointment]:
        """Move an appointment (see :meth:`~airflow_provider_qmatic.flows.Flows.reschedule`)."""
        return self.flows.reschedule(request)

    def cancel(self, appointment_id: str) -> FlowResult[Appointment | None]:
        """Cancel an appointment (see :meth:`~airflow_provider_qmatic.flows.Flows.cancel`)."""
        return self.flows.cancel(appointment_id)

    def update_customer(
        self, appointment_id: str, details: CustomerUpdate | Mapping[str, Any], *, check_first: bool = False
    ) -> FlowResult[Appointment | None]:
        """Set an appointment's customer details (see
        :meth:`~airflow_provider_qmatic.flows.Flows.update_customer`); ``details`` is validated
        (:class:`~airflow_provider_qmatic.api.models.CustomerUpdate`) before any request."""
        from airflow_provider_qmatic.api.models import CustomerUpdate

        return self.flows.update_customer(
            appointment_id, CustomerUpdate.parse(details), check_first=check_first
        )

    def list_branches(self) -> list[Branch]:
        return self.client.list_branches()

    def list_services(self, branch_id: str | None = None) -> list[Service]:
        """The tenant's services, only those of ``branch_id`` when given."""
        return self.client.list_services(branch_id)

    def list_service_groups(self) -> list[ServiceGroup]:
        return self.client.list_service_groups()

    def find_timeslots(self, branch_id: str, service_id: str, date_from: date, date_to: date) -> list[Slot]:
        return self.client.find_timeslots(branch_id, service_id, date_from, date_to)

    def list_service_combinations(self, branch_id: str | None = None) -> list[BranchCombinations]:
        """Which services may share one appointment, per branch (only ``branch_id``'s when given).
        A tenant without service combinations refuses it (a :class:`QmaticError`)."""
        return self.client.list_service_combinations(branch_id)

    def find_combination_timeslots(
        self,
        branch_id: str,
        service_ids: Sequence[str],
        date_from: date,
        date_to: date,
        *,
        number_of_reservations: int = 1,
        resource_id: str | None = None,
    ) -> list[Slot]:
        """Time slots for several services in one appointment (``number_of_reservations`` per
        service; the sum is sent, as Qmatic asks), of one resource when ``resource_id`` is given."""
        return self.client.find_combination_timeslots(
            branch_id,
            service_ids,
            date_from,
            date_to,
            number_of_reservations=number_of_reservations,
            resource_id=resource_id,
        )

    def get_appointment(self, appointment_id: str) -> Appointment:
        return self.client.get_appointment(appointment_id)

    def search_appointments(
        self, personal_identifier: str, *, combination: bool = False
    ) -> list[Appointment]:
        """A customer's appointments (``combination``: Qmatic's ``/serviceCombination/`` search,
        which a tenant with service combinations offers for appointments of several services)."""
        return self.client.search_appointments(personal_identifier, combination=combination)


def user_agent() -> str:
    """Names the provider, Airflow and Python versions, so Qmatic support can tell callers apart."""
    return (
        f"airflow-provider-qmatic/{__version__} apache-airflow/{airflow_version()} "
        f"python/{platform.python_version()}"
    )


def _extras(raw: Any) -> dict[str, Any]:
    """Extras by plain name, also accepting the ``extra__qmatic__<name>`` form older UIs write."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise QmaticConfigError(
                "the connection's Extra is not valid JSON: fix it in the connection form", field="extra"
            ) from None
    if not isinstance(raw, dict):
        raise QmaticConfigError("the connection's Extra must be a JSON object", field="extra")
    found: dict[str, Any] = {}
    for name in (*EXTRA_FIELDS, *EXTRA_ONLY, *EXTRA_ALIASES):
        for key in (name, f"extra__qmatic__{name}"):
            value = raw.get(key)
            if value is not None and value != "":
                found.setdefault(EXTRA_ALIASES.get(name, name), value)
                break
    return found


def _check_port(port: int | None, base_url: str) -> None:
    """A Port on the connection must be the port of the URL in use (Region, Base URL or Host).

    The form shows Port only so that Airflow 3.3.2's Test button can reuse the stored secret
    (see connection_fields); a Port that disagrees with the URL would be silently ignored otherwise.
    """
    if not port:
        return
    parts = urlsplit(base_url)
    used = parts.port or (443 if parts.scheme == "https" else 80)
    if port != used:
        raise QmaticConfigError(
            f"port {port} is not the port of {base_url} ({used}), which Region or Base URL decide: "
            f"set the connection's Port to {used} or clear it",
            field="port",
        )


def _base_url_from_host(host: str | None, port: int | None) -> str | None:
    """The Host field as a base URL: https unless it names its own scheme."""
    if not host or not host.strip():
        return None
    text = host.strip().rstrip("/")
    if "://" not in text:
        text = f"https://{text}"
    if port and text.count(":") < 2:
        text = f"{text}:{port}"
    return text
