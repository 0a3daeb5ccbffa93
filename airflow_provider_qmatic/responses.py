"""Turning an HTTP response into data or into the right QmaticError.

Gateways in front of Qmatic answer with empty bodies and HTML pages as often as with Qmatic's
``{"error", "message"}`` JSON, so every reader here copes with all three. Messages quote Qmatic's
own ``message`` (which names the failing field) but never a request header or a token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

from airflow_provider_qmatic.exceptions import (
    QmaticError,
    QmaticServerError,
    QmaticUnknownOutcomeError,
    error_for_status,
)
from airflow_provider_qmatic.retry import NOT_PROCESSED_STATUSES, parse_retry_after

_MAX_QUOTED_MESSAGE = 300


def describe_body(response: requests.Response) -> str:
    """A short description of a body that is not the JSON we expected, without quoting it."""
    content_type = response.headers.get("Content-Type", "no content type").split(";")[0].strip()
    size = len(response.content or b"")
    return "an empty body" if size == 0 else f"a {content_type} body of {size} bytes"


def json_body(response: requests.Response, *, operation: str) -> Any:
    """The decoded JSON of a success response, or a QmaticServerError that says what came instead."""
    try:
        return response.json()
    except ValueError:
        raise QmaticServerError(
            f"Qmatic answered {operation} with HTTP {response.status_code} and {describe_body(response)} "
            "instead of JSON",
            status=response.status_code,
        ) from None


def error_from_response(
    response: requests.Response,
    *,
    operation: str,
    idempotent: bool,
    redact: Callable[[str], str] | None = None,
) -> QmaticError:
    """The exception for a non-success response.

    A 5xx (other than 503) to a non-idempotent request becomes QmaticUnknownOutcomeError: the write
    may have happened, and the caller must read before repeating it. Server text is quoted through
    ``redact``, since a gateway may echo the request's Authorization header back.
    """
    status = response.status_code
    code: str | None = None
    message: str | None = None
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        raw_code = payload.get("error")
        raw_message = payload.get("message") or payload.get("error_description")
        code = str(raw_code) if raw_code is not None else None
        message = str(raw_message) if raw_message is not None else None
        if message is not None:
            message = (redact(message) if redact else message)[:_MAX_QUOTED_MESSAGE]
        if code is not None and redact:
            code = redact(code)[:_MAX_QUOTED_MESSAGE]
    text = f"Qmatic refused {operation} with HTTP {status}"
    text += f": {message}" if message else f" and {describe_body(response)}"
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    cls = error_for_status(status)
    if issubclass(cls, QmaticServerError) and not idempotent and status not in NOT_PROCESSED_STATUSES:
        cls = QmaticUnknownOutcomeError
        text += "; the request may or may not have taken effect"
    return cls(text, status=status, code=code, retry_after=retry_after)
