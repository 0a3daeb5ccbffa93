"""The one error type of the sandbox: an HTTP status, a Part B error code and a human message.

Raised by the pure-Python parts (store, validation, auth) and turned into the JSON body
``{"error": code, "message": text}`` by the app, so the store never knows about HTTP frameworks.
"""

from __future__ import annotations


class SandboxError(Exception):
    """An API error answer. ``headers`` are added to the response (e.g. ``WWW-Authenticate``)."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        return {"error": self.code, "message": self.message}


def bad_request(field: str, problem: str) -> SandboxError:
    """400 ``invalid_request`` whose message starts with the failing field's name."""
    return SandboxError(400, "invalid_request", f"{field}: {problem}")


def not_found(what: str, ident: str) -> SandboxError:
    return SandboxError(404, "not_found", f"{what} {ident} not found")


def conflict(code: str, message: str) -> SandboxError:
    return SandboxError(409, code, message)
