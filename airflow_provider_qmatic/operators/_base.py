"""What every Qmatic operator shares: the hook, built on first use, and how errors end a task.

An error that retrying cannot fix (bad input, 400, 403, 404, a slot taken) fails the task at once,
without spending Airflow retries on it; a rate limit or server fault propagates unchanged so that
the task's ``retries`` apply. Kept free of heavy imports: DAG files import operator modules.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_qmatic import DEFAULT_CONN_ID
from airflow_provider_qmatic.compat import AirflowFailException, BaseOperator
from airflow_provider_qmatic.exceptions import QmaticConfigError, QmaticError, QmaticValidationError

if TYPE_CHECKING:
    from airflow_provider_qmatic.api.models import Appointment
    from airflow_provider_qmatic.flows import FlowEvents, FlowResult, Flows
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook
    from airflow_provider_qmatic.state.journal import Journal


class QmaticBaseOperator(BaseOperator):  # type: ignore[misc]
    """Base of the Qmatic operators.

    :param qmatic_conn_id: the Airflow connection to Qmatic Cloud (type ``qmatic``).
    """

    # Bulk operators draw from the tenant's budget leaving a reserve that single calls may use.
    bulk_budget: ClassVar[bool] = False

    def __init__(self, *, qmatic_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.qmatic_conn_id = qmatic_conn_id

    @cached_property
    def hook(self) -> QmaticHook:
        from airflow_provider_qmatic.hooks.qmatic import QmaticHook

        return QmaticHook(qmatic_conn_id=self.qmatic_conn_id, bulk=self.bulk_budget)

    def task_journal(self, context: Any, journal_dir: str | None = None) -> Journal:
        """This task instance's journal through this connection (see
        :mod:`~airflow_provider_qmatic.state.journal`), which its retries read: in Redis with
        ``credential_cache: redis`` (a retry may run on another worker), else a file in
        ``journal_dir`` or the default journal directory."""
        from airflow_provider_qmatic import state

        ti = context["ti"]
        map_index = getattr(ti, "map_index", -1)
        return state.task_journal(
            self.hook.config,
            dag_id=ti.dag_id,
            run_id=context.get("run_id") or ti.run_id,
            task_id=ti.task_id,
            map_index=-1 if map_index is None else int(map_index),
            journal_dir=journal_dir,
        )

    def journaled(
        self,
        context: Any,
        *,
        booking: bool,
        flow: Callable[[Flows, FlowEvents], FlowResult[Appointment]],
        combination: bool = False,
    ) -> FlowResult[Appointment]:
        """Run one booking or move (``flow(flows, events)``) through the task instance's journal, as
        a bulk row is.

        The reservation is written down before its confirm or move, so a retry after a killed try
        first settles the hold that try left (released, or found used), and the row's one reserve
        budget spans the tries. ``booking`` says which flow left the reservations (see
        :meth:`~airflow_provider_qmatic.flows.Flows.settle`), ``combination`` whether it was one of
        several services (read back through the ``/serviceCombination/`` get).
        """
        from airflow_provider_qmatic.exceptions import QmaticServerError
        from airflow_provider_qmatic.flows import FlowEvents

        flows = self.hook.flows
        ti = context.get("ti") or context.get("task_instance")
        if ti is None:  # run outside a task instance (a script, a test): no retry to resume
            return flow(flows, FlowEvents())
        journal = self.task_journal(context)
        with journal as state:
            events = FlowEvents.journaled(journal, state, "task", 1)
            for reservation_id in list(state.open_reservations):
                settled = flows.settle(
                    reservation_id, booking=booking, events=events, combination=combination
                )
                if settled.fate == "unknown":
                    raise QmaticServerError(
                        f"reservation {reservation_id} of an earlier try could not be checked (Qmatic did "
                        "not answer); not going on before it is known, so that nobody is booked twice"
                    )
            journal.record_attempt(int(getattr(ti, "try_number", 1) or 1))
            return flow(flows, events)

    @contextmanager
    def failing_fast(self) -> Iterator[None]:
        """Turn errors that no retry can fix into AirflowFailException; let the rest propagate."""
        try:
            yield
        except QmaticError as exc:
            if exc.retryable:
                raise
            raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


_OBJECT = "an object (a dict, or text holding a JSON object)"


def rendered(
    value: Any,
    field: str,
    *,
    want: str = "an object (a dict, or text holding a JSON object)",
    refusal: type[QmaticError] = QmaticValidationError,
) -> Any:
    """``value``, or, when a template rendered it to text (``render_template_as_native_obj=False``),
    the object or list that text holds as JSON or as a Python literal (a repr); text that holds
    neither is a ``refusal`` naming ``field``."""
    if not isinstance(value, str):
        return value
    for reader in (json.loads, ast.literal_eval):
        try:
            found = reader(value.strip())
        except (RecursionError, MemoryError):
            raise QmaticConfigError(
                f"{field}: is nested too deeply to read; pass an object a few levels deep", field=field
            ) from None
        except (ValueError, SyntaxError, TypeError):
            continue
        if isinstance(found, (Mapping, list)):
            return found
    raise refusal(
        f"{field}: must be {want}, got text that is not one; pass it directly (an XComArg, or "
        "render_template_as_native_obj=True on the DAG), or a template that renders to JSON such as "
        "'{{ params.customer | tojson }}'",
        field=field,
    )
