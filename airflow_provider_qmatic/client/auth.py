"""OAuth2 client-credentials tokens, requested exactly as Qmatic documents and cached per scope set.

The documented request (``seeds/qmatic-oauth2.txt``): ``POST {base}/oauth2/token`` with
``Authorization: Basic base64(client_id:client_secret)`` on one line, ``X-ACCOUNT: <tenant>``, and
the form ``grant_type=client_credentials&scope=<scopes joined by single spaces>``. There is no
refresh token: a new token is requested shortly before the old one runs out.

Tokens are kept in two layers: a dict in this object (no I/O on the hot path) in front of a
:class:`~airflow_provider_qmatic.state.tokens.TokenCache`, which may be shared by every task
process on the host so that they make one token request between them.
"""

from __future__ import annotations

import base64
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import requests

from airflow_provider_qmatic import state
from airflow_provider_qmatic.api import contract
from airflow_provider_qmatic.api.contract import Scope, scope_string
from airflow_provider_qmatic.client import transport
from airflow_provider_qmatic.client.responses import describe_body, error_from_response, json_body
from airflow_provider_qmatic.client.retry import retrying
from airflow_provider_qmatic.exceptions import (
    QmaticAuthError,
    QmaticForbiddenError,
    QmaticServerError,
)
from airflow_provider_qmatic.redaction import Redactor
from airflow_provider_qmatic.state.tokens import CachedToken, TokenCache, make_cache_key

if TYPE_CHECKING:
    from airflow_provider_qmatic.config import ClientConfig
    from airflow_provider_qmatic.state.budget import RateLimiter

SecretSink = Callable[[str], None]

# Reuse a token until this long before it runs out (5 minutes, or half its life if it is short,
# as the sandbox's test tokens are).
REFRESH_MARGIN_S = 300.0
# Qmatic allows one token request per second; a little margin keeps two requests in a row from
# landing inside one second at the server (spaced as state.token_spacing says).
TOKEN_ENDPOINT_INTERVAL_S = 1.1
TOKEN_ATTEMPTS = 6
# Qmatic's tokens live 60 minutes. A longer lifetime is believed up to a day, never more: a
# poisoned or buggy answer must not pin a token in the shared cache for weeks.
MAX_TOKEN_LIFETIME_S = 24 * 3600.0
# RFC 6750 b64token: what an ``Authorization: Bearer`` header can carry, and nothing else (no
# space, no CR/LF, no non-ASCII), so a token cannot add a header or break the request.
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def basic_credentials(client_id: str, client_secret: str) -> str:
    """``base64(id:secret)`` as one line: Qmatic's page warns about the newline ``base64`` inserts."""
    raw = f"{client_id}:{client_secret}".encode()
    return base64.b64encode(raw).decode("ascii")


def _lifetime(value: object) -> float:
    """``expires_in`` as seconds to cache for: a finite positive number (JSON number or numeric
    text), capped at :data:`MAX_TOKEN_LIFETIME_S`; anything else is a QmaticAuthError."""
    fix = "the token was not used or cached; a gateway may be rewriting the answer"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise QmaticAuthError(f"the token response has an expires_in that is not a number; {fix}")
    try:
        seconds = float(value)
    except (ValueError, OverflowError):
        raise QmaticAuthError(f"the token response has a non-numeric expires_in; {fix}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise QmaticAuthError(f"the token response has an expires_in that is not a positive number; {fix}")
    return min(seconds, MAX_TOKEN_LIFETIME_S)


class TokenProvider:
    """Hands out a valid bearer token for a set of scopes, fetching one only when needed."""

    def __init__(
        self,
        config: ClientConfig,
        session: requests.Session,
        *,
        cache: TokenCache,
        limiter: RateLimiter | None = None,
        on_secret: SecretSink | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._config = config
        self._session = session
        self._cache = cache
        self._limiter = limiter
        self._on_secret = on_secret or (lambda _value: None)
        self._clock = clock
        self._sleep = sleep
        self._local: dict[frozenset[Scope], CachedToken] = {}
        self._spacing = state.token_spacing(config, TOKEN_ENDPOINT_INTERVAL_S)
        self.token_requests = 0
        self.last_expires_in: float | None = None
        self._basic = basic_credentials(config.client_id, config.client_secret)
        # Every piece of server text is quoted through this: it knows the secret, the Basic value
        # and each token seen, and drops runs and encodings of them (see redaction.py).
        self.redact = Redactor([config.client_secret, self._basic])
        # Masked where they are born: the secret and the header value that encodes it.
        self._on_secret(config.client_secret)
        self._on_secret(self._basic)

    def __repr__(self) -> str:
        return f"TokenProvider(tenant={self._config.tenant!r}, base_url={self._config.base_url!r})"

    def token(self, scopes: frozenset[Scope]) -> str:
        """A bearer token carrying exactly ``scopes``."""
        cached = self._local.get(scopes)
        if cached is not None and cached.expires_at > self._clock():
            return cached.access_token
        key = self._cache_key(scopes)
        for _ in range(2):
            fresh, _fetched = self._cache.get_or_fetch(key, lambda: self._fetch(scopes), min_ttl=0.0)
            if self._sendable(fresh):
                break
            # Planted or corrupted in the shared cache (a fetch never yields one): drop it there,
            # and fetch a real one.
            self._cache.invalidate(key, fresh.access_token)
        else:
            raise QmaticAuthError(
                "the shared token cache keeps holding a token that cannot be sent; it was dropped. "
                "Check who can write the token cache directory, or set credential_cache to memory"
            )
        self._on_secret(fresh.access_token)
        self.redact.add(fresh.access_token)
        self._local[scopes] = fresh
        return fresh.access_token

    def _sendable(self, cached: CachedToken) -> bool:
        """A token from a cache is used only if a fetch could have produced it: token characters,
        and an expiry no later than the longest lifetime this provider believes."""
        return bool(_TOKEN_CHARS.fullmatch(cached.access_token)) and (
            cached.expires_at <= self._clock() + MAX_TOKEN_LIFETIME_S
        )

    def probe(self, scopes: frozenset[Scope]) -> float:
        """Request a new token now, bypassing every cache; its lifetime in seconds.

        For connection tests, which must prove the credentials work today, not an hour ago.
        """
        fresh = self._fetch(scopes)
        self._local[scopes] = fresh
        return self.last_expires_in or 0.0

    def invalidate(self, scopes: frozenset[Scope], access_token: str) -> None:
        """Forget a token the API refused (401), here and in the shared cache."""
        cached = self._local.get(scopes)
        if cached is not None and cached.access_token == access_token:
            del self._local[scopes]
        self._cache.invalidate(self._cache_key(scopes), access_token)

    def _cache_key(self, scopes: frozenset[Scope]) -> str:
        return make_cache_key(
            base_url=self._config.base_url,
            tenant=self._config.tenant,
            client_id=self._config.client_id,
            scopes=scope_string(scopes),
            secret_fingerprint=self._config.secret_fingerprint,
        )

    def _fetch(self, scopes: frozenset[Scope]) -> CachedToken:
        """POST the token request, waiting and repeating on 429 and transient faults (bounded).

        Asking for a token twice is harmless, so every failure that may pass is retried here.
        """
        # Even without Retry-After, the token endpoint's limit is one request a second.
        for attempt in retrying(
            what="token request",
            idempotent=True,
            attempts=TOKEN_ATTEMPTS,
            sleep=self._sleep,
            minimum_wait=TOKEN_ENDPOINT_INTERVAL_S,
        ):
            with attempt:
                return self._request_token(scopes)
        raise AssertionError("unreachable: tenacity returns or re-raises")  # pragma: no cover

    def _request_token(self, scopes: frozenset[Scope]) -> CachedToken:
        self._spacing.wait(self._sleep)
        if self._limiter is not None:
            self._limiter.acquire()
        config = self._config
        url = config.base_url + contract.TOKEN.path
        try:
            response = transport.send(
                self._session,
                "POST",
                url,
                what="token request",
                timeout=config.timeout,
                headers={
                    "Authorization": f"Basic {self._basic}",
                    "X-ACCOUNT": config.tenant,
                    "Content-Type": "application/x-www-form-urlencoded",
                    "Accept": "application/json",
                },
                data={"grant_type": "client_credentials", "scope": scope_string(scopes)},
            )
        except requests.RequestException as exc:
            raise QmaticServerError(
                f"could not reach the Qmatic token endpoint at {url}: {transport.failure_kind(exc)}"
            ) from None
        finally:
            self.token_requests += 1
            # The server counts the second from when a request arrives, and a request can sit in
            # a slow network or server for a while: the next one waits a full interval from this
            # answer, not only from this send, so two can never arrive inside one second.
            self._spacing.hold_off(TOKEN_ENDPOINT_INTERVAL_S)
        if response.status_code != 200:
            error = error_from_response(
                response, operation="the token request", idempotent=True, redact=self.redact
            )
            if response.status_code == 429:  # every client of this host waits, not only this one
                self._spacing.hold_off(error.retry_after or TOKEN_ENDPOINT_INTERVAL_S)
            if error.code == "invalid_scope":
                raise QmaticForbiddenError(
                    f"{error.message}. The client is not granted scope {scope_string(scopes)!r} for tenant "
                    f"{config.tenant!r}: ask Qmatic to grant it, or use a connection whose client has it",
                    status=response.status_code,
                    code=error.code,
                )
            if response.status_code == 401:
                raise QmaticAuthError(
                    f"{error.message}. Check the Client ID, Client Secret and tenant "
                    f"(tenant {config.tenant!r}, {config.where})",
                    status=401,
                    code=error.code,
                )
            raise error
        return self._parse(response)

    def _parse(self, response: requests.Response) -> CachedToken:
        payload = json_body(response, operation="the token request")
        if not isinstance(payload, dict):
            raise QmaticAuthError(
                f"the token endpoint answered with {describe_body(response)} that is not a JSON object"
            )
        token = payload.get("access_token")
        # Field names are server text as well: quoted through the redactor, and not many of them.
        keys = self.redact(", ".join(sorted(str(k)[:40] for k in payload)[:20])) or "none"
        if not isinstance(token, str) or not token:
            raise QmaticAuthError(f"the token response has no access_token (fields present: {keys})")
        if not _TOKEN_CHARS.fullmatch(token):
            raise QmaticAuthError(
                "the token response has an access_token with characters a Bearer token cannot have "
                "(spaces, line breaks, non-ASCII or punctuation outside RFC 6750); it was not used "
                "or cached. A gateway may be rewriting the answer"
            )
        self._on_secret(token)
        self.redact.add(token)
        token_type = payload.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            shown = self.redact(str(token_type)[:20])
            raise QmaticAuthError(
                f"the token response has token_type {shown!r}, expected 'Bearer' (fields present: {keys})"
            )
        expires_in = _lifetime(payload.get("expires_in", 3600))
        self.last_expires_in = expires_in
        usable = expires_in - min(REFRESH_MARGIN_S, expires_in / 2)
        return CachedToken(access_token=token, expires_at=self._clock() + usable)

    def auth_failure(self, scopes: frozenset[Scope]) -> QmaticAuthError:
        """The error for an API call refused twice with 401, naming tenant and region, no secret."""
        return QmaticAuthError(
            f"Qmatic refused a freshly issued token for scopes {scope_string(scopes)!r} "
            f"(tenant {self._config.tenant!r}, {self._config.where}); check that the client is enabled "
            "for this tenant",
            status=401,
            code="invalid_token",
        )
