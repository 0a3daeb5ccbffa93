"""The provider as Airflow discovers it: entry point, schema-valid info, CLI listings, the form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import airflow_provider_qmatic
from airflow_provider_qmatic.get_provider_info import get_provider_info
from airflow_provider_qmatic.hooks.connection_fields import (
    EXTRA_FIELDS,
    HIDDEN_FIELDS,
    RELABELING,
    REQUIRED_MARK,
    is_required,
)
from tests.conftest import run_airflow

pytestmark = pytest.mark.airflow


def test_provider_info_matches_airflows_schema() -> None:
    import airflow
    import jsonschema

    schema_path = Path(airflow.__file__).with_name("provider_info.schema.json")
    schema = json.loads(schema_path.read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-provider-qmatic"
    # Unknown keys are ignored silently by Airflow: fail here instead. Airflow 2.11's runtime schema
    # omits the documentation keys that 3.x's lists, so those are named here.
    assert set(info) <= set(schema["properties"]) | {
        "integrations",
        "hooks",
        "operators",
        "sensors",
        "triggers",
    }
    for conn in info["connection-types"]:
        assert set(conn) <= {
            "connection-type",
            "hook-class-name",
            "hook-name",
            "conn-fields",
            "ui-field-behaviour",
        }


def test_every_listed_module_imports() -> None:
    import importlib

    info = get_provider_info()
    modules = [
        m
        for section in ("hooks", "operators", "sensors", "triggers")
        for entry in info[section]
        for m in entry["python-modules"]
    ]
    for name in modules:
        importlib.import_module(name)
    hook_path = info["connection-types"][0]["hook-class-name"]
    module, _, cls = hook_path.rpartition(".")
    assert getattr(importlib.import_module(module), cls).conn_type == "qmatic"


@pytest.mark.lines
def test_providers_manager_registers_hook_and_version() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    provider = manager.providers["airflow-provider-qmatic"]
    assert provider.version == airflow_provider_qmatic.__version__
    hook = manager.hooks["qmatic"]
    assert hook is not None
    assert hook.hook_class_name == "airflow_provider_qmatic.hooks.qmatic.QmaticHook"
    assert hook.hook_name == "Qmatic Cloud"
    assert hook.connection_id_attribute_name == "qmatic_conn_id"


@pytest.mark.lines
def test_cli_lists_provider_and_hook(airflow_db: Path) -> None:
    providers = run_airflow("providers", "list", "-o", "json")
    assert providers.returncode == 0, providers.stderr[-2000:]
    listed = {p["package_name"]: p["version"] for p in json.loads(_json_part(providers.stdout))}
    assert listed["airflow-provider-qmatic"] == airflow_provider_qmatic.__version__
    hooks = run_airflow("providers", "hooks", "-o", "json")
    assert hooks.returncode == 0, hooks.stderr[-2000:]
    by_type = {h["connection_type"]: h for h in json.loads(_json_part(hooks.stdout))}
    assert by_type["qmatic"]["class"] == "airflow_provider_qmatic.hooks.qmatic.QmaticHook"


def test_form_widgets_and_behaviour_as_airflow_serves_them() -> None:
    """What the UI receives, from whichever definition this Airflow reads."""
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    widgets = {k: v for k, v in manager.connection_form_widgets.items() if k.startswith("extra__qmatic__")}
    assert [k.removeprefix("extra__qmatic__") for k in widgets] == list(EXTRA_FIELDS)
    behaviour = manager.field_behaviours["qmatic"]
    assert sorted(behaviour["hidden_fields"]) == sorted(HIDDEN_FIELDS)
    assert behaviour["relabeling"] == RELABELING
    assert "schema" in behaviour["hidden_fields"]
    # Port stays: Airflow 3.3.2's Test button needs a stored port to reuse the stored secret.
    assert "port" not in behaviour["hidden_fields"]
    assert behaviour["placeholders"]["port"].startswith("443")
    assert "extra__qmatic__base_url" in behaviour["placeholders"]


def test_legacy_field_behaviour_matches_provider_info() -> None:
    """The hook-method behaviour (2.11 / 3.0 / 3.1) and the declarative one (3.2+) cannot drift apart."""
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    declared = get_provider_info()["connection-types"][0]["ui-field-behaviour"]
    legacy = QmaticHook.get_ui_field_behaviour()
    assert legacy["hidden_fields"] == declared["hidden-fields"]
    assert legacy["relabeling"] == declared["relabeling"]
    assert legacy["placeholders"] == declared["placeholders"]


def test_legacy_form_widgets_match_provider_info() -> None:
    """The wtforms widgets of the hook describe the same fields, labels and choices as conn-fields."""
    pytest.importorskip(
        "wtforms", reason="wtforms ships only with Airflow 2.x; this test runs in the Airflow 2.11 suite"
    )
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    info = get_provider_info()["connection-types"][0]
    widgets = QmaticHook.get_connection_form_widgets()
    assert list(widgets) == list(info["conn-fields"])
    required = {name for name, (_, _, schema) in EXTRA_FIELDS.items() if is_required(schema)}
    assert required == {"tenant", "system_id"}
    for name, field in widgets.items():
        declared = info["conn-fields"][name]
        # This path cannot mark a field required (see connection_fields), so the label does.
        assert str(field.args[0]) == declared["label"] + (REQUIRED_MARK if name in required else "")
        assert field.kwargs["description"] == declared["description"]
        choices = [v.values for v in field.kwargs["validators"] if hasattr(v, "values")]
        assert choices == ([declared["schema"]["enum"]] if "enum" in declared["schema"] else [])


def _json_part(stdout: str) -> str:
    """The JSON document of CLI output, which may carry log lines (``[2026-...] {file.py:1}``) first."""
    decoder = json.JSONDecoder()
    for start, char in enumerate(stdout):
        if char in "[{":
            try:
                _, end = decoder.raw_decode(stdout, start)
            except ValueError:
                continue
            return stdout[start:end]
    raise AssertionError(f"no JSON document in the output: {stdout[-2000:]}")
