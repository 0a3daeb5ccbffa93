"""Turning an HTTP response into data or into the right QmaticError.

Gateways in front of Qmatic answer with empty bodies and HTML pages as often as with Qmatic's
``{"error", "message"}`` JSON, so every reader here copes with all three. Messages quote Qmatic's
own ``message`` (which names the failing field), always through the
:class:`~airflow_provider_qmatic.redaction.Redactor`, which drops credentials, runs of secrets and
the personal data of the request being answered. A redirect is reported by status and host only.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import requests

from airflow_provider_qmatic.client.retry import NOT_PROCESSED_STATUSES, parse_retry_after
from airflow_provider_qmatic.exceptions import (
    QmaticError,
    QmaticRedirectError,
    QmaticServerError,
    QmaticUnknownOutcomeError,
    error_for_status,
)
from airflow_provider_qmatic.redaction import Redactor, personal_values

_MAX_QUOTED_MESSAGE = 300
_NOT_A_NAME = re.compile(r"[^A-Za-z0-9.+/:\[\]-]")


def describe_body(response: requests.Response) -> str:
    """A short description of a body that is not the JSON we expected, without quoting it."""
    content_type = response.headers.get("Content-Type", "no content type").split(";")[0].strip()
    # The media type is server text too: only name characters, and not much of them.
    content_type = _NOT_A_NAME.sub("", content_type)[:60] or "unnamed"
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
    redact: Redactor | None = None,
) -> QmaticError:
    """The exception for a non-success response.

    A 5xx (other than 503) to a non-idempotent request becomes QmaticUnknownOutcomeError: the write
    may have happened, and the caller must read before repeating it. A 3xx is a
    QmaticRedirectError naming only the status and the Location's host. Server text is quoted
    through ``redact`` (the client's, which knows its secrets and tokens), together with the
    personal values of the request that was answered, since a gateway may echo either back.
    """
    redact = redact or Redactor()
    status = response.status_code
    if 300 <= status < 400:
        return _redirect_error(response, operation=operation, idempotent=idempotent, redact=redact)
    personal = personal_values(response.request.body if response.request is not None else None)

    def quoted(raw: Any) -> str | None:
        if raw is None:
            return None
        # Cut before redacting (a megabyte of text costs time) and again after (masks change lengths).
        return redact(str(raw)[: 4 * _MAX_QUOTED_MESSAGE], personal)[:_MAX_QUOTED_MESSAGE]

    try:
        payload = response.json()
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        payload = {}
    code = quoted(payload.get("error"))
    message = quoted(payload.get("message") or payload.get("error_description"))
    text = f"Qmatic refused {operation} with HTTP {status}"
    text += f": {message}" if message else f" and {describe_body(response)}"
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    cls = error_for_status(status)
    if issubclass(cls, QmaticServerError) and not idempotent and status not in NOT_PROCESSED_STATUSES:
        cls = QmaticUnknownOutcomeError
        text += "; the request may or may not have taken effect"
    return cls(text, status=status, code=code, retry_after=retry_after)


def _redirect_error(
    response: requests.Response, *, operation: str, idempotent: bool, redact: Redactor
) -> QmaticRedirectError:
    """A 3xx, by status and the host it points to: the rest of the Location (a path, a query that
    may echo a token) is never quoted, and nothing is sent there."""
    location = response.headers.get("Location", "")
    try:
        host = urlsplit(location.strip()).hostname
    except ValueError:
        host = None
    if not location.strip():
        where = "without a Location"
    elif host:
        where = f"to host {redact(_NOT_A_NAME.sub('', host)[:100])!r}"
    else:
        where = "to another path of the same host"
    text = (
        f"Qmatic answered {operation} with HTTP {response.status_code}, a redirect {where}. The provider "
        "never follows redirects (the request carries credentials and the tenant's data), so nothing "
        "was sent there: check the connection's base_url or region"
    )
    if not idempotent:
        text += "; the request may or may not have taken effect"
    return QmaticRedirectError(text, status=response.status_code)
