"""OAuth2 scopes, and which operation needs which (least privilege, Part B of the API contract).

A token is requested for exactly the scopes of the operation at hand and cached per scope set, so
a cancel job never holds a token that could book.
"""

from __future__ import annotations

from enum import Enum


class Scope(str, Enum):
    """The three scopes Qmatic's identity server grants."""

    BOOK = "com.qmatic.saas.appointments/external.appointment.book"
    RESCHEDULE = "com.qmatic.saas.appointments/external.appointment.reschedule"
    CANCEL = "com.qmatic.saas.appointments/external.appointment.cancel"

    @classmethod
    def parse(cls, value: str) -> Scope:
        """Accept the full scope string or its short name (``book``, ``reschedule``, ``cancel``)."""
        text = value.strip()
        for scope in cls:
            if text in (scope.value, scope.name.lower()):
                return scope
        known = ", ".join(s.name.lower() for s in cls)
        raise ValueError(f"unknown scope {text!r}: use one of {known} or the full scope string")


ALL_SCOPES: frozenset[Scope] = frozenset(Scope)
# The scope sets the provider asks tokens for: one scope each (least privilege).
BOOK: frozenset[Scope] = frozenset({Scope.BOOK})
RESCHEDULE: frozenset[Scope] = frozenset({Scope.RESCHEDULE})
CANCEL: frozenset[Scope] = frozenset({Scope.CANCEL})


def scope_string(scopes: frozenset[Scope]) -> str:
    """The ``scope`` form value: scope strings joined by single spaces, in a stable order."""
    return " ".join(sorted(s.value for s in scopes))
