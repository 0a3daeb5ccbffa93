"""The one place that knows which Airflow is installed.

Airflow 3 exposes its authoring interface as ``airflow.sdk``; Airflow 2.11 has the older module
paths. Everything else in the package imports Airflow names from here, so a future move is one
edit. Nothing heavy is imported: this module is loaded whenever a DAG file imports an operator.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

try:  # Airflow 3.x
    from airflow.sdk import BaseHook, BaseOperator, ObjectStoragePath
    from airflow.sdk.exceptions import AirflowFailException
except ImportError:  # Airflow 2.11
    from airflow.exceptions import AirflowFailException  # type: ignore[no-redef]
    from airflow.hooks.base import BaseHook  # type: ignore[no-redef]
    from airflow.io.path import ObjectStoragePath  # type: ignore[no-redef]
    from airflow.models import BaseOperator  # type: ignore[no-redef]

if TYPE_CHECKING:
    from collections.abc import Callable


def _load_mask_secret() -> Callable[..., None]:
    try:
        from airflow.sdk.log import mask_secret as sdk_mask_secret

        return sdk_mask_secret  # type: ignore[no-any-return]
    except ImportError:
        from airflow.utils.log.secrets_masker import mask_secret as legacy_mask_secret

        return legacy_mask_secret  # type: ignore[no-any-return]


_mask_secret = _load_mask_secret()


def mask_secret(value: Any, name: str | None = None) -> None:
    """Register a secret with Airflow's masker so that logs and rendered fields show ``***``."""
    if value:
        _mask_secret(value, name)


@functools.cache
def _stats() -> Any:
    try:  # Airflow 3.2+
        from airflow.sdk.observability.stats import Stats
    except ImportError:  # Airflow 2.11 to 3.1
        from airflow.stats import Stats  # type: ignore[no-redef]
    return Stats


def incr_stat(name: str, count: int = 1) -> None:
    """Count ``name`` in Airflow's metrics (StatsD or OpenTelemetry, as ``[metrics]`` configures).

    Imported on first use: DAG files import this module at every parse and count nothing.
    """
    if count:
        _stats().incr(name, count)


def airflow_version() -> str:
    """The installed Airflow version, for the User-Agent."""
    from airflow import __version__

    return str(__version__)


__all__ = [
    "AirflowFailException",
    "BaseHook",
    "BaseOperator",
    "ObjectStoragePath",
    "airflow_version",
    "incr_stat",
    "mask_secret",
]
