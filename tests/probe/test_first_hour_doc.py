"""The guesses table of docs/first-hour.md is the contract table, row for row, so the page a
deployment reads in its first hour never drifts from what the client sends."""

from __future__ import annotations

from pathlib import Path

from airflow_provider_qmatic.api.contract import API_OPERATIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "first-hour.md"


def test_guesses_table_is_the_contract_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    section = text.split("## The guesses, row by row", 1)[1].split("\n## ", 1)[0]
    rows = [
        [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("| `")
    ]
    expected = [
        [op.name, op.method, op.path, op.source, "write" if op.writes else "read", op.note]
        for op in API_OPERATIONS
    ]
    assert rows == expected
