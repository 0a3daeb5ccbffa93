"""Bulk jobs: ``runner`` (:class:`BulkRunner`: validate, dedupe, run rows through the flows on
threads, report), ``io`` (rows streamed from lists, CSV and JSON Lines; results files), ``args`` (the
operators' argument checks, cheap enough for DAG parsing) and ``progress`` (progress lines, summary).

``from airflow_provider_qmatic.bulk import BulkRunner`` is the public path; the runner is loaded on
first use, so a DAG file that imports only ``bulk.args`` pays for nothing else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_qmatic.bulk.runner import BulkResult, BulkRunner, BulkSummary, RowOutcome

__all__ = ["BulkResult", "BulkRunner", "BulkSummary", "RowOutcome"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("airflow_provider_qmatic.bulk.runner"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
