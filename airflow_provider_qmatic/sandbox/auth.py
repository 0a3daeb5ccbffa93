"""OAuth2 client credentials as Qmatic documents it, and the bearer-token checks of every API call.

The token endpoint checks, in this order: Basic credentials (401 ``invalid_client``), X-ACCOUNT
naming the client's tenant (401 ``invalid_client``), the form content type (400
``invalid_request``), ``grant_type`` (400 ``unsupported_grant_type``) and ``scope`` (400
``invalid_scope``). Error messages never quote a client id or secret.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from airflow_provider_qmatic.api.contract import Operation, Scope
from airflow_provider_qmatic.sandbox.clock import Clock
from airflow_provider_qmatic.sandbox.errors import SandboxError
from airflow_provider_qmatic.sandbox.records import Token
from airflow_provider_qmatic.sandbox.settings import SandboxClient, SandboxSettings
from airflow_provider_qmatic.sandbox.store import Store

_BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="qmatic"'}


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """``(client_id, secret)`` from an ``Authorization: Basic`` header, or None if it is not one."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        return None
    return client_id, secret


def issue_token(
    settings: SandboxSettings, store: Store, headers: Mapping[str, str], body: bytes
) -> dict[str, Any]:
    """Answer a ``POST /oauth2/token``: the 200 body, or raise :class:`SandboxError`."""
    client = _authenticate_client(settings, headers)
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise SandboxError(400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded")
    form = _form(body)
    grant = form.get("grant_type")
    if grant is None:
        raise SandboxError(400, "invalid_request", "grant_type is required")
    if grant != "client_credentials":
        raise SandboxError(400, "unsupported_grant_type", "only grant_type=client_credentials is supported")
    scopes = _scopes(client, form.get("scope"))
    lifetime = settings.token_lifetime
    token = store.issue_token(client, scopes, lifetime)
    return {"access_token": token.value, "expires_in": max(1, int(lifetime)), "token_type": "Bearer"}


def authenticate_bearer(
    store: Store, clock: Clock, authorization: str | None, tenant_header: str | None, operation: Operation
) -> Token:
    """The caller's token after the 401 and 403 checks of Part B, for ``operation``: a token with
    any one of the operation's scopes in the contract table may call it."""
    scheme, _, value = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise _invalid_token("an Authorization: Bearer <token> header is required")
    token = store.find_token(value.strip())
    if token is None:
        raise _invalid_token("the access token is not known")
    if clock.time() >= token.expires_at:
        raise _invalid_token("the access token has expired; request a new one")
    if not tenant_header:
        raise SandboxError(
            403, "forbidden_tenant", "the X-TENANT-ID header (the tenant's system id) is required"
        )
    if tenant_header.strip() != token.system_id:
        raise SandboxError(
            403, "forbidden_tenant", "X-TENANT-ID is not the system id of this client's tenant"
        )
    needed = frozenset(operation.scopes)
    if not (token.scopes & needed):
        wanted = " or ".join(sorted(s.value for s in needed))
        raise SandboxError(
            403,
            "insufficient_scope",
            f"this call needs the scope {wanted}",
            {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{wanted}"'},
        )
    return token


def _authenticate_client(settings: SandboxSettings, headers: Mapping[str, str]) -> SandboxClient:
    credentials = basic_credentials(headers.get("authorization"))
    if credentials is None:
        raise SandboxError(
            401,
            "invalid_client",
            "an Authorization: Basic base64(clientId:clientSecret) header is required",
            _BASIC_CHALLENGE,
        )
    client_id, secret = credentials
    client = next((c for c in settings.clients if c.client_id == client_id), None)
    if client is None or not hmac.compare_digest(client.client_secret.encode(), secret.encode()):
        raise SandboxError(401, "invalid_client", "client authentication failed", _BASIC_CHALLENGE)
    account = headers.get("x-account")
    if not account:
        raise SandboxError(401, "invalid_client", "the X-ACCOUNT header (the account name) is required")
    if account.strip() != client.tenant:
        raise SandboxError(401, "invalid_client", "X-ACCOUNT does not name this client's account")
    return client


def _form(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise SandboxError(400, "invalid_request", "the body is not a valid URL-encoded form") from None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            raise SandboxError(400, "invalid_request", f"{key} is given more than once")
        form[key] = value
    return form


def _scopes(client: SandboxClient, requested: str | None) -> frozenset[Scope]:
    """The requested scopes; all of the client's when ``scope`` is absent or empty (as Cognito)."""
    if requested is None or not requested.strip():
        return client.scopes
    scopes: set[Scope] = set()
    for item in requested.split():
        try:
            scope = Scope(item)
        except ValueError:
            raise SandboxError(400, "invalid_scope", f"unknown scope {item[:100]!r}") from None
        if scope not in client.scopes:
            raise SandboxError(400, "invalid_scope", f"this client may not request the scope {item}")
        scopes.add(scope)
    return frozenset(scopes)


def _invalid_token(message: str) -> SandboxError:
    return SandboxError(401, "invalid_token", message, {"WWW-Authenticate": 'Bearer error="invalid_token"'})
