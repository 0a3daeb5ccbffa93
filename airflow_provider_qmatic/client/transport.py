"""The HTTP transport under every request: bounded in time, never redirected.

``requests`` and ``urllib3`` apply a read timeout to each socket read, so a server (or a gateway)
that drips one byte every half second holds a call for as long as it likes. Here the read timeout
of a request is a deadline for the whole answer instead: the connection's response class reads
through :class:`_DeadlineReader`, which gives each socket read only the time left, so the status
line, the headers and the body together get at most the read timeout. Passing ``total`` to
``urllib3``'s :class:`~urllib3.util.Timeout` makes the connect phase draw from the same budget, so
one attempt lasts at most ``timeout`` seconds from start to last byte (name resolution aside,
which no socket timeout covers).

An answer is read up to :data:`MAX_ANSWER_BYTES` and then cut off
(:class:`~airflow_provider_qmatic.exceptions.AnswerTooLarge`), so a broken or hostile server cannot
fill a worker's memory either. The cap holds twice: on the bytes
received (status line, headers, body as sent) and on the body as *decoded*. A ``Content-Encoding:
gzip`` or ``deflate`` answer of a few MiB may inflate to gigabytes; ``urllib3`` inflates it a read
at a time, and :class:`DeadlineAdapter` counts what each read yields and stops at the cap, so an
answer is never inflated past :data:`MAX_ANSWER_BYTES`. Either way the caller sees the same
"cut off" error (:func:`answer_too_large`): a read is retried, a write's answer is lost.

Redirects are never followed: :func:`send` passes ``allow_redirects=False``, and the session
:func:`prepare_session` prepares has no redirect target for any answer, so even a call through it
that forgets the flag sends no credentials, system id or customer data to another host.
A 3xx answer becomes an error in :mod:`~airflow_provider_qmatic.client.responses`.
"""

from __future__ import annotations

import http.client
import io
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests
import requests.auth
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ProtocolError
from urllib3.response import BaseHTTPResponse
from urllib3.util import Timeout

from airflow_provider_qmatic.exceptions import AnswerTooLarge, QmaticConfigError

# Far above any answer of the API (two weeks of a branch's time slots are about 100 KB).
MAX_ANSWER_BYTES = 16 * 1024 * 1024


def answer_too_large(exc: BaseException) -> bool:
    """True if ``exc`` (as ``requests`` wraps it) was raised because the answer was cut off."""
    if isinstance(exc, AnswerTooLarge):
        return True
    linked = [*exc.args, exc.__cause__, exc.__context__]
    return any(answer_too_large(e) for e in linked if isinstance(e, BaseException))


def failure_kind(exc: BaseException) -> str:
    """How a request that got no usable answer failed, for an error message: the cut-off answer
    by name, any other failure by its type (whose text may quote the URL or a header)."""
    if answer_too_large(exc):
        return f"the answer was cut off at {MAX_ANSWER_BYTES // (1024 * 1024)} MiB"
    return type(exc).__name__


class _DeadlineReader(io.RawIOBase):
    """A socket reader that gives each read only the time left before a fixed deadline, and stops
    at :data:`MAX_ANSWER_BYTES`."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        # A socket file of its own keeps the socket's reference count right: the connection may
        # close its socket object while the answer is still being read (``Connection: close``).
        self._raw = sock.makefile("rb", buffering=0)
        self._deadline = deadline
        self._read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the answer took longer than the timeout")
        self._sock.settimeout(left)
        count = self._raw.readinto(buffer)
        self._read += count or 0
        if self._read > MAX_ANSWER_BYTES:
            raise AnswerTooLarge(MAX_ANSWER_BYTES)
        return count

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    """``http.client``'s response, reading through a deadline of the socket's current timeout.

    ``urllib3`` sets the socket's timeout to the request's read timeout (what is left of
    ``total`` after connecting) just before the answer is read, so that is the deadline.
    """

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        budget = sock.gettimeout()
        if budget is not None:
            plain = self.fp
            self.fp = io.BufferedReader(_DeadlineReader(sock, time.monotonic() + budget))
            plain.close()


def _deadline_pool(pool: type[HTTPConnectionPool], connection: type[HTTPConnection]) -> type[Any]:
    """``pool`` whose connections read their answers through :class:`_DeadlineResponse`."""
    reading = type(f"_Deadline{connection.__name__}", (connection,), {"response_class": _DeadlineResponse})
    return type(f"_Deadline{pool.__name__}", (pool,), {"ConnectionCls": reading})


_POOLS = {
    "http": _deadline_pool(HTTPConnectionPool, HTTPConnection),
    "https": _deadline_pool(HTTPSConnectionPool, HTTPSConnection),
}


def _capped_stream(stream: Callable[..., Iterator[bytes]]) -> Callable[..., Iterator[bytes]]:
    """``urllib3``'s ``stream`` (what ``requests`` reads a body through), stopping once the bytes it
    yields, decoded, pass :data:`MAX_ANSWER_BYTES`.

    ``urllib3`` inflates at most about one read's worth per call, so stopping here bounds the
    memory an answer can take whatever its compression ratio. The error is urllib3's
    ``ProtocolError``, which ``requests`` turns into its own ``ChunkedEncodingError``: every caller
    already handles that as an answer that broke off.
    """

    def capped(amt: int | None = 2**16, decode_content: bool | None = None) -> Iterator[bytes]:
        decoded = 0
        for chunk in stream(amt, decode_content):
            decoded += len(chunk)
            if decoded > MAX_ANSWER_BYTES:
                raise ProtocolError("the decoded answer is too long", AnswerTooLarge(MAX_ANSWER_BYTES))
            yield chunk

    return capped


class DeadlineAdapter(HTTPAdapter):
    """A ``requests`` adapter whose read timeout bounds the whole answer, not each socket read, and
    whose answers are cut off at :data:`MAX_ANSWER_BYTES` received or decoded."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def build_response(self, req: requests.PreparedRequest, resp: BaseHTTPResponse) -> requests.Response:
        resp.stream = _capped_stream(resp.stream)  # type: ignore[method-assign]
        return super().build_response(req, resp)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if not proxy.lower().startswith("socks"):  # SOCKS pools carry their own connection class
            manager.pool_classes_by_scheme = dict(_POOLS)
        return manager


class _OwnAuthorization(requests.auth.AuthBase):
    """Leaves the Authorization header as the client wrote it (Bearer token, or Basic for tokens)."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request


def prepare_session(session: requests.Session, *, pool_size: int) -> None:
    """Mount the deadline adapter for both schemes, make following a redirect impossible, and keep
    other credentials out.

    ``requests`` follows a redirect wherever :meth:`~requests.Session.get_redirect_target` names
    one; this session never names one, whatever ``allow_redirects`` or ``max_redirects`` a caller
    sets, so a 3xx always comes back as the answer. (``max_redirects = 0`` cannot do this: it
    also fails the calls that do not follow.)

    ``requests`` applies a session's ``auth``, or with ``trust_env`` the ``~/.netrc`` entry for the
    host, after the headers, replacing the client's Authorization header. An ``auth`` that changes
    nothing stops both: the header sent is always the client's.
    """
    adapter = DeadlineAdapter(pool_connections=2, pool_maxsize=pool_size)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    session.get_redirect_target = lambda response: None  # type: ignore[method-assign,assignment]
    session.auth = _OwnAuthorization()


def send(
    session: requests.Session,
    method: str,
    url: str,
    *,
    what: str,
    timeout: tuple[float, float],
    **kwargs: Any,
) -> requests.Response:
    """One request, not redirected; ``timeout`` is ``(connect, total)``: at most ``connect``
    seconds to connect and ``total`` from the start of connecting to the last byte.

    Errors ``requests`` raises while *building* the request (a header or URL that HTTP cannot
    carry: ``InvalidHeader``, ``InvalidURL``, ``UnicodeEncodeError``, an unencodable JSON body)
    become a :class:`QmaticConfigError` naming only the error's type: their own text may quote the
    header (a token, the Basic value). Network errors propagate for the caller to classify.
    """
    connect, total = timeout
    try:
        return session.request(
            method,
            url,
            allow_redirects=False,
            # requests passes a urllib3 Timeout through to the adapter, though its stubs omit it.
            timeout=Timeout(connect=connect, read=total, total=total),  # type: ignore[arg-type]
            **kwargs,
        )
    except (ValueError, TypeError, requests.exceptions.InvalidJSONError) as exc:
        # InvalidHeader, InvalidURL, MissingSchema and UnicodeError are all ValueErrors.
        raise QmaticConfigError(
            f"Qmatic {what} could not be sent: a value of the connection or the arguments cannot go "
            f"into an HTTP request ({type(exc).__name__}); nothing was sent"
        ) from None
