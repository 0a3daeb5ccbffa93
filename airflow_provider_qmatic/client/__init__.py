"""The Qmatic API as Python methods: ``transport`` (bounded, never redirected requests), ``responses``
(an answer -> data or the matching error), ``retry`` (the one retry rule), ``auth`` (tokens) and
``client`` (:class:`QmaticClient`, :func:`build_client`). No Airflow import here.

``from airflow_provider_qmatic.client import QmaticClient, build_client`` is the public path; the
names are loaded on first use, so importing a module of this package loads no more than it needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_qmatic.client.client import QmaticClient, build_client

__all__ = ["QmaticClient", "build_client"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("airflow_provider_qmatic.client.client"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
