"""Which operation of the contract table a request is for, from its method and path.

The middleware needs the operation before the web framework routes the request: to count it, to
pick the rate limit (token endpoint or API) and to aim faults at it.
"""

from __future__ import annotations

import re

from airflow_provider_qmatic.contract import OPERATIONS, Operation


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template))
    return re.compile(pattern + "/?")


_COMPILED: tuple[tuple[re.Pattern[str], Operation], ...] = tuple(
    (_compile(op.path), op) for op in OPERATIONS.values()
)


def classify(method: str, path: str) -> str | None:
    """The operation's name (a key of ``contract.OPERATIONS``), or None for anything else."""
    for pattern, op in _COMPILED:
        if op.method == method and pattern.fullmatch(path):
            return op.name
    return None
