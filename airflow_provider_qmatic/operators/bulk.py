"""Bulk operators: book, reschedule or cancel many appointments, or update many customers' details,
in one task.

Thin wrappers over :class:`airflow_provider_qmatic.bulk.runner.BulkRunner`: they hand it the hook's client
(the connection's, with the request budget shared by every process of the tenant on the host),
name the task instance's journal, read and write files through Airflow's ``ObjectStoragePath``,
push the summary to XCom and apply the failure policy. See ``docs/bulk.md``.

Kept import-light: DAG files import this module at every parse, so the runner, the models and the
client are imported inside ``execute``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_qmatic import DEFAULT_CONN_ID
from airflow_provider_qmatic.bulk.args import XCOM_OUTCOMES_MAX
from airflow_provider_qmatic.compat import ObjectStoragePath, incr_stat
from airflow_provider_qmatic.exceptions import QmaticConfigError
from airflow_provider_qmatic.operators._base import QmaticBaseOperator, rendered

if TYPE_CHECKING:
    from airflow_provider_qmatic.bulk.runner import BulkRunner


class _QmaticBulkOperator(QmaticBaseOperator):
    """What the bulk operators share: their arguments and ``execute``; each names its action.

    The arguments are documented on ``__init__``, which the API reference merges into each public
    operator (this class is private and left out of it).
    """

    bulk_budget = True

    action: ClassVar[str] = ""
    template_fields: Sequence[str] = (
        "rows",
        "results_path",
        "column_map",
        "timezone",
        "skip_existing",
        "dry_run",
        "qmatic_conn_id",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {"rows": "json", "column_map": "json"}
    ui_color = "#d6ecf7"

    def __init__(
        self,
        *,
        rows: Any,
        results_path: str | None = None,
        column_map: Mapping[str, str] | None = None,
        timezone: str | None = None,
        skip_existing: str = "auto",
        concurrency: int = 4,
        max_failed_rows: int | None = 0,
        max_failed_ratio: float | None = None,
        journal_dir: str | None = None,
        xcom_outcomes_max: int = XCOM_OUTCOMES_MAX,
        progress_every_seconds: float = 30.0,
        max_rows: int = 1_000_000,
        dry_run: bool | str = False,
        qmatic_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        """Arguments shared by the bulk operators.

        :param rows: the input, templated: a list of row dicts (or an upstream task's XCom, e.g.
            ``rows=plan_task.output``), or a path/URI of a ``.csv`` or ``.jsonl`` file read through
            ``ObjectStoragePath`` (plain paths, ``file://``, ``s3://``, ``gs://``, ...; a connection
            for the store goes in the URI as ``s3://conn_id@bucket/key``). A JSON array in a string
            (as a Jinja ``xcom_pull`` renders) is read as a list.
        :param results_path: where to write every row's outcome (``.csv`` or ``.jsonl``), templated.
        :param column_map: ``{input column: field}`` for columns named otherwise, templated.
        :param timezone: IANA zone for times written without an offset (e.g. ``Europe/Stockholm``).
        :param skip_existing: ``auto`` (check Qmatic for rows already done when the task is a retry
            or a cleared run), ``always`` or ``never``.
        :param concurrency: worker threads, 1-32 (default 4); the connection's
            ``requests_per_minute`` sets the pace.
        :param max_failed_rows: fail the task if more rows than this failed or were invalid
            (default 0: any failed row fails the task, after every row was processed). None: no limit.
        :param max_failed_ratio: fail the task if failed plus invalid rows exceed this fraction of all
            rows (0-1). None (default): no ratio limit.
        :param journal_dir: private directory for the resumability journal (default:
            ``$QMATIC_BULK_JOURNAL_DIR``, else ``bulk-journals`` in the token cache directory).
        :param xcom_outcomes_max: per-row outcomes are included in the returned XCom for jobs of at
            most this many rows (default 1000); larger jobs should set ``results_path``.
        :param progress_every_seconds: log a progress line at least this often, in seconds (default
            30), besides one for every 5% of the rows.
        :param max_rows: the most rows the input may have (default 1,000,000); a bigger input fails
            the task before any request.
        :param dry_run: plan instead of run, templated (``"{{ params.dry_run }}"`` renders to
            ``True``/``False``): every row is read, validated and looked up in Qmatic with the reads a
            real run makes, and reported ``planned`` (a real run would write it),
            ``skipped_existing``, ``failed`` (with the reason: slot not offered, slot full, ...) or
            ``invalid``; nothing is written to Qmatic and no journal is kept. The summary adds
            ``dry_run``, ``planned``, ``estimated_requests`` and ``estimated_duration_s``; the
            failure policy applies to the plan's failed and invalid rows. See "Plan first" in
            ``docs/bulk.md``.
        :param qmatic_conn_id: the Airflow connection to Qmatic Cloud. Templated.
        """
        super().__init__(qmatic_conn_id=qmatic_conn_id, **kwargs)
        self.rows = rows
        self.results_path = results_path
        self.column_map = column_map
        self.timezone = timezone
        self.skip_existing = skip_existing
        self.concurrency = concurrency
        self.max_failed_rows = max_failed_rows
        self.max_failed_ratio = max_failed_ratio
        self.journal_dir = journal_dir
        self.xcom_outcomes_max = xcom_outcomes_max
        self.progress_every_seconds = progress_every_seconds
        self.max_rows = max_rows
        self.dry_run = dry_run
        self._runner: BulkRunner | None = None
        # Cheap checks at parse time, so a typo shows in the DAG import errors, not at 3 am.
        from airflow_provider_qmatic.bulk.args import check_operator_arguments

        check_operator_arguments(
            skip_existing=skip_existing,
            concurrency=concurrency,
            max_failed_rows=max_failed_rows,
            max_failed_ratio=max_failed_ratio,
            max_rows=max_rows,
            dry_run=dry_run,
        )

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_provider_qmatic.bulk.args import resolve_dry_run
        from airflow_provider_qmatic.bulk.runner import STATUSES, BulkRunner
        from airflow_provider_qmatic.metrics import BULK_ROWS

        ti = context["ti"]
        attempt = int(getattr(ti, "try_number", 1) or 1)
        with self.failing_fast():
            dry_run = resolve_dry_run(self.dry_run)
            rows = self._source(self.rows)
            results = _object_path(self.results_path) if self.results_path else None
            runner = BulkRunner(
                self.hook.client,
                concurrency=self.concurrency,
                skip_existing=self.skip_existing,
                attempt=attempt,
                journal_path=None if dry_run else self.task_journal(context, self.journal_dir),
                timezone=self.timezone or None,
                logger=self.log,
                progress_every_seconds=self.progress_every_seconds,
                max_rows=self.max_rows,
                dry_run=dry_run,
            )
            self._runner = runner
            try:
                result = runner.run(
                    self.action, rows, column_map=self.column_map or None, results_path=results
                )
            finally:
                self.hook.client.close()
                self._runner = None
            # Rows by outcome, for alerts on failed rows; a plan's rows are predictions, not outcomes.
            for outcome in () if dry_run else STATUSES:
                incr_stat(BULK_ROWS.format(outcome=outcome), getattr(result.summary, outcome))
            summary = result.to_xcom(self.xcom_outcomes_max)
            # Pushed before the policy is applied, so a failed task still shows what happened.
            ti.xcom_push(key="summary", value=result.to_xcom(0))
            result.check_policy(self.max_failed_rows, self.max_failed_ratio)
        return summary

    def on_kill(self) -> None:
        runner = self._runner
        if runner is not None:
            runner.stop()

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The job's files as lineage, for Airflow's OpenLineage provider (which calls this after a run).

        Input: the rows file, when ``rows`` named one (rows passed as a list are no dataset).
        Output: the results file, when ``results_path`` is set. Without the OpenLineage provider
        installed this returns None; nothing asks for lineage then.
        """
        try:
            from airflow.providers.common.compat.openlineage.facet import Dataset
            from airflow.providers.openlineage.extractors import OperatorLineage
        except ImportError:
            return None
        source = self._source(self.rows)
        inputs = [Dataset(*_lineage_name(source))] if hasattr(source, "open") else []
        outputs = [Dataset(*_lineage_name(self.results_path))] if self.results_path else []
        return OperatorLineage(inputs=inputs, outputs=outputs)

    @staticmethod
    def _source(rows: Any) -> Any:
        """The rendered ``rows`` as the runner reads them: a list, or a path opened via ObjectStoragePath."""
        if isinstance(rows, str):
            text = rows.strip()
            if text.startswith("["):
                value = rendered(text, "rows", want="a list of row dicts", refusal=QmaticConfigError)
                if not isinstance(value, list):
                    raise QmaticConfigError("rows must be a list of row dicts", field="rows")
                return value
            if not text:
                raise QmaticConfigError(
                    "rows is empty: give a list of row dicts or a file path/URI", field="rows"
                )
            return _object_path(text)
        if isinstance(rows, Path):
            return ObjectStoragePath(str(rows))
        if isinstance(rows, Mapping):
            raise QmaticConfigError("rows must be a list of row dicts, not a single dict", field="rows")
        if isinstance(rows, Sequence) or hasattr(rows, "open"):
            return rows
        if rows is None:
            raise QmaticConfigError("rows is None: the upstream task returned nothing", field="rows")
        # A lazy XCom sequence (mapped upstream tasks) is iterable but not a Sequence.
        try:
            return list(rows)
        except TypeError:
            raise QmaticConfigError(
                f"rows must be a list of row dicts or a file path/URI, got {type(rows).__name__}",
                field="rows",
            ) from None


def _object_path(text: str) -> ObjectStoragePath:
    """``text`` as an ObjectStoragePath, a leading ``~`` first made the home directory (Airflow 2.11
    would otherwise read ``~/rows.csv`` as ``/~/rows.csv``, and 3.x keeps the ``~``)."""
    return ObjectStoragePath(os.path.expanduser(text))


def _lineage_name(path: Any) -> tuple[str, str]:
    """OpenLineage's ``(namespace, name)`` of a file: ``file`` and the absolute path on this host,
    or ``<scheme>://<bucket>`` and the key in object storage. A connection id in the URI
    (``s3://conn_id@bucket/key``) is left out: it names how to reach the data, not the data."""
    from urllib.parse import urlsplit

    from airflow_provider_qmatic.bulk.io import as_path, local_path

    local = local_path(as_path(path))
    if local is not None:
        return "file", str(local.expanduser().absolute())
    parts = urlsplit(str(path))
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}", parts.path.lstrip("/")


class QmaticBulkBookAppointmentsOperator(_QmaticBulkOperator):
    """Book many appointments (reserve, then confirm each), paced and exactly once.

    Row fields: ``branch_id, service_id, start_time, personal_identifier, first_name, last_name,
    email`` (required), ``end_time`` (default: start plus the service's duration), ``phone_number,
    date_of_birth, notes, resource_id, number_of_reservations`` (optional). Returns the summary
    (``total, succeeded, skipped_existing, failed, invalid, api_requests, token_requests,
    elapsed_s, requests_per_minute``, ...) and, for small jobs, ``outcomes``.
    """

    action = "book"


class QmaticBulkRescheduleAppointmentsOperator(_QmaticBulkOperator):
    """Move many appointments to new times (same branch and service), paced and exactly once.

    Row fields: ``appointment_id, start_time`` (required), ``end_time`` (default: keeps the
    appointment's duration), ``notes``. A row whose appointment is already at ``start_time`` is
    ``skipped_existing``.
    """

    action = "reschedule"


class QmaticBulkCancelAppointmentsOperator(_QmaticBulkOperator):
    """Cancel many appointments. Row field: ``appointment_id``. Already cancelled: ``skipped_existing``."""

    action = "cancel"


class QmaticBulkUpdateCustomersOperator(_QmaticBulkOperator):
    """Set new details on every booked appointment of many customers, paced and exactly once.

    Row fields: ``personal_identifier, first_name, last_name, email`` (required), ``phone_number,
    date_of_birth`` (optional): the customer's own personal identifier, which each row's search
    looks for, and the new details. Each row's booked appointments (found by the search, and not
    shown as reserved, cancelled, released, expired or finalized) are updated, those already showing
    every new detail left alone. A row is journaled done after its last update, so a retried task
    does not redo finished rows. Outcomes: ``succeeded`` (at least one appointment updated; its
    ``appointment_id`` lists the row's appointments, space-separated), ``skipped_existing`` (every
    appointment already had the details, or none is booked: noted in ``error``). The summary adds
    ``appointments_updated``. ``timezone`` is not used. XCom and logs carry ids and counts only.
    """

    action = "update_customer"


__all__ = [
    "QmaticBulkBookAppointmentsOperator",
    "QmaticBulkCancelAppointmentsOperator",
    "QmaticBulkRescheduleAppointmentsOperator",
    "QmaticBulkUpdateCustomersOperator",
]
