"""The one meaning of "retryable" for a task, carried by the exception itself."""

from __future__ import annotations

import pickle

import pytest

from airflow_provider_qmatic.exceptions import (
    QmaticAuthError,
    QmaticBulkError,
    QmaticBulkRetryableError,
    QmaticConfigError,
    QmaticConflictError,
    QmaticError,
    QmaticForbiddenError,
    QmaticJournalBusyError,
    QmaticNotFoundError,
    QmaticNotSentError,
    QmaticPayloadTooLargeError,
    QmaticRateLimitError,
    QmaticServerError,
    QmaticUnknownOutcomeError,
    QmaticValidationError,
)


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (QmaticRateLimitError("slow down", status=429), True),
        (QmaticServerError("bad gateway", status=502), True),
        (QmaticUnknownOutcomeError("no answer"), True),  # the next run reads before repeating
        (QmaticNotSentError("refused"), True),
        (QmaticJournalBusyError("busy"), True),
        (QmaticBulkRetryableError("policy"), True),
        # A new run reserves a new hold, so an expired one is worth a retry...
        (QmaticConflictError("expired", status=409, code="reservation_expired"), True),
        # ...but a full slot or a wrong state is the same on the next run.
        (QmaticConflictError("full", status=409, code="slot_unavailable"), False),
        (QmaticConflictError("state", status=409, code="invalid_state"), False),
        (QmaticConflictError("no code", status=409), False),
        (QmaticBulkError("policy"), False),
        (QmaticConfigError("bad", field="tenant"), False),
        (QmaticValidationError("bad", status=400), False),
        (QmaticAuthError("who", status=401), False),
        (QmaticForbiddenError("scope", status=403), False),
        (QmaticNotFoundError("gone", status=404), False),
        (QmaticPayloadTooLargeError("big", status=413), False),
        (QmaticError("other"), False),
    ],
)
def test_retryable_for_a_task(error: QmaticError, retryable: bool) -> None:
    assert error.retryable is retryable
    # The meaning survives the pickling Airflow and multiprocessing use between processes.
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert copy.retryable is retryable
    assert (copy.code, copy.status) == (error.code, error.status)
