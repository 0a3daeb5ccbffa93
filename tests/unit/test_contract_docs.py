"""The docs' table of the contract (architecture and operators pages) is the contract table.

Each page holds the table between ``<!-- contract-table -->`` markers; this test renders it from
``contract.OPERATIONS`` and compares, so a row changed in ``contract.py`` without the docs fails
here, with the table to paste in the failure message.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from airflow_provider_qmatic.api.contract import OPERATIONS

DOCS = Path(__file__).resolve().parents[2] / "docs"
START, END = "<!-- contract-table:start -->", "<!-- contract-table:end -->"


def render() -> str:
    lines = [
        "| operation | method and path | token scopes | success | source | note |",
        "|---|---|---|---|---|---|",
    ]
    for op in OPERATIONS.values():
        scopes = ", ".join(s.name.lower() for s in op.scopes) or "Basic auth"
        note = op.note.replace("|", "\\|") or ("" if op.source == "page" else "no public page shows it")
        lines.append(
            f"| `{op.name}` | `{op.method} {op.path}` | {scopes} | {op.success} | {op.source} | {note} |"
        )
    return "\n".join(lines)


@pytest.mark.parametrize("page", ["architecture.md", "operators.md"])
def test_the_docs_table_is_the_contract_table(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    found = re.search(re.escape(START) + r"\n(.*?)\n" + re.escape(END), text, re.DOTALL)
    assert found is not None, f"docs/{page} has no {START} ... {END} block"
    expected = render()
    assert found.group(1) == expected, f"docs/{page}: replace the table with\n{expected}"
