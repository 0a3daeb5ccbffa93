"""What may be repeated, and how long to wait first: the provider's one retry policy.

The rules come from the API contract. 429 and 503 mean "not processed", so any request may be
repeated after waiting. Other server faults and broken connections leave a write's outcome
unknown: only idempotent operations (reads, PUT, DELETE, and a confirm of one reservation) are
repeated; a POST that creates something is handed back to the caller as
:class:`~airflow_provider_qmatic.exceptions.QmaticUnknownOutcomeError`, to be resolved by reading.

A Redis that refused the connection (:class:`~airflow_provider_qmatic.exceptions.QmaticCoordinationError`:
restarting, say) is repeated like any request never sent: each attempt fails at once, and the
backoff bridges a restart. A Redis that did not answer within a command's deadline
(:class:`~airflow_provider_qmatic.exceptions.QmaticCoordinationTimeout`: frozen, partitioned, or
trickling) is not: every attempt would wait the whole deadline again (six attempts of a frozen
Redis took minutes), so the task fails at once, retryably, and Airflow's retry comes back later.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Callable

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from airflow_provider_qmatic.exceptions import (
    QmaticCoordinationTimeout,
    QmaticError,
    QmaticNotSentError,
    QmaticRateLimitError,
    QmaticServerError,
    QmaticUnknownOutcomeError,
)

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 120.0
NOT_PROCESSED_STATUSES = frozenset({429, 503})


def is_retryable(exc: BaseException, *, idempotent: bool) -> bool:
    """The single predicate every retry loop in the provider asks."""
    if isinstance(exc, (QmaticUnknownOutcomeError, QmaticCoordinationTimeout)):
        return False
    if isinstance(exc, (QmaticRateLimitError, QmaticNotSentError)):
        return True
    if isinstance(exc, QmaticServerError):
        return exc.status in NOT_PROCESSED_STATUSES or idempotent
    return False


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP-date; None if absent.

    A value that is not a wait (NaN, infinite, negative) counts as absent, so the backoff applies:
    NaN would otherwise reach ``time.sleep`` and crash the retry loop. A date in the past is 0.
    """
    text = (value or "").strip()
    if not text:
        return None
    try:
        seconds = float(text)
        if not math.isfinite(seconds) or seconds < 0:
            return None
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


def backoff_delay(attempt: int, *, base: float = BACKOFF_BASE_S, cap: float = BACKOFF_CAP_S) -> float:
    """Exponential backoff with full jitter (attempt counts from 1), so parallel clients spread out."""
    return random.uniform(0, min(cap, base * (2 ** (attempt - 1))))


def delay_before_retry(exc: BaseException | None, attempt: int, *, minimum: float = 0.0) -> float:
    """How long to sleep before the next attempt: the server's Retry-After if it gave one."""
    retry_after = exc.retry_after if isinstance(exc, QmaticError) else None
    return max(backoff_delay(attempt) if retry_after is None else float(retry_after), minimum)


def retrying(
    *,
    what: str,
    idempotent: bool,
    attempts: int,
    sleep: Callable[[float], None] = time.sleep,
    minimum_wait: float = 0.0,
) -> Retrying:
    """The tenacity loop every retrying call runs in: :func:`is_retryable` decides,
    :func:`delay_before_retry` waits (the server's Retry-After first), and each retry is logged with
    the error's message, which never holds a secret. The last error is re-raised as it is.
    """

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return delay_before_retry(exc, state.attempt_number, minimum=minimum_wait)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        log.info(
            "Qmatic %s: %s; retrying in %.1f s (attempt %d of %d)",
            what,
            exc.message if isinstance(exc, QmaticError) else type(exc).__name__,
            delay,
            state.attempt_number + 1,
            attempts,
        )

    return Retrying(
        retry=retry_if_exception(lambda exc: is_retryable(exc, idempotent=idempotent)),
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
