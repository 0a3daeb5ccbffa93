"""The import paths the docs and example DAGs showed before the package was split into folders still
work, each warning once with the path to use now; the public packages hand out their classes."""

from __future__ import annotations

import subprocess
import sys

import pytest

MOVED = [
    ("from airflow_provider_qmatic.models import Appointment", "airflow_provider_qmatic.api.models"),
    ("from airflow_provider_qmatic.contract import RESERVE", "airflow_provider_qmatic.api.contract"),
    ("from airflow_provider_qmatic.scopes import BOOK, Scope", "airflow_provider_qmatic.api.contract"),
]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter: a module imported once is not imported (nor warned about) again."""
    return subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize(("statement", "new_path"), MOVED)
def test_an_old_path_warns_naming_the_new_one(statement: str, new_path: str) -> None:
    result = _run(statement)
    assert result.returncode != 0
    assert "DeprecationWarning" in result.stderr
    assert f"moved to {new_path}" in result.stderr


def test_an_old_path_gives_the_same_objects() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "ignore::DeprecationWarning",
            "-c",
            "from airflow_provider_qmatic.models import Appointment\n"
            "from airflow_provider_qmatic.contract import RESCHEDULE as ROW\n"
            "from airflow_provider_qmatic.scopes import BOOK, CANCEL, RESCHEDULE, Scope, scope_string\n"
            "from airflow_provider_qmatic.api import contract, models\n"
            "assert Appointment is models.Appointment\n"
            "assert ROW is contract.RESCHEDULE\n"
            "assert (BOOK, RESCHEDULE, CANCEL) == "
            "(contract.BOOK_SCOPES, contract.RESCHEDULE_SCOPES, contract.CANCEL_SCOPES)\n"
            "assert Scope is contract.Scope and scope_string is contract.scope_string\n",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_public_packages_hand_out_their_classes_without_warning() -> None:
    result = _run(
        "import sys\n"
        "import airflow_provider_qmatic.bulk.args\n"
        "assert 'airflow_provider_qmatic.bulk.runner' not in sys.modules  # cheap for DAG parsing\n"
        "from airflow_provider_qmatic.bulk import BulkRunner\n"
        "from airflow_provider_qmatic.bulk.runner import BulkRunner as Runner\n"
        "from airflow_provider_qmatic.client import QmaticClient, build_client\n"
        "from airflow_provider_qmatic.client.client import QmaticClient as Client\n"
        "assert BulkRunner is Runner and QmaticClient is Client\n"
    )
    assert result.returncode == 0, result.stderr
