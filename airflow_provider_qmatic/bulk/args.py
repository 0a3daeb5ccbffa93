"""Checks of the bulk operators' arguments, cheap enough to run while a DAG file is parsed.

The runner (``bulk.py``) imports pydantic models, the journal and the file readers; a DAG file that
only builds a bulk operator must not pay for them, yet a typo in ``max_failed_ratio`` should show
as a DAG import error, not at run time. So the argument rules live here, with no heavy import.
"""

from __future__ import annotations

from airflow_provider_qmatic.exceptions import QmaticConfigError

SKIP_EXISTING_MODES: tuple[str, ...] = ("auto", "always", "never")
DEFAULT_CONCURRENCY = 4
MAX_CONCURRENCY = 32
# Per-row outcomes are returned in XCom only up to this many rows; larger jobs use results_path.
XCOM_OUTCOMES_MAX = 1000
# Rows one job may have: a million validate in well under a minute in a few hundred MB; more is
# likely a mistake (the wrong file) and, at Qmatic's 100 requests a minute, weeks of work.
DEFAULT_MAX_ROWS = 1_000_000


def check_max_rows(max_rows: object) -> int:
    """A whole number of rows of at least 1."""
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise QmaticConfigError(
            f"max_rows must be a whole number of at least 1 (default {DEFAULT_MAX_ROWS:,})", field="max_rows"
        )
    return max_rows


def check_policy_values(max_failed_rows: int | None, max_failed_ratio: float | None) -> None:
    """Refuse a negative row count or a ratio outside [0, 1] (before any request)."""
    if max_failed_rows is not None and (
        isinstance(max_failed_rows, bool) or not isinstance(max_failed_rows, int) or max_failed_rows < 0
    ):
        raise QmaticConfigError(
            "max_failed_rows must be a whole number >= 0, or None", field="max_failed_rows"
        )
    if max_failed_ratio is not None and (
        isinstance(max_failed_ratio, bool)
        or not isinstance(max_failed_ratio, (int, float))
        or not 0 <= max_failed_ratio <= 1
    ):
        raise QmaticConfigError("max_failed_ratio must be between 0 and 1, or None", field="max_failed_ratio")


def check_concurrency(concurrency: object) -> int:
    """Worker threads: a whole number from 1 to :data:`MAX_CONCURRENCY`."""
    if (
        isinstance(concurrency, bool)
        or not isinstance(concurrency, int)
        or not 1 <= concurrency <= MAX_CONCURRENCY
    ):
        raise QmaticConfigError(
            f"concurrency must be a whole number from 1 to {MAX_CONCURRENCY}", field="concurrency"
        )
    return concurrency


def resolve_skip_existing(mode: object) -> str:
    """``auto``, ``always`` or ``never`` (True and False stand for the last two)."""
    if isinstance(mode, bool):
        return "always" if mode else "never"
    text = str(mode).strip().lower()
    if text not in SKIP_EXISTING_MODES:
        raise QmaticConfigError(
            f"skip_existing must be one of {', '.join(SKIP_EXISTING_MODES)}, got {str(mode)[:20]!r}",
            field="skip_existing",
        )
    return text


def resolve_dry_run(value: object) -> bool:
    """A bool, or its text as a template renders it (``True``/``false``, ``1``/``0``, ``yes``/``no``)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", "", "none"):
        return False
    raise QmaticConfigError(f"dry_run must be true or false, got {str(value)[:20]!r}", field="dry_run")


def check_operator_arguments(
    *,
    skip_existing: object,
    concurrency: object,
    max_failed_rows: int | None,
    max_failed_ratio: float | None,
    max_rows: object = DEFAULT_MAX_ROWS,
    dry_run: object = False,
) -> None:
    """Everything a bulk operator can check about its arguments before it runs.

    A templated ``skip_existing`` or ``dry_run`` (``"{{ ... }}"``) is checked when the task runs.
    """
    if not (isinstance(skip_existing, str) and "{{" in skip_existing):
        resolve_skip_existing(skip_existing)
    if not (isinstance(dry_run, str) and "{{" in dry_run):
        resolve_dry_run(dry_run)
    check_concurrency(concurrency)
    check_policy_values(max_failed_rows, max_failed_ratio)
    check_max_rows(max_rows)
