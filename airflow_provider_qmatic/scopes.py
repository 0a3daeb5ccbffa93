"""Deprecated path: the scopes moved to ``airflow_provider_qmatic.api.contract`` (see ``_moved.py``),
where the one-scope sets are named ``BOOK_SCOPES``, ``RESCHEDULE_SCOPES`` and ``CANCEL_SCOPES``
(``RESCHEDULE`` and ``CANCEL`` there are the contract's rows)."""

from airflow_provider_qmatic._moved import warn
from airflow_provider_qmatic.api.contract import ALL_SCOPES, Scope, scope_string
from airflow_provider_qmatic.api.contract import BOOK_SCOPES as BOOK
from airflow_provider_qmatic.api.contract import CANCEL_SCOPES as CANCEL
from airflow_provider_qmatic.api.contract import RESCHEDULE_SCOPES as RESCHEDULE

__all__ = ["ALL_SCOPES", "BOOK", "CANCEL", "RESCHEDULE", "Scope", "scope_string"]
warn(__name__, "airflow_provider_qmatic.api.contract")
