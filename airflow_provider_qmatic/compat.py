"""The one place that knows which Airflow is installed.

Airflow 3 exposes its authoring interface as ``airflow.sdk``; Airflow 2.11 has the older module
paths. Everything else in the package imports Airflow names from here, so a future move is one
edit. Nothing heavy is imported: this module is loaded whenever a DAG file imports an operator.
"""

from __future__ import annotations

import functools
import importlib
import os
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


# Names only sensors and triggers need, imported on first use (PEP 562): operator modules import this
# module at every DAG parse, and a trigger's base pulls in more than an operator's. The first path
# that has the name wins; BaseEventTrigger (asset watchers) exists from Airflow 3.0 only.
_LAZY: dict[str, tuple[str, ...]] = {
    "BaseSensorOperator": ("airflow.sdk", "airflow.sensors.base"),
    "PokeReturnValue": ("airflow.sdk", "airflow.sensors.base"),
    "BaseTrigger": ("airflow.triggers.base",),
    "BaseEventTrigger": ("airflow.triggers.base",),
    "TriggerEvent": ("airflow.triggers.base",),
    "AirflowSkipException": ("airflow.sdk.exceptions", "airflow.exceptions"),
}


def __getattr__(name: str) -> Any:
    for module in _LAZY.get(name, ()):
        try:
            found = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
        globals()[name] = found
        return found
    raise AttributeError(f"{__name__} has no {name} on Airflow {airflow_version()}")


# What Airflow writes for ``[operators] default_deferrable`` into the airflow.cfg it generates when it
# first starts (2.11 and 3.x alike): its built-in default, copied, not a choice anyone made.
_GENERATED_DEFAULT_DEFERRABLE = (
    "# Variable: AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE\n#\ndefault_deferrable = false\n"
)


def default_deferrable() -> bool:
    """Whether a provider's waiting task defers when its DAG does not say: what the deployment set
    as ``[operators] default_deferrable``, in ``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE`` or in its
    airflow.cfg (or with ``conf.set``); True where it set nothing.

    Official providers write ``conf.getboolean("operators", "default_deferrable", fallback=False)``,
    which cannot tell a choice from Airflow's built-in ``false``. Here a setting counts if it comes
    from the environment or from the configuration file: configparser's own ``has_option`` (unlike
    Airflow's) sees only those, never Airflow's defaults. One line of a file is not a choice either:
    the ``default_deferrable = false`` Airflow writes, under its ``# Variable:`` comment, into every
    airflow.cfg it generates; left as generated, the sensor defers. A sensor that waits hours for a
    cancellation must not hold a worker slot meanwhile unless the deployment said so. A DAG turns
    deferral off with ``deferrable=False`` (also through ``default_args``).
    """
    import configparser

    from airflow import configuration

    conf = configuration.conf
    section, key = "operators", "default_deferrable"
    if f"AIRFLOW__{section.upper()}__{key.upper()}" not in os.environ:
        if not configparser.ConfigParser.has_option(conf, section, key):
            return True
        raw = configparser.ConfigParser.get(conf, section, key, raw=True)
        if raw == "false" and _GENERATED_DEFAULT_DEFERRABLE in _text_of(str(configuration.AIRFLOW_CONFIG)):
            return True
    return bool(conf.getboolean(section, key))


def _text_of(path: str) -> str:
    """The configuration file's text ('' when unreadable), read again only when it changed: DAG files
    build sensors at every parse."""
    try:
        stat = os.stat(path)
    except OSError:
        return ""
    return _read_text(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _read_text(path: str, mtime_ns: int, size: int) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except OSError:
        return ""


__all__ = [
    "AirflowFailException",
    "BaseHook",
    "BaseOperator",
    "ObjectStoragePath",
    "airflow_version",
    "default_deferrable",
    "incr_stat",
    "mask_secret",
]
