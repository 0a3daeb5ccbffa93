"""The sandbox's operation table, and which operation a request is for, from its method and path.

The table is the contract's, with the settings' ``moved_paths`` in place (``contract.resolve``),
so a sandbox can serve an operation where a real tenant does and prove that a client's
``endpoints`` extra reaches it. The middleware needs the operation before the web framework
routes the request: to count it, to pick the rate limit (token endpoint or API) and to aim faults.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from airflow_provider_qmatic.api import contract
from airflow_provider_qmatic.api.contract import Operation


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template))
    return re.compile(pattern + "/?")


class RouteTable:
    """The operations one sandbox serves, at their (maybe moved) paths."""

    def __init__(self, moved_paths: Mapping[str, str] | None = None) -> None:
        self.operations: dict[str, Operation] = contract.resolve(moved_paths)
        self._compiled = tuple((_compile(op.path), op) for op in self.operations.values())
        # Where a moved operation used to answer: such a request is answered 404, never 405.
        self._vacated = tuple(
            (_compile(contract.OPERATIONS[name].path), contract.OPERATIONS[name].method)
            for name in (moved_paths or {})
        )

    @property
    def api_operations(self) -> tuple[Operation, ...]:
        """Every operation but the token endpoint, in the contract's order."""
        return tuple(self.operations[op.name] for op in contract.API_OPERATIONS)

    def classify(self, method: str, path: str) -> str | None:
        """The operation's name (a key of ``contract.OPERATIONS``), or None for anything else."""
        for pattern, op in self._compiled:
            if op.method == method and pattern.fullmatch(path):
                return op.name
        return None

    def vacated(self, method: str, path: str) -> bool:
        """True for a moved operation's old method and path."""
        return any(m == method and pattern.fullmatch(path) for pattern, m in self._vacated)
