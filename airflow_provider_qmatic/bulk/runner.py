"""The bulk runner: book, reschedule or cancel many appointments, or update customers' details on
theirs, paced, exactly once, with a report.

Plain Python (no Airflow import), so it serves the bulk operators, ``@task`` code and scripts::

    from airflow_provider_qmatic.bulk.runner import BulkRunner
    from airflow_provider_qmatic.client.client import build_client

    client = build_client(config)                  # or QmaticHook(...).client, as the operators do
    result = BulkRunner(client).book("bookings.csv", results_path="results.csv")
    result.check_policy(max_failed_rows=0)        # raise if rows failed
    print(result.summary.to_dict())

What a run does, in order:

1. **Read** the rows (a list of dicts, or a CSV / JSON Lines file; see :mod:`.bulk_io` for the
   column mapping). Missing required columns stop the run before any request.
2. **Validate** every row with the models the single operators use; invalid rows and duplicates
   (same customer, branch, service and start; for reschedule and cancel the same appointment; for
   a customer update the same personal identifier) are reported with their row number, field and
   reason, and never sent.
3. **Resume**: with a journal (see :mod:`~airflow_provider_qmatic.state.journal`), reservations
   that an earlier, killed attempt left without an outcome are settled (done, or released), and the
   rows it left in flight are known: on a retry only those are looked up in Qmatic.
4. **Run** each valid row through :class:`~airflow_provider_qmatic.flows.Flows`, the flow the single
   operators run, on ``concurrency`` worker threads (default 4) sharing one client, so one token
   cache and one :class:`~airflow_provider_qmatic.state.budget.RateLimiter` pace every request the job
   causes. The flow's events (reserving, reserved, done, released, ...) go to the journal. A
   booking job's first row runs alone: a confirm refused because the tenant requires a field the row
   lacks (date of birth, an information answer) teaches the runner that field, and later rows
   without it fail before their reserve, so such a file spends one reservation, not one per row.
5. **Report**: a progress line every 5% or 30 s, a summary table at the end, per-row outcomes
   (``row, status, appointment_id, error``), written to ``results_path`` if given.

Exactly once, and how rows are counted, is the flows' (see :mod:`.flows` and ``docs/bulk.md``):
``succeeded`` is a row this run booked, moved or cancelled; ``skipped_existing`` one found done
(by an earlier attempt, or before the job). ``skip_existing``: ``auto`` (default) looks rows up on
a retry or cleared run (``attempt > 1``): with a complete journal only rows in flight, else every
row not recorded done; ``always`` looks every row up; ``never`` none.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any

from airflow_provider_qmatic.api.contract import BOOK_SCOPES
from airflow_provider_qmatic.bulk.args import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_ROWS,
    XCOM_OUTCOMES_MAX,
    check_concurrency,
    check_max_rows,
    check_policy_values,
    resolve_skip_existing,
)
from airflow_provider_qmatic.bulk.io import (
    CUSTOMER_FIELDS,
    QUESTION_PREFIX,
    InputRows,
    PathLike,
    Source,
    check_results_path,
    known_fields,
    load_rows,
    write_outcomes,
)
from airflow_provider_qmatic.bulk.plan import Planner, customer_update_plan, estimate
from airflow_provider_qmatic.bulk.progress import (
    EVERY_FRACTION,
    EVERY_SECONDS,
    STATUS_ORDER,
    ProgressReporter,
    achieved_rate,
    summary_table,
)
from airflow_provider_qmatic.exceptions import (
    QmaticAuthError,
    QmaticBulkError,
    QmaticBulkRetryableError,
    QmaticConfigError,
    QmaticCoordinationError,
    QmaticError,
    QmaticForbiddenError,
    QmaticJournalBusyError,
    QmaticJournalSupersededError,
    QmaticServerError,
    QmaticTenantRequiresFieldError,
    QmaticValidationError,
)
from airflow_provider_qmatic.flows import (
    RESERVE_BUDGET,
    FlowEvents,
    FlowResult,
    Flows,
    client_slots,
    customer_matches,
    is_booked,
)
from airflow_provider_qmatic.state.journal import (
    DONE,
    FINGERPRINTS,
    UPDATING,
    FileJournal,
    Journal,
    JournalState,
)
from airflow_provider_qmatic.state.journal import FAILED as JOURNAL_FAILED

if TYPE_CHECKING:
    from datetime import date, tzinfo

    from airflow_provider_qmatic.api.models import (
        Appointment,
        BookingRequest,
        BranchCombinations,
        CustomerUpdate,
        Service,
        Slot,
    )
    from airflow_provider_qmatic.client.client import QmaticClient

log = logging.getLogger(__name__)

ACTIONS: tuple[str, ...] = ("book", "reschedule", "cancel", "update_customer")
# What a row is a duplicate of, per action, in the message of the row that repeats it.
_SAME = {
    "book": "customer, branch, service and start",
    "reschedule": "appointment",
    "cancel": "appointment",
    "update_customer": "personal identifier",
}

SUCCEEDED = "succeeded"
SKIPPED_EXISTING = "skipped_existing"
FAILED = "failed"
INVALID = "invalid"
STATUSES: tuple[str, ...] = (SUCCEEDED, SKIPPED_EXISTING, FAILED, INVALID)
# A dry run's row that a real run would write (see bulk.plan); a dry run has no SUCCEEDED rows.
PLANNED = "planned"
# Errors that no other row can escape either: stop the run instead of failing every row alike.
_FATAL = (QmaticAuthError, QmaticForbiddenError, QmaticConfigError)


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)  # one per row: no per-instance __dict__
class RowOutcome:
    """What happened to one input row. ``error`` names the step and field, never a value."""

    row: int
    status: str
    appointment_id: str | None = None
    error: str | None = None
    retryable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "status": self.status,
            "appointment_id": self.appointment_id,
            "error": self.error,
        }


@dataclass(frozen=True)
class BulkSummary:
    """Counts and pace of one run: what the operators push to XCom."""

    action: str
    total: int
    succeeded: int
    skipped_existing: int
    failed: int
    invalid: int
    api_requests: int
    token_requests: int
    elapsed_s: float
    requests_per_minute: float
    limit_per_minute: float | None
    possibly_orphaned_reservations: int = 0
    # Customer updates only: appointments whose details this run set (a row may have several).
    appointments_updated: int | None = None
    # Dry runs only (see bulk.plan): rows a real run would write, and its requests and duration.
    planned: int | None = None
    estimated_requests: int | None = None
    estimated_duration_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.appointments_updated is None:
            del data["appointments_updated"]
        if self.planned is None:
            for key in ("planned", "estimated_requests", "estimated_duration_s"):
                del data[key]
        else:
            data["dry_run"] = True
        return data


@dataclass
class BulkResult:
    """A run's summary and per-row outcomes (sorted by row)."""

    summary: BulkSummary
    outcomes: list[RowOutcome]
    results_path: str | None = None
    stopped_by: str | None = None
    fatal: bool = False
    results_error: str | None = None

    def to_xcom(self, max_outcomes: int = XCOM_OUTCOMES_MAX) -> dict[str, Any]:
        """The summary, plus ``outcomes`` when there are at most ``max_outcomes`` rows."""
        data = self.summary.to_dict()
        data["results_path"] = self.results_path
        if len(self.outcomes) <= max_outcomes:
            data["outcomes"] = [o.to_dict() for o in self.outcomes]
        return data

    def failures(self) -> list[RowOutcome]:
        return [o for o in self.outcomes if o.status in (FAILED, INVALID)]

    def check_policy(self, max_failed_rows: int | None = 0, max_failed_ratio: float | None = None) -> None:
        """Raise if failed plus invalid rows exceed ``max_failed_rows`` or ``max_failed_ratio``.

        Raises :class:`QmaticBulkRetryableError` when the policy would hold if every retryable
        failure (5xx, 429, timeouts) succeeded on a retry, else :class:`QmaticBulkError`. A run
        stopped by an authentication or permission error always raises the latter.
        """
        check_policy_values(max_failed_rows, max_failed_ratio)
        total = self.summary.total
        bad = self.failures()
        hard = [o for o in bad if not o.retryable]

        def exceeded(count: int) -> bool:
            if max_failed_rows is not None and count > max_failed_rows:
                return True
            return max_failed_ratio is not None and total > 0 and count / total > max_failed_ratio

        if not self.fatal and not exceeded(len(bad)):
            if self.results_error:
                raise QmaticBulkRetryableError(
                    f"Qmatic bulk {self.summary.action}: every row was processed, but the results file "
                    f"could not be written ({self.results_error}); a retry skips the rows already done "
                    "and writes it again"
                )
            return
        message = self.failure_report(max_failed_rows, max_failed_ratio)
        if self.fatal or exceeded(len(hard)):
            raise QmaticBulkError(message)
        raise QmaticBulkRetryableError(message)

    def failure_report(self, max_failed_rows: int | None, max_failed_ratio: float | None) -> str:
        s = self.summary
        policy = ", ".join(
            f"{name}={value}"
            for name, value in (("max_failed_rows", max_failed_rows), ("max_failed_ratio", max_failed_ratio))
            if value is not None
        )
        done = f"{s.succeeded} succeeded" if s.planned is None else f"dry run: {s.planned} planned"
        head = (
            f"Qmatic bulk {s.action}: {s.failed} failed and {s.invalid} invalid of {s.total} rows "
            f"({done}, {s.skipped_existing} already done)"
        )
        if self.stopped_by:
            head += f"; the run stopped early: {self.stopped_by}"
        else:
            head += f", over the failure policy ({policy or 'none'})"
        groups: dict[str, list[int]] = {}
        for outcome in self.failures():
            groups.setdefault(f"{outcome.status}: {outcome.error}", []).append(outcome.row)
        lines = [head]
        for reason, rows in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            shown = ", ".join(str(r) for r in rows[:10]) + (
                f" and {len(rows) - 10} more" if len(rows) > 10 else ""
            )
            lines.append(f"  {len(rows)} x {reason} (rows {shown})")
        if self.results_path:
            lines.append(f"  every row's outcome: {self.results_path}")
        retryable = sum(1 for o in self.failures() if o.retryable)
        if retryable:
            lines.append(
                f"  {retryable} failure(s) may pass on a retry (server faults, rate limits); a retry skips "
                "the rows already done"
            )
        return "\n".join(lines)


# -- building blocks -----------------------------------------------------------------------------


def _fingerprint(key: bytes, *parts: object) -> str:
    """Journals keep these: HMAC-SHA256 under ``key`` (the connection's ``FINGERPRINTS`` key, see
    :mod:`~airflow_provider_qmatic.state.journal`) of exactly ``json.dumps([str(p) for p in
    parts])``, written without the encoder's per-call set-up (this runs once per row)."""
    text = "[" + ", ".join(map(encode_basestring_ascii, map(str, parts))) + "]"
    return hmac.digest(key, text.encode(), "sha256").hex()[:24]


def _instant(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(timezone.utc).isoformat()


@dataclass(frozen=True, slots=True)
class _Item:
    row: int
    fingerprint: str
    request: Any
    customer: str | None = None  # personal identifier (booking), for the search cache only
    appointment_id: str | None = None  # the row's appointment (reschedule, cancel)


def _validation_text(exc: QmaticValidationError) -> str:
    """The model's message without its "invalid booking request: " prefix: ``field: rule | ...``."""
    text = exc.message
    if text.startswith("invalid ") and ": " in text:
        text = text.split(": ", 1)[1]
    return text


def describe_error(step: str, exc: BaseException) -> str:
    """``<step>: HTTP <status> <code> [at <field>]`` for API errors (Qmatic's own text can quote
    values, so it is left out); the provider's own messages (which quote no personal data) else."""
    if isinstance(exc, QmaticError):
        if exc.status is not None:
            text = f"{step}: HTTP {exc.status}"
            if exc.code:
                text += f" {exc.code}"
            found = _field_in(exc.message) if exc.status == 400 else None
            if found:
                text += f" at {found}"
            return text
        if isinstance(exc, QmaticValidationError):
            return f"{step}: {_validation_text(exc)}"
        return f"{step}: {exc.message}" + (f" ({exc.code})" if exc.code else "")
    return f"{step}: unexpected {type(exc).__name__}"


def _field_in(message: str) -> str | None:
    """The field path Qmatic names at the start of a 400 message (``customer.email: ...``)."""
    _, sep, rest = message.partition(" with HTTP 400: ")
    if not sep:
        return None
    name = rest.split(":", 1)[0].strip()
    ok = name and len(name) <= 80 and all(ch.isalnum() or ch in "._[]" for ch in name)
    return name if ok else None


class _KeyedCache:
    """A dict filled at most once per key, even when several threads ask at once."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._values: dict[str, Any] = {}

    def get(self, key: str, load: Callable[[], Any]) -> Any:
        with self._guard:
            if key in self._values:
                return self._values[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            with self._guard:
                if key in self._values:
                    return self._values[key]
            value = load()
            with self._guard:
                self._values[key] = value
            return value


def _row_parser(
    action: str, zone: Any, signing: bytes
) -> Callable[[int, Mapping[str, Any]], tuple[_Item, str]]:
    """``(row number, flat row) -> (item, dedupe key)`` for ``action``, fingerprints made with ``signing``;
    raises QmaticValidationError."""
    from airflow_provider_qmatic.api.models import (
        BookingRequest,
        CancelRequest,
        CustomerUpdate,
        RescheduleRequest,
    )

    def parse(number: int, flat: Mapping[str, Any]) -> tuple[_Item, str]:
        if action == "book":
            booking = BookingRequest.parse(_nest_booking(flat), timezone=zone)
            pid = booking.customer.personal_identifier
            start = _instant(booking.start_time)
            # One service: the key it always had; several: all of them, in the row's order.
            services = "+".join(booking.services)
            key = _fingerprint(signing, "book", pid, booking.branch_id, services, start)
            return _Item(number, key, booking, pid), key
        if action == "update_customer":
            details = CustomerUpdate.parse(flat)
            pid = details.personal_identifier
            # The new details are in the key (hashed): a row changed between tries is a new row.
            key = _fingerprint(signing, "update_customer", *details.to_wire().items())
            return _Item(number, key, details, pid), pid
        if action == "reschedule":
            move = RescheduleRequest.parse(flat, timezone=zone)
            key = _fingerprint(signing, "reschedule", move.appointment_id, _instant(move.start_time))
            if move.combined:
                key = _fingerprint(signing, key, *move.services)
            return _Item(number, key, move, appointment_id=move.appointment_id), move.appointment_id
        cancel = CancelRequest.parse(flat)
        key = _fingerprint(signing, "cancel", cancel.appointment_id)
        return _Item(number, key, cancel, appointment_id=cancel.appointment_id), cancel.appointment_id

    return parse


class _ValidRows:
    """The rows that passed validation, parsed again, one at a time, as the workers take them.

    :meth:`BulkRunner.prepare` keeps per valid row only ``dedupe key -> row number``; iterating reads
    the input again and yields an :class:`_Item` for each of those rows. A row that does not parse
    to the same key now (the file was changed during the job), or is gone, is yielded as a failed
    :class:`RowOutcome` instead: never sent, since it was not what was validated.
    """

    def __init__(
        self,
        rows: InputRows,
        parse: Callable[[int, Mapping[str, Any]], tuple[_Item, str]],
        first_seen: dict[str, int],
        invalid: Sequence[RowOutcome],
        total: int,
    ) -> None:
        self._rows = rows
        self._parse = parse
        self._first_seen = first_seen
        self._invalid = {o.row for o in invalid}
        self._total = total

    def __len__(self) -> int:
        return len(self._first_seen)

    def __iter__(self) -> Iterator[_Item | RowOutcome]:
        changed = "the input changed after it was validated; row not sent"
        rows = iter(self._rows)
        last = 0
        while True:
            try:
                number, flat = next(rows)
            except StopIteration:
                break
            except QmaticError as exc:  # gone, unreadable or reshaped since the first reading
                changed = f"the input could not be read again ({exc.message}); row not sent"
                break
            if number > self._total:
                break
            last = number
            if number in self._invalid:
                continue
            try:
                item, dedupe = self._parse(number, flat)
                same = self._first_seen.get(dedupe) == number
            except QmaticValidationError:
                same = False
            yield item if same else RowOutcome(number, FAILED, error=changed)
        for number in self._first_seen.values():
            if number > last:
                yield RowOutcome(number, FAILED, error=changed)


class _Feed:
    """The workers' shared iterator (one ``next`` at a time), with the items taken but not done."""

    def __init__(self, items: Iterator[_Item | RowOutcome]) -> None:
        self._items = items
        self._lock = threading.Lock()
        self._in_flight: dict[int, _Item] = {}

    def take(self) -> _Item | RowOutcome | None:
        with self._lock:
            item = next(self._items, None)
            if isinstance(item, _Item):
                self._in_flight[item.row] = item
            return item

    def done(self, item: _Item) -> None:
        with self._lock:
            self._in_flight.pop(item.row, None)

    def leftover(self) -> Iterator[_Item | RowOutcome]:
        """Items taken whose worker never finished them, then every item not taken."""
        with self._lock:
            in_flight, self._in_flight = list(self._in_flight.values()), {}
        yield from in_flight
        yield from self._items


# -- the runner ----------------------------------------------------------------------------------


class BulkRunner:
    """Runs one bulk job over a :class:`~airflow_provider_qmatic.client.client.QmaticClient`.

    :param client: the client every request goes through: the hook's, or one from
        :func:`~airflow_provider_qmatic.client.client.build_client` (so that it has the shared limiter);
        one runner serves one job at a time.
    :param concurrency: worker threads, 1 to 32 (default 4). The limiter, not this, sets the pace;
        a few threads keep the budget used while each waits for its answer.
    :param skip_existing: ``auto`` | ``always`` | ``never`` (see the module documentation).
    :param attempt: the task's try number; ``auto`` checks existing state when it is above 1.
    :param journal_path: a file under a private directory for resumability, or a
        :class:`~airflow_provider_qmatic.state.journal.Journal` kept elsewhere (in Redis); one per
        task instance. None: no journal.
    :param timezone: IANA zone for row times written without an offset.
    :param logger: where progress and the summary go (the operator passes its task logger).
    :param max_rows: the most rows an input may have (default 1,000,000); more is refused before
        any request, naming ``max_rows``.
    :param dry_run: plan instead of run (see :mod:`.plan`): every row is read, validated and looked up
        in Qmatic, and each valid row is reported ``planned``, ``skipped_existing`` or ``failed``
        with its reason; the client reads only (no reserve, confirm, reschedule, cancel, release or
        update), no journal is opened or written, and the summary adds ``planned`` and an estimate
        of the real run's requests and duration.
    """

    def __init__(
        self,
        client: QmaticClient,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        skip_existing: str | bool = "auto",
        attempt: int = 1,
        journal_path: str | os.PathLike[str] | Journal | None = None,
        timezone: str | tzinfo | None = None,
        logger: logging.Logger | None = None,
        progress_every_seconds: float = EVERY_SECONDS,
        progress_every_fraction: float = EVERY_FRACTION,
        reserve_budget: int = RESERVE_BUDGET,
        sleep: Callable[[float], None] = time.sleep,
        max_rows: int = DEFAULT_MAX_ROWS,
        dry_run: bool = False,
    ) -> None:
        self.client = client
        self.dry_run = dry_run
        self.concurrency = check_concurrency(concurrency)
        self.max_rows = check_max_rows(max_rows)
        self.skip_mode = resolve_skip_existing(skip_existing)
        self.attempt = attempt
        self.journal_path = journal_path
        self.timezone = timezone
        self.log = logger or log
        self._progress_every_seconds = progress_every_seconds
        self._progress_every_fraction = progress_every_fraction
        self._reserve_budget = max(1, reserve_budget)
        self._sleep = sleep
        self._stop = threading.Event()
        self._fatal: str | None = None
        self._journal: Journal | None = None
        self._state: JournalState | None = None
        self._complete = False
        self._journal_done: dict[str, str | None] = {}
        self._unresolved: set[str] = set()
        self._orphaned = 0
        self._updated = 0
        self._counter_lock = threading.Lock()
        self._required: dict[str, int] = {}  # field the tenant requires -> row that learnt it
        self._probe_claimed = False
        self._probe_done = threading.Event()
        self._flows = Flows(client, sleep=sleep)
        self._multi_row_customers: set[str] = set()
        self._planner = Planner(self._flows)
        self._planned_writes = 0
        self._key = client.config.derived_key(FINGERPRINTS)  # the same on every attempt

    # -- public --------------------------------------------------------------------------------

    def book(self, rows: Source, **kwargs: Any) -> BulkResult:
        """Bulk booking; see :meth:`run`."""
        return self.run("book", rows, **kwargs)

    def reschedule(self, rows: Source, **kwargs: Any) -> BulkResult:
        """Bulk reschedule; see :meth:`run`."""
        return self.run("reschedule", rows, **kwargs)

    def cancel(self, rows: Source, **kwargs: Any) -> BulkResult:
        """Bulk cancel; see :meth:`run`."""
        return self.run("cancel", rows, **kwargs)

    def stop(self) -> None:
        """Ask the workers to stop after their current row (the operator's ``on_kill``)."""
        self._stop.set()

    def run(
        self,
        action: str,
        rows: Source,
        *,
        column_map: Mapping[str, str] | None = None,
        results_path: str | os.PathLike[str] | PathLike | None = None,
    ) -> BulkResult:
        """Validate and run every row; never raises for failed rows (see :meth:`BulkResult.check_policy`).

        :param action: ``book``, ``reschedule`` or ``cancel``.
        :param rows: a list of row dicts, or a path/URI of a ``.csv`` or ``.jsonl`` file.
        :param column_map: ``{input column: field}`` renames (see :mod:`.bulk_io`).
        :param results_path: where to write the per-row outcomes (``.csv`` or ``.jsonl``).
        :raises QmaticConfigError: unreadable input, missing required columns, more than ``max_rows``
            rows, or a ``results_path`` that is the input file (before any request).
        """
        if action not in ACTIONS:
            raise QmaticConfigError(f"action must be one of {', '.join(ACTIONS)}", field="action")
        check_results_path(results_path, rows)
        self._fatal, self._orphaned, self._state, self._complete = None, 0, None, False
        self._updated, self._required, self._probe_claimed = 0, {}, False
        self._probe_done.clear()
        self._journal_done, self._unresolved = {}, set()
        started = time.monotonic()
        api_before, token_before = self.client.api_requests, self.client.token_requests
        items, outcomes, total = self.prepare(action, rows, column_map=column_map)
        self._flows = self._cached_flows(self._multi_row_customers)
        self._planner, self._planned_writes = Planner(self._flows), 0

        def requests_sent() -> int:
            return (self.client.api_requests - api_before) + (self.client.token_requests - token_before)

        limiter = self.client.limiter
        progress = ProgressReporter(
            action=action,
            total=total,
            requests=requests_sent,
            limiter=limiter,
            logger=self.log,
            every_fraction=self._progress_every_fraction,
            every_seconds=self._progress_every_seconds,
            statuses=(PLANNED, *STATUS_ORDER[1:]) if self.dry_run else STATUS_ORDER,
        )
        self.log.info(
            "Qmatic bulk %s: %d rows, %d valid, %d invalid; %d worker thread(s), pace %s, skip_existing %s "
            "(attempt %d)%s",
            action,
            total,
            len(items),
            total - len(items),
            min(self.concurrency, max(1, len(items))),
            progress.pace_text(),
            self.skip_mode,
            self.attempt,
            "; DRY RUN: rows are looked up and planned, nothing is written to Qmatic"
            if self.dry_run
            else (f", journal {self.journal_path}" if self.journal_path else ""),
        )
        counts: Counter[str] = Counter(o.status for o in outcomes)
        held = True
        try:
            if self.journal_path is not None and items and not self.dry_run:  # a plan is no progress
                journal = self.journal_path
                self._journal = journal if isinstance(journal, Journal) else FileJournal(journal)
                state = self._journal.open()
                self._resume(action, state)
            with self.client.reads_only() if self.dry_run else contextlib.nullcontext():
                outcomes.extend(self._execute(action, items, counts, total, progress))
            held = self._journal is None or self._journal.held()
        finally:
            if self._journal is not None:
                self._journal.close()
                self._journal = None
        if not held:  # a newer attempt owns the job: its results file and journal stand, not ours
            raise QmaticJournalSupersededError(
                f"Qmatic bulk {action}: attempt {self.attempt} lost the task's journal to another "
                "attempt while it was stalled past its lease; it stopped, and wrote no results file "
                "and nothing more to the journal: the other attempt's outcome is the job's"
            )
        outcomes.sort(key=lambda o: o.row)
        elapsed = time.monotonic() - started
        sent = requests_sent()
        planned: dict[str, Any] = {}
        if self.dry_run:
            requests, seconds = estimate(sent, self._planned_writes, limiter.limit if limiter else None)
            planned = {
                "planned": counts[PLANNED],
                "estimated_requests": requests,
                "estimated_duration_s": seconds,
            }
            self._warn_unchecked(action, counts[SKIPPED_EXISTING])
        summary = BulkSummary(
            action=action,
            total=total,
            succeeded=counts[SUCCEEDED],
            skipped_existing=counts[SKIPPED_EXISTING],
            failed=counts[FAILED],
            invalid=counts[INVALID],
            api_requests=self.client.api_requests - api_before,
            token_requests=self.client.token_requests - token_before,
            elapsed_s=round(elapsed, 3),
            requests_per_minute=round(achieved_rate(sent, elapsed), 1),
            limit_per_minute=limiter.limit if limiter is not None else None,
            possibly_orphaned_reservations=self._orphaned,
            appointments_updated=self._updated if action == "update_customer" else None,
            **planned,
        )
        result = BulkResult(
            summary=summary, outcomes=outcomes, stopped_by=self._fatal, fatal=self._fatal is not None
        )
        progress.finish(len(outcomes), counts)
        if results_path is not None:
            try:
                result.results_path = write_outcomes(results_path, [o.to_dict() for o in outcomes])
            except Exception as exc:  # every row is done: report, and let check_policy fail the task
                result.results_error = f"{type(exc).__name__}: {getattr(exc, 'strerror', None) or exc}"[:300]
                self.log.error(
                    "Qmatic bulk %s: could not write the results file: %s", action, result.results_error
                )
        table = summary.to_dict()
        table.pop("action")
        if result.results_path:
            table["results_path"] = result.results_path
        title = f"Qmatic bulk {action}: " + ("dry run, the plan" if self.dry_run else "summary")
        self.log.info("%s", summary_table(title, table))
        return result

    def _warn_unchecked(self, action: str, done: int) -> None:
        """A plan looks every row up; a real run with ``skip_existing`` other than ``always`` may not
        (``auto`` only on a retry), and would then book or cancel the rows found done again."""
        if done and action in ("book", "cancel") and self.skip_mode != "always":
            self.log.warning(
                "Qmatic bulk %s (dry run): %d row(s) are done already; a real run with skip_existing=%s "
                "does not look rows up on its first try and would send them again: run it with "
                "skip_existing='always'",
                action,
                done,
                self.skip_mode,
            )

    # -- validation ------------------------------------------------------------------------------

    def prepare(
        self, action: str, rows: Source, *, column_map: Mapping[str, str] | None = None
    ) -> tuple[_ValidRows, list[RowOutcome], int]:
        """Read and validate every row: the valid rows to run, outcomes of invalid ones, the row count.

        Rows are streamed: what stays in memory per row is its dedupe key (and, for bookings, a count
        per customer), not the row or its parsed request; the valid rows are parsed again as they are
        run (see :class:`_ValidRows`).
        """
        from airflow_provider_qmatic.api.models import resolve_timezone

        loaded = load_rows(rows, action=action, column_map=column_map, max_rows=self.max_rows)
        parse = _row_parser(action, resolve_timezone(self.timezone), self._key)
        invalid: list[RowOutcome] = []
        first_seen: dict[str, int] = {}
        customers: Counter[str] = Counter()
        total = 0
        for number, flat in loaded:
            total = number
            try:
                item, dedupe = parse(number, flat)
            except QmaticValidationError as exc:
                invalid.append(RowOutcome(number, INVALID, error=_validation_text(exc)))
                continue
            if dedupe in first_seen:
                duplicate = f"duplicate of row {first_seen[dedupe]} (same {_SAME[action]})"
                invalid.append(RowOutcome(number, INVALID, error=duplicate))
                continue
            first_seen[dedupe] = number
            if item.customer is not None:
                customers[item.customer] += 1
        if loaded.ignored:
            self.log.warning(
                "Qmatic bulk %s: ignoring column(s) that name no field: %s (fields: %s; rename with "
                "column_map)",
                action,
                ", ".join(loaded.ignored[:20]),
                ", ".join(known_fields(action)),
            )
        self._multi_row_customers = {c for c, n in customers.items() if n > 1}
        return _ValidRows(loaded, parse, first_seen, invalid, total), invalid, total

    # -- execution -------------------------------------------------------------------------------

    def _execute(
        self,
        action: str,
        items: _ValidRows,
        counts: Counter[str],
        total: int,
        progress: ProgressReporter,
    ) -> list[RowOutcome]:
        if not items:
            return []
        work = _Feed(iter(items))
        results: queue.SimpleQueue[RowOutcome] = queue.SimpleQueue()
        threads = [
            threading.Thread(
                target=self._worker, args=(action, work, results), name=f"qmatic-bulk-{i}", daemon=True
            )
            for i in range(min(self.concurrency, len(items)))
        ]
        for thread in threads:
            thread.start()
        out: list[RowOutcome] = []
        done = total - len(items)  # invalid rows are done already
        try:
            while len(out) < len(items):
                try:
                    outcome = results.get(timeout=1.0)
                except queue.Empty:
                    if not any(t.is_alive() for t in threads):
                        break  # the run stopped early; outcomes put just before are drained below
                    progress.update(done, counts)
                    continue
                out.append(outcome)
                counts[outcome.status] += 1
                done += 1
                progress.update(done, counts)
        except BaseException:
            self._stop.set()  # killed (SIGTERM -> exception here): let in-flight rows finish cleanly
            for thread in threads:
                thread.join(timeout=60)
            raise
        for thread in threads:
            thread.join()
        while True:
            try:
                outcome = results.get_nowait()
            except queue.Empty:
                break
            out.append(outcome)
            counts[outcome.status] += 1
        # Rows the workers never reached (the run stopped): failed, and said why.
        reason = f"not attempted: {self._fatal}" if self._fatal else "not attempted: the run was stopped"
        for item in work.leftover():
            if isinstance(item, RowOutcome):
                out.append(item)
                counts[item.status] += 1
                continue
            outcome = RowOutcome(item.row, FAILED, item.appointment_id, reason, self._fatal is None)
            out.append(outcome)
            counts[FAILED] += 1
        return out

    def _worker(
        self,
        action: str,
        work: _Feed,
        results: queue.SimpleQueue[RowOutcome],
    ) -> None:
        while not self._stop.is_set():
            item = work.take()
            if item is None:
                return
            if isinstance(item, RowOutcome):  # a row that changed since it was validated
                results.put(item)
                continue
            events = self._events(item.fingerprint, item.row)
            probe = self._await_probe(action)
            try:
                outcome = self._outcome(action, item, events)
            finally:
                if probe:
                    self._probe_done.set()
            if outcome.status == FAILED and self._journal is not None:
                with contextlib.suppress(QmaticError, OSError):
                    self._journal.record(JOURNAL_FAILED, fingerprint=item.fingerprint, row=item.row)
            with self._counter_lock:
                self._orphaned += events.possibly_orphaned
            results.put(outcome)
            work.done(item)

    def _await_probe(self, action: str) -> bool:
        """A booking job's first row goes alone: True for it; every other row waits for it to end.

        A tenant may require a field at confirm that the file lacks on every row; the first row
        learns it (see :meth:`_learn_required`) and the rest then fail before reserving, so such a
        file costs one reservation, not one per worker thread.
        """
        if action != "book" or self.dry_run:  # a plan confirms nothing, so learns nothing
            return False
        with self._counter_lock:
            if not self._probe_claimed:
                self._probe_claimed = True
                return True
        while not self._probe_done.wait(0.2) and not self._stop.is_set():
            pass
        return False

    def _outcome(self, action: str, item: _Item, events: FlowEvents) -> RowOutcome:
        """Run one row and say what happened; errors become a failed outcome (or stop the run)."""
        try:
            return self._row(action, item, events)
        except QmaticTenantRequiresFieldError as exc:
            error = self._learn_required(exc.field or "question:", item.row)
            return RowOutcome(item.row, FAILED, None, error)
        except _FATAL as exc:
            text = describe_error(events.step, exc)
            with self._counter_lock:
                if self._fatal is None:
                    self._fatal = text
            self._stop.set()
            self.log.error("Qmatic bulk: stopping the run, no row can succeed: %s", text)
            return RowOutcome(item.row, FAILED, item.appointment_id, text)
        except (QmaticCoordinationError, QmaticJournalBusyError) as exc:
            # Redis (budget, tokens, journal) is gone, or another attempt owns the journal: every
            # row would wait and fail alike. Stop; the rows left fail retryably for Airflow's retry.
            text = describe_error(events.step, exc)
            self._stop.set()
            self.log.error("Qmatic bulk: stopping the run until a retry: %s", text)
            return RowOutcome(item.row, FAILED, item.appointment_id, text, True)
        except QmaticError as exc:
            # A retry can help only if the error says so and, for a write that reserves, the
            # row has reserves left in its budget (the journal carries it to the next attempt).
            retryable = exc.retryable and (action == "cancel" or events.reserves_left > 0)
            return RowOutcome(
                item.row, FAILED, item.appointment_id, describe_error(events.step, exc), retryable
            )
        except Exception as exc:
            self.log.exception("Qmatic bulk: row %d failed unexpectedly at %s", item.row, events.step)
            return RowOutcome(item.row, FAILED, item.appointment_id, describe_error(events.step, exc))

    # -- fields the tenant requires --------------------------------------------------------------

    def _learn_required(self, field: str, row: int) -> str:
        """Remember that the tenant refused row ``row``'s confirm for lacking ``field`` (the input's
        name: ``date_of_birth`` or ``question:<id>``; see
        :class:`~airflow_provider_qmatic.exceptions.QmaticTenantRequiresFieldError`): later rows
        without it fail before their reserve (:meth:`_lacks_required`). Returns the row's error."""
        with self._counter_lock:
            first = field not in self._required
            self._required.setdefault(field, row)
        if first:
            self.log.warning(
                "Qmatic bulk book: row %d's confirm was refused: the tenant requires %s (the reservation "
                "was released); rows without it now fail before their reserve",
                row,
                field,
            )
        return f"confirm: {_required_text(field)} (the reservation was released)"

    def _lacks_required(self, request: BookingRequest) -> str | None:
        """The error of a booking that lacks a field the tenant was seen to require, else None."""
        for field, row in list(self._required.items()):
            if field == "date_of_birth":
                lacking = request.customer.date_of_birth is None
            elif field == "question:":  # an answer Qmatic did not name: only rows with none lack it
                lacking = not request.information_questions
            else:
                question = field.partition(":")[2]
                lacking = all(a.question_id != question for a in request.information_questions)
            if lacking:
                return f"not sent: {_required_text(field)} (learnt from row {row}'s refused confirm)"
        return None

    def _cached_flows(self, multi: set[str]) -> Flows:
        """The flows over this run's client, reading the tenant's services once, each service's free
        slots (for rows without ``end_time``) once per date range, and searching each customer of
        several rows (``multi``) once (a customer's other rows are other slots). A slot's end does
        not change when others book it, so a listing read earlier in the job still gives it."""
        client = self.client
        services, searches, slots, combinations = _KeyedCache(), _KeyedCache(), _KeyedCache(), _KeyedCache()

        def search(pid: str, combination: bool) -> list[Appointment]:
            def read() -> list[Appointment]:
                return client.search_appointments(pid, scopes=BOOK_SCOPES, combination=combination)

            if pid not in multi:
                return read()
            found: list[Appointment] = searches.get(f"{pid}/{combination}", read)
            return found

        def list_combinations(branch_id: str) -> list[BranchCombinations]:
            found: list[BranchCombinations] = combinations.get(
                branch_id, lambda: client.list_service_combinations(branch_id, scopes=BOOK_SCOPES)
            )
            return found

        def list_services(branch_id: str) -> list[Service]:
            every: list[Service] = services.get("", lambda: client.list_services(scopes=BOOK_SCOPES))
            return [s for s in every if s.branch is not None and s.branch.id == branch_id]

        def find_timeslots(
            branch_id: str, service_ids: tuple[str, ...], first: date, last: date
        ) -> list[Slot]:
            found: list[Slot] = slots.get(
                f"{branch_id}/{'+'.join(service_ids)}/{first}/{last}",
                lambda: client_slots(client, branch_id, service_ids, first, last),
            )
            return found

        return Flows(
            client,
            list_services=list_services,
            search=search,
            find_timeslots=find_timeslots,
            list_combinations=list_combinations,
            sleep=self._sleep,
        )

    # -- resuming from the journal ---------------------------------------------------------------

    def _resume(self, action: str, state: JournalState) -> None:
        """Settle what a killed attempt left; learn which rows were in flight and their budgets."""
        self._state = state
        self._journal_done = dict(state.done)
        self._complete = state.complete_before(self.attempt, self._key)
        if state.entries:
            self.log.info(
                "Qmatic bulk %s: journal of an earlier attempt: %d row(s) done, %d in flight, %d "
                "reservation(s) without an outcome, %d reserve(s) without an answer (lost, or cut "
                "off by the end of the attempt: each that reached Qmatic may hold its slot until "
                "the 15-minute hold ends)%s",
                action,
                len(state.done),
                len(state.in_flight() - set(state.done)),
                len(state.open_reservations),
                sum(history.lost for history in state.rows.values()),
                "" if self._complete else "; it misses an earlier attempt, so every row is looked up",
            )
        for reservation_id, (fingerprint, row, _appointment_id) in state.open_reservations.items():
            # The journal does not say whether a row was of several services: combination=None.
            settled = self._flows.settle(
                reservation_id,
                booking=action == "book",
                events=self._events(fingerprint, row),
                combination=None,
            )
            if settled.fate == "done":
                self._journal_done[fingerprint] = settled.appointment_id
            elif settled.fate == "unknown":
                self._unresolved.add(fingerprint)
        if self._journal is not None:
            self._journal.record_attempt(self.attempt, key=self._key)

    def _needs_check(self, item: _Item) -> bool:
        """Look the row up in Qmatic first? ``always``; never with ``never``; with ``auto`` on a
        retry, only rows an earlier attempt may have done: those in flight when it ended, or every
        row when no complete journal can tell."""
        if self.skip_mode != "auto":
            return self.skip_mode == "always"
        if self.attempt <= 1:
            return False
        if self._state is None or not self._complete:
            return True
        history = self._state.rows.get(item.fingerprint)
        return history is not None and history.in_flight

    def _events(self, fingerprint: str, row: int) -> FlowEvents:
        """The flow's events for one row: its rest of the reserve budget, journaled as they happen."""
        return FlowEvents.journaled(
            self._journal,
            self._state,
            fingerprint,
            row,
            budget=self._reserve_budget,
            stopped=self._stop.is_set,
        )

    # -- one row ---------------------------------------------------------------------------------

    def _row(self, action: str, item: _Item, events: FlowEvents) -> RowOutcome:
        if self.dry_run:
            return self._plan_row(action, item, events)
        if item.fingerprint in self._journal_done:
            return RowOutcome(
                item.row, SKIPPED_EXISTING, self._journal_done[item.fingerprint] or item.appointment_id
            )
        if action == "update_customer":
            return self._update_customer(item, events)
        result: FlowResult[Any]
        if action == "cancel":
            result = self._flows.cancel(
                item.request.appointment_id, check_first=self._needs_check(item), events=events
            )
        else:
            events.step = "journal"
            if item.fingerprint in self._unresolved:
                raise QmaticServerError(
                    "a reservation an earlier attempt made for this row could not be checked (Qmatic did "
                    "not answer); the row is left for a retry rather than risk booking it twice"
                )
            if action == "book":
                lacking = self._lacks_required(item.request) if self._required else None
                if lacking:
                    return RowOutcome(item.row, FAILED, None, lacking)
                result = self._flows.book(item.request, check_existing=self._needs_check(item), events=events)
            else:
                result = self._flows.reschedule(item.request, events=events)
        return RowOutcome(item.row, SUCCEEDED if result.changed else SKIPPED_EXISTING, result.appointment_id)

    def _plan_row(self, action: str, item: _Item, events: FlowEvents) -> RowOutcome:
        """A dry run's row (see :mod:`.plan`): ``planned`` when a real run would write, else
        ``skipped_existing``; a row a real run would fail raises here as it would there."""
        if action == "update_customer":
            ids, to_update = update_booked(self._flows, item.request, events=events, dry_run=True)
            plan = customer_update_plan(ids, to_update)
        else:
            plan = self._planner.plan(action, item.request, events)
        with self._counter_lock:
            self._planned_writes += plan.writes
        status = PLANNED if plan.writes else SKIPPED_EXISTING
        return RowOutcome(item.row, status, plan.appointment_id or item.appointment_id, plan.note)

    def _update_customer(self, item: _Item, events: FlowEvents) -> RowOutcome:
        """One customer update row: every booked appointment of its personal identifier.

        Journaled as started before its search and done (with the appointment ids) after its last
        update, never in between: a PUT sets the same details again harmlessly, so a row a killed
        try left half done is run again, and a row recorded done is not. ``appointment_id`` of the
        outcome lists the ids, space-separated; a customer with no booked appointment is
        ``skipped_existing`` with a note.
        """
        events.emit(UPDATING)
        ids, changed = update_booked(self._flows, item.request, events=events)
        with self._counter_lock:
            self._updated += changed
        joined = " ".join(ids) or None
        events.emit(DONE, appointment_id=joined)
        if not ids:
            return RowOutcome(item.row, SKIPPED_EXISTING, None, "no booked appointment found")
        return RowOutcome(item.row, SUCCEEDED if changed else SKIPPED_EXISTING, joined)


def _required_text(field: str) -> str:
    """What a row lacking ``field`` must add, the same words for the refused row and the rows after."""
    if field == "date_of_birth":
        return (
            "the tenant requires the customer's date of birth; add a date_of_birth column (YYYY-MM-DD) "
            "to every row"
        )
    if field == "question:":
        return (
            "the tenant requires an answer to an information question Qmatic did not name; add a "
            "question:<questionId> column per question of the service"
        )
    question = field.partition(":")[2]
    return f"the tenant requires an answer to information question {question}; add a {field} column"


def update_booked(
    flows: Flows, details: CustomerUpdate, *, events: FlowEvents | None = None, dry_run: bool = False
) -> tuple[list[str], int]:
    """Set ``details`` on every booked appointment that a search for its personal identifier finds.

    Booked: :func:`~airflow_provider_qmatic.flows.is_booked` (found, unless a status Qmatic shows
    says otherwise), less FINALIZED ones: a visit already served is history, not rewritten. An appointment
    whose customer already shows every new detail is left alone (see
    :meth:`~airflow_provider_qmatic.flows.Flows.update_customer`). Returns the booked appointments'
    ids, in the search's order, and how many were updated. ``events.step`` names the step running.
    With ``dry_run``, nothing is sent: the count is of those the updates would change (the same
    comparison :meth:`~airflow_provider_qmatic.flows.Flows.update_customer` makes before its PUT).
    """
    from airflow_provider_qmatic.api.models import AppointmentStatus

    events = events or FlowEvents()
    events.step = "search"
    found = flows.client.search_appointments(details.personal_identifier, scopes=BOOK_SCOPES)
    booked = [a for a in found if is_booked(a) and a.status_enum is not AppointmentStatus.FINALIZED]
    changed = 0
    for appointment in booked:
        if dry_run:
            changed += not customer_matches(appointment, details, identifier_known=True)
            continue
        events.step = "update_customer"
        result = flows.update_customer(
            appointment.appointment_id,
            details,
            current=appointment,
            found_by_identifier=True,
            events=FlowEvents(stopped=events.stopped),
        )
        changed += result.changed
    return [a.appointment_id for a in booked], changed


def _nest_booking(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flat row fields -> the nested shape BookingRequest.parse reads: customer fields grouped, and
    ``question:<id>`` columns added to ``information_questions`` (see :mod:`.bulk_io`)."""
    nested: dict[str, Any] = {}
    customer: dict[str, Any] = {}
    answers: list[dict[str, Any]] = []
    for key, value in flat.items():
        if key in CUSTOMER_FIELDS:
            customer[key] = value
        elif key.startswith(QUESTION_PREFIX):
            answers.append({"question_id": key[len(QUESTION_PREFIX) :], "answer": value})
        else:
            nested[key] = value
    nested["customer"] = customer
    if answers:
        given = nested.get("information_questions", [])
        if isinstance(given, Mapping):
            given = [{"question_id": k, "answer": v} for k, v in given.items()]
        if isinstance(given, list):
            named = {str(a.get("question_id", a.get("questionId"))) for a in given if isinstance(a, Mapping)}
            twice = sorted(named.intersection(a["question_id"] for a in answers))
            if twice:
                raise QmaticValidationError(
                    f"information_questions: question {twice[0]} is answered both in information_questions "
                    f"and in the column {QUESTION_PREFIX}{twice[0]}; keep one",
                    field="information_questions",
                )
            nested["information_questions"] = given + answers
    return nested
