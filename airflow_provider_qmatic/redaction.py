"""What may be quoted from a server: every piece of server text goes through :class:`Redactor`.

A gateway in front of Qmatic may echo the request back in its error text: the Authorization
header (whole, cut short, or percent-encoded), the form body, the customer in the JSON body.
Replacing exact values is not enough for that, so the rules here are deliberately coarse:

- every ``Basic`` or ``Bearer`` credential is replaced up to the end of its token characters,
  however short (``Basic aG9zdGlsZS1…`` included);
- every run of 8 or more characters taken from a secret (the client secret, the Basic value,
  each token seen), in any letter case, is replaced; and so is a word that holds such a run once
  its percent-escapes are decoded, and a base64 run that decodes to one (base64 of a prefix of
  ``id:secret``);
- every personal value of the request being answered (the customer's names, e-mail, phone,
  personal identifier, date of birth, answers and notes) is replaced in every form a server or a
  gateway is likely to quote it in: the text is read with its escapes decoded (percent-encoding,
  ``+`` or ``%20`` for a space, JSON ``\\uXXXX``, HTML entities) and letter case ignored, and a
  value matches by its letters and digits alone, whatever punctuation or spacing stands between
  them (``+46 70-123 45 67`` is ``+46701234567``, ``19850312-7734`` is ``198503127734``). What is
  masked is the stretch of the original text the match came from, escapes included.

Over-redacting a server message costs a little clarity; under-redacting leaks a credential into
task logs and the connection Test message, so the rules err on the first side.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
import threading
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus, unquote_plus

MASK = "***"
# A run this long taken from a secret is treated as the secret: 8 characters of a random secret
# already narrow it down a great deal, and ordinary words in messages are rarely that long *and*
# inside a secret.
MIN_SECRET_RUN = 8

# "Basic"/"Bearer", then a space (raw or encoded), then RFC 7235 token68 characters (and "%" for
# percent-encoded forms). Also "Basic" written as "Basic:" or "Basic=" by some echoing gateways.
_CREDENTIAL = re.compile(r"(?i)\b(basic|bearer)(?:\s+|%20|\+|:|=)+[A-Za-z0-9\-._~+/%]*=*")
# Runs that may be base64 of something secret (checked by decoding, so ordinary words pass).
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/_-]{12,}={0,2}")
# Words holding a percent-escape: decoded and checked, since any character may be escaped.
_PERCENT_RUN = re.compile(r"[^\s\"'<>]*%[0-9A-Fa-f]{2}[^\s\"'<>]*")

# Escapes a server may have applied to a value it quotes: runs of percent-escapes (one UTF-8
# character may take several), runs of JSON \u escapes (a surrogate pair takes two), HTML entities;
# else one character.
_PIECE = re.compile(
    r"(?:%[0-9A-Fa-f]{2})+|(?:\\u[0-9A-Fa-f]{4})+|&#[0-9]{1,7};|&#[xX][0-9A-Fa-f]{1,6};|&[A-Za-z][A-Za-z0-9]{1,31};|.",
    re.DOTALL,
)
# Between two letters or digits of a personal value, the quote may hold this much punctuation or
# spacing ("+46 (70) 123-45 67"); more and the letters are taken to belong to other words.
_LOOSE_GAP = r"[\W_]{0,3}"
_NOT_ALNUM_BEFORE = r"(?<![^\W_])"
_NOT_ALNUM_AFTER = r"(?![^\W_])"

# Request-body keys whose values are the customer's personal data (the confirm and search bodies).
_PERSONAL_KEYS = frozenset({"customer", "answer", "informationQuestions", "notes"})


class Redactor:
    """Replaces secrets and personal data in server text; shared by every place that quotes it.

    :meth:`add` registers a secret the moment it exists (the token provider adds the client secret,
    the Basic value and each token); calling the object redacts a text.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._exact: set[str] = set()
        self._runs: set[str] = set()  # every MIN_SECRET_RUN-long window of every secret form, lowered
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str) -> None:
        """Treat ``secret`` (and its percent-encoded forms) as never to be quoted."""
        if not secret or secret in self._exact:
            return
        forms = {secret, quote(secret, safe=""), quote_plus(secret, safe="")}
        windows = {w.lower() for form in forms for _, w in _windows(form)}
        with self._lock:
            self._exact |= forms
            self._runs |= windows

    def __call__(self, text: str, personal: Iterable[str] = ()) -> str:
        """``text`` with every credential, secret run and personal value replaced by ``***``."""
        text = _CREDENTIAL.sub(lambda m: f"{m.group(1)} {MASK}", text)
        with self._lock:
            exact = sorted(self._exact, key=len, reverse=True)
            runs = frozenset(self._runs)
        for value in exact:
            text = text.replace(value, MASK)
        if runs:
            text = _PERCENT_RUN.sub(lambda m: MASK if _holds_secret(unquote_plus(m[0]), runs) else m[0], text)
            text = _mask_runs(text, runs)
            text = _BASE64_RUN.sub(lambda m: MASK if _decodes_to_secret(m[0], runs) else m[0], text)
        return _mask_personal(text, personal)


def personal_values(body: bytes | str | None) -> list[str]:
    """The customer's values in a JSON request body (as sent), for :class:`Redactor` to drop."""
    if not body:
        return []
    try:
        data = json.loads(body)
    except ValueError:
        return []
    return list(_personal_leaves(data, personal=False))


def _personal_leaves(data: Any, *, personal: bool) -> Iterator[str]:
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _personal_leaves(value, personal=personal or key in _PERSONAL_KEYS)
    elif isinstance(data, list):
        for item in data:
            yield from _personal_leaves(item, personal=personal)
    elif personal and isinstance(data, (str, int, float)) and not isinstance(data, bool):
        yield str(data)


def _mask_personal(text: str, personal: Iterable[str]) -> str:
    """``text`` with every stretch that quotes a personal value, in any of the forms the module
    documentation lists, replaced by ``***``."""
    # One letter is no one's identity, and masking it would mangle every "a" in the message.
    values = {v.strip() for v in personal if len(v.strip()) > 1}
    if not values:
        return text
    view, origins = _decoded_view(text)
    covered: list[tuple[int, int]] = []
    for value in values:
        letters = [ch for ch in value.lower() if ch.isalnum()]
        if len(letters) < 2:  # punctuation alone: only its exact form is masked
            covered += [m.span() for m in re.finditer(re.escape(value), text, re.IGNORECASE)]
            continue
        pattern = _NOT_ALNUM_BEFORE + _LOOSE_GAP.join(map(re.escape, letters)) + _NOT_ALNUM_AFTER
        for match in re.finditer(pattern, view):
            first, last = origins[match.start()], origins[match.end() - 1]
            covered.append((first[0], last[1]))
    return _mask_spans(text, covered)


def _mask_spans(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with each stretch ``(start, end)`` replaced by ``***``; stretches that overlap or
    touch make one mask."""
    out: list[str] = []
    position = 0
    for start, end in sorted(spans):
        if out and start <= position:  # overlaps or touches the stretch just masked: that mask grows
            position = max(position, end)
        else:
            out += [text[position:start], MASK]
            position = end
    out.append(text[position:])
    return "".join(out)


def _decoded_view(text: str) -> tuple[str, list[tuple[int, int]]]:
    """``text`` lower-cased with its escapes decoded, and for each character of that view the
    stretch ``(start, end)`` of ``text`` it came from (an escape's characters all share its stretch)."""
    view: list[str] = []
    origins: list[tuple[int, int]] = []
    for piece in _PIECE.finditer(text):
        for ch in (piece[0] if len(piece[0]) == 1 else _unescape(piece[0])).lower():
            view.append(ch)
            origins.append(piece.span())
    return "".join(view), origins


def _unescape(escaped: str) -> str:
    if escaped.startswith("%"):
        return bytes.fromhex(escaped.replace("%", "")).decode("utf-8", errors="replace")
    if escaped.startswith("\\"):
        try:
            decoded = json.loads(f'"{escaped}"')
        except ValueError:
            return escaped
        return str(decoded)
    return html.unescape(escaped)


def _windows(text: str) -> Iterator[tuple[int, str]]:
    for start in range(len(text) - MIN_SECRET_RUN + 1):
        yield start, text[start : start + MIN_SECRET_RUN]


def _mask_runs(text: str, runs: frozenset[str]) -> str:
    """Mask every stretch of ``text`` covered by windows found in ``runs`` (a secret's substrings)."""
    lowered = text.lower()
    return _mask_spans(
        text, [(start, start + MIN_SECRET_RUN) for start, window in _windows(lowered) if window in runs]
    )


def _decodes_to_secret(candidate: str, runs: frozenset[str]) -> bool:
    """True when a base64 (or base64url) run decodes to text holding a run of a secret."""
    padded = candidate.rstrip("=")
    padded = padded[: len(padded) - len(padded) % 4] if len(padded) % 4 == 1 else padded
    padded += "=" * (-len(padded) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return False
    return _holds_secret(raw.decode("utf-8", errors="ignore"), runs)


def _holds_secret(text: str, runs: frozenset[str]) -> bool:
    return _mask_runs(text, runs) != text
