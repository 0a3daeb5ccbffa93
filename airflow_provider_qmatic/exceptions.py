"""The provider's errors: one small hierarchy, so callers can catch by meaning, not by HTTP status.

Every error carries what a human needs to act (the HTTP status, Qmatic's error code and message,
the field at fault) and nothing that must stay secret: messages are built from values the
provider chose or the server returned, never from credentials or tokens.

``retryable`` is the one meaning of "retryable" for a task: whether running the task (or the bulk
row) again later can succeed. Operators turn a non-retryable error into a failed task without
Airflow retries; a retryable one propagates so that Airflow's own ``retries`` apply. Whether one
HTTP request may be repeated at once is a different question, answered by
:func:`airflow_provider_qmatic.client.retry.is_retryable` alone.

Every exception class of the provider lives here (the sandbox, a separate program, has its own).
"""

from __future__ import annotations


class QmaticError(Exception):
    """Base of every error raised by this provider.

    ``after_unclear_attempt`` is True when the client's own earlier attempt of the same call was
    sent and got no clear answer: a 409 or a 404 may then answer that attempt's effect (Part B: "a
    client that retried its own cancel treats either as done"). On an error of a call whose last
    attempt never left (:class:`QmaticNotSentError`, a failed token request) it says whether an
    earlier attempt did, so whether the call may have taken effect. The client sets it on those and
    on 404 and 409.
    """

    after_unclear_attempt: bool = False

    @property
    def retryable(self) -> bool:
        """Whether the task (or bulk row) may succeed when run again later; see the module docstring."""
        return False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        field: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.field = field
        self.retry_after = retry_after

    def __str__(self) -> str:
        detail = ", ".join(
            f"{n}={v}" for n, v in (("status", self.status), ("code", self.code)) if v is not None
        )
        return f"{self.message} ({detail})" if detail else self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r}, code={self.code!r})"


class QmaticConfigError(QmaticError, ValueError):
    """The connection or an operator argument is missing or wrong; raised before any request."""


class QmaticValidationError(QmaticError, ValueError):
    """A request would break Qmatic's field rules (found locally), or Qmatic answered 400."""


class QmaticTenantRequiresFieldError(QmaticValidationError):
    """A confirm was refused (400) for a field the tenant's configuration requires and the request
    lacked: the date of birth or an information question's answer. The reservation was released.

    ``field`` is the input's name for it, which is also the CSV / JSON Lines column to add:
    ``date_of_birth``, or ``question:<questionId>`` for an answer (``question:`` alone when Qmatic's
    message named no question id). Every later booking of this tenant without the field will be
    refused the same way, so a bulk job can fail such rows before reserving them.
    """

    @property
    def question_id(self) -> str | None:
        """The information question's id, for an answer Qmatic named; else None."""
        if self.field and self.field.startswith("question:"):
            return self.field.partition(":")[2] or None
        return None


class QmaticAuthError(QmaticError):
    """401: credentials rejected, or a fresh token was refused too."""


class QmaticForbiddenError(QmaticError):
    """403: the token lacks the scope, or the system id is not this client's tenant."""


class QmaticNotFoundError(QmaticError):
    """404: the branch, service or appointment does not exist for this tenant."""


class QmaticConflictError(QmaticError):
    """409: slot full, reservation expired or used, or the appointment's state forbids the change.

    Retryable only when the reservation expired: running again reserves a new hold. A full slot or
    an appointment in the wrong state stays so when the same task runs again.
    """

    @property
    def retryable(self) -> bool:
        return self.code == "reservation_expired"


class QmaticOwnHoldsError(QmaticConflictError):
    """409 slot full after reserves of the same booking lost their answers: the slot may be full of
    its own holds, which expire after Qmatic's 15 minutes, so trying again later can succeed."""

    retryable = True


class QmaticRateLimitError(QmaticError):
    """429 after the client's own waiting ran out; trying later is safe."""

    retryable = True


class QmaticServerError(QmaticError):
    """5xx, a gateway fault, or the connection failed; the request may be repeated later."""

    retryable = True


class QmaticUnknownOutcomeError(QmaticServerError):
    """A write (POST) failed in a way that leaves its outcome unknown: it may have happened.

    Never repeat the write blindly: read first (get or search) to learn whether it took effect.
    """


class QmaticNotSentError(QmaticServerError):
    """The request never reached Qmatic (connection refused, name lookup, connect timeout).

    Nothing can have happened, so even a write may be repeated.
    """


class QmaticCoordinationError(QmaticNotSentError):
    """The state shared through Redis (token cache, request budget, bulk journal) could not be used.

    Raised before a request leaves, so nothing reached Qmatic; repeating later, once Redis is back,
    is safe. Never a silent fallback to host-local state, which would overshoot the tenant's limit.
    """


class QmaticPayloadTooLargeError(QmaticError):
    """413: the request body is over Qmatic's 2 MB limit."""


class QmaticRedirectError(QmaticError):
    """3xx: the server pointed elsewhere. Never followed, since the request carries credentials,
    the tenant's system id and customers' data; usually a wrong ``base_url`` or a misconfigured
    gateway, so repeating the request cannot help."""


class QmaticBulkError(QmaticError):
    """A bulk job broke its failure policy with failures a retry cannot fix (4xx, invalid rows)."""


class QmaticBulkRetryableError(QmaticBulkError):
    """A bulk job broke its failure policy, but only because of failures a retry may fix (5xx,
    429, timeouts). Retrying the task is safe: ``skip_existing=auto`` skips the rows already done."""

    retryable = True


class QmaticJournalBusyError(QmaticError):
    """Another attempt of the same task instance holds the journal on this host: try again later."""

    retryable = True


class QmaticJournalSupersededError(QmaticJournalBusyError):
    """This attempt lost its journal to a newer attempt of the task (its lease ran out while it was
    stalled, or Redis lost it): it stops, and writes nothing more, neither journal lines nor a
    results file, so the newer attempt's record stands. Retryable: where no newer attempt runs
    (Redis restarted empty), Airflow's retry finishes the job."""


class AnswerTooLarge(OSError):
    """An answer (status line, headers and body, or the body decoded) longer than the transport's
    cap, cut off; raised inside ``requests`` and read back by ``transport.answer_too_large``."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer is longer than {limit // (1024 * 1024)} MiB")


class TokenRequestFailed(Exception):
    """Carries a token error past the API call's retry loop, which must not repeat it: the token
    provider has already waited and retried as the token endpoint allows. Never escapes the client."""

    def __init__(self, error: QmaticError) -> None:
        super().__init__(error.message)
        self.error = error


# The status each class stands for; the client maps responses through this table alone.
ERROR_BY_STATUS: dict[int, type[QmaticError]] = {
    400: QmaticValidationError,
    401: QmaticAuthError,
    403: QmaticForbiddenError,
    404: QmaticNotFoundError,
    409: QmaticConflictError,
    413: QmaticPayloadTooLargeError,
    429: QmaticRateLimitError,
}


def error_for_status(status: int) -> type[QmaticError]:
    """The error class for an HTTP status: the table above, server errors for 5xx, redirects for
    3xx, else the base."""
    if status in ERROR_BY_STATUS:
        return ERROR_BY_STATUS[status]
    if status >= 500 or status == 408:
        return QmaticServerError
    if 300 <= status < 400:
        return QmaticRedirectError
    return QmaticError


class QmaticCoordinationTimeout(QmaticCoordinationError):
    """Redis did not answer within a command's deadline: frozen, partitioned, or trickling its answer.

    Unlike a refused connection (a Redis restarting), this is not repeated by the client's own
    retries, each of which would wait the whole deadline again; the task fails at once, retryably.
    """
