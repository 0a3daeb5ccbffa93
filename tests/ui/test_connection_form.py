"""The Qmatic connection form as Airflow 3's UI really renders it, in a real browser.

``make test-ui`` starts ``airflow api-server`` (own AIRFLOW_HOME, SQLite, simple auth manager with
all users admin) and drives headless Chromium: Admin -> Connections -> Add Connection -> type
"Qmatic Cloud". It checks the relabelled Client ID / Client Secret, the extra fields with their
labels (Region as a select of the two regions), the required markers of Tenant and System ID, the
placeholders, that Schema and Host are hidden and Port is shown, and that a connection saved from the
form is one the hook accepts. It saves a connection pointing at a running sandbox and presses the
row's **Test** button until the provider's own success message shows (and shows what Airflow 3.3.2
does to a saved connection without a port). It also checks the API server's hook metadata
(``GET /ui/connections/hook_meta``), which is what the form is built from, and saves the screenshot
used by the docs (docs/img/connection-form.png).

Skipped in the plain ``pytest`` run: it needs a browser and a server, so only ``make test-ui`` (which
sets QMATIC_UI_TESTS=1) runs it. Once enabled, a missing Chromium or a server that does not start is a
failure, never a skip.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qmatic.hooks.connection_fields import (
    CONN_TYPE,
    EXTRA_FIELDS,
    HIDDEN_FIELDS,
    PLACEHOLDERS,
    RELABELING,
    is_required,
    legacy_label,
)
from airflow_provider_qmatic.sandbox import SandboxServer
from tests.ui.conftest import AIRFLOW_2, ENABLE_VAR, ApiServer, ui_tests_enabled

pytestmark = [
    pytest.mark.ui,
    pytest.mark.skipif(
        not ui_tests_enabled(),
        reason=f"UI test: runs only under `make test-ui` (set {ENABLE_VAR}=1); "
        "it starts an Airflow API server and headless Chromium",
    ),
    pytest.mark.skipif(
        AIRFLOW_2, reason="Airflow 3's UI; Airflow 2.11's form is in test_connection_form_2.py"
    ),
]

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = REPO / "docs" / "img" / "connection-form.png"
HOOK_NAME = "Qmatic Cloud"
REGIONS = ["eu-west-1", "us-east-1"]
# The fields the issue asks for, spelled out so that dropping one from connection_fields fails here.
REQUIRED_EXTRA_LABELS = {
    "region": "Region",
    "tenant": "Tenant",
    "system_id": "System ID",
    "base_url": "Base URL",
}
# Without these the hook cannot work, so the form must mark them (the others are optional or pre-filled).
REQUIRED = {"tenant", "system_id"}
# Airflow versions whose Test button cannot test a saved connection without a stored port, and what
# the user sees there: 3.3.2 refuses with 400 (UI sends port 0, stored NULL); 3.3.1 also compares the
# hidden Host ("" vs NULL) and then tests with the API's '***' mask as the secret.
PORTLESS_TEST_FAILS = {"3.3.1": "Airflow's mask '***'", "3.3.2": "Bad Request"}
# hook_meta's names for the standard fields (``schema`` travels as ``url_schema``).
HOOK_META_NAMES = {"schema": "url_schema"}
MASKED = "***"


# -- helpers -----------------------------------------------------------------------------------------


def _airflow_at_least(version: str) -> bool:
    from airflow import __version__ as airflow_version
    from packaging.version import Version

    return Version(airflow_version) >= Version(version)


def _qmatic_meta(server: ApiServer) -> dict[str, Any]:
    metas = server.get_json("/ui/connections/hook_meta")
    assert isinstance(metas, list), metas
    found = [m for m in metas if m.get("connection_type") == CONN_TYPE]
    assert len(found) == 1, (
        f"connection type {CONN_TYPE!r} not (or more than once) in hook_meta: "
        f"{sorted(str(m.get('connection_type')) for m in metas)}"
    )
    return dict(found[0])


def _open_add_dialog(page: Any, server: ApiServer) -> Any:
    """Admin -> Connections, then the "Add Connection" button; returns the dialog."""
    page.goto(f"{server.url}/connections", wait_until="networkidle")
    page.get_by_role("button", name="Add Connection").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("heading", name="Add Connection").wait_for()
    return dialog


def _choose_type(page: Any, dialog: Any, hook_name: str) -> None:
    combo = dialog.get_by_role("combobox", name="Connection Type")
    combo.fill(hook_name)
    page.get_by_role("option", name=hook_name, exact=True).click()
    dialog.get_by_role("button", name="Standard Fields", exact=True).wait_for()


def _open_section(dialog: Any, title: str) -> None:
    """Expand one accordion section (the form shows one at a time)."""
    trigger = dialog.get_by_role("button", name=title, exact=True)
    if trigger.get_attribute("aria-expanded") != "true":
        trigger.click()
    dialog.page.wait_for_function(
        "t => document.querySelector(`[data-part=item-trigger][aria-expanded=true]`)?.innerText.trim() === t",
        arg=title,
    )


def _field_group(dialog: Any, name: str) -> Any:
    """The labelled row of an extra field, found by its input's ``element_<name>`` name."""
    return dialog.locator('[data-part="root"][role="group"]').filter(
        has=dialog.page.locator(f'[name="element_{name}"]')
    )


def _toast(page: Any, title: str) -> str:
    """The text of the toast with this title (title and message), once it shows."""
    toast = page.locator('[data-scope="toast"][data-part="root"]').filter(has_text=title).first
    toast.wait_for()
    return str(toast.inner_text())


def _press_test(page: Any, server: ApiServer, conn_id: str) -> str:
    """Admin -> Connections, the Test button in the connection's row; the resulting toast's text."""
    page.goto(f"{server.url}/connections", wait_until="networkidle")
    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=conn_id, exact=True))
    row.get_by_role("button", name="Test Connection").click()
    toast = page.locator('[data-scope="toast"][data-part="root"]').first
    toast.wait_for()
    return str(toast.inner_text())


def _compose(page: Any, shots: list[bytes], path: Path) -> None:
    """Lay the dialog's screenshots side by side, rendered by the browser itself, into one PNG."""
    images = "".join(f'<img src="data:image/png;base64,{base64.b64encode(s).decode()}">' for s in shots)
    page.set_viewport_size({"width": 1900, "height": 800})
    page.set_content(
        "<html><body style='margin:0;background:#e2e8f0'>"
        "<div id='shot' style='display:inline-flex;gap:24px;padding:24px;align-items:flex-start'>"
        f"{images}</div></body></html>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    page.locator("#shot").screenshot(path=str(path))


# -- the API server's metadata, over HTTP ------------------------------------------------------------


def test_hook_meta_describes_the_qmatic_form(api_server: ApiServer) -> None:
    meta = _qmatic_meta(api_server)
    assert meta["hook_name"] == HOOK_NAME
    assert meta["hook_class_name"] == "airflow_provider_qmatic.hooks.qmatic.QmaticHook"

    standard = meta["standard_fields"]
    assert standard, "no standard field behaviour: ui-field-behaviour not read"
    for field in ("schema", "host", *HIDDEN_FIELDS):
        behaviour = standard[HOOK_META_NAMES.get(field, field)]
        assert behaviour, f"no behaviour for {field}: it should be hidden"
        assert behaviour["hidden"] is True, f"{field} should be hidden: {behaviour}"
    # Port stays on the form: Airflow 3.3.2's Test button needs a stored port.
    assert standard["port"]["hidden"] is False
    assert standard["port"]["placeholder"] == PLACEHOLDERS["port"]
    assert standard["login"]["title"] == "Client ID"
    assert standard["password"]["title"] == "Client Secret"
    for field, title in RELABELING.items():
        assert standard[field]["title"] == title
        assert standard[field]["hidden"] is False
        assert standard[field]["placeholder"] == PLACEHOLDERS[field]

    extras = meta["extra_fields"]
    assert extras, "no extra fields: conn-fields not read"
    assert list(extras) == list(EXTRA_FIELDS), "extra fields missing or out of order"
    # 3.2+ reads conn-fields and marks required fields itself; the hook-method path (3.0, 3.1) cannot,
    # so there the label carries the marker (see connection_fields).
    declarative = _airflow_at_least("3.2")
    for name, label in REQUIRED_EXTRA_LABELS.items():
        assert extras[name]["schema"]["title"] == (label if declarative else legacy_label(name))
    for name, (label, description, schema) in EXTRA_FIELDS.items():
        assert extras[name]["schema"]["title"] == (label if declarative else legacy_label(name))
        assert extras[name]["description"] == description
        assert extras[name]["schema"].get("enum") == schema.get("enum")
    assert extras["region"]["schema"]["enum"] == REGIONS
    # Airflow's rule, which its form applies: a schema type without "null" makes the field required.
    required = {name for name, spec in extras.items() if is_required(spec["schema"])}
    assert required == (REQUIRED if declarative else set()), f"required extras served: {sorted(required)}"
    # The API masks the value of any extra whose NAME looks secret ("token", "secret", "password",
    # ...), and the UI then pre-fills the form with "***" and saves it. A default must never be masked.
    masked = {name: spec["schema"].get("default") for name, spec in extras.items() if spec["value"] == MASKED}
    assert not masked, (
        f"hook_meta masks the default of {sorted(masked)} as {MASKED!r} because the field name matches "
        "Airflow's sensitive-name list; the Add Connection form then saves the literal '***'. Rename the "
        "field or drop its schema default."
    )


# -- the form in the browser -------------------------------------------------------------------------


def test_add_connection_form_renders_qmatic_fields(api_server: ApiServer, page: Any) -> None:
    dialog = _open_add_dialog(page, api_server)
    dialog.get_by_label("Connection ID").fill("qmatic_default")  # as in the docs' screenshot

    # Control: a generic connection has Host, Schema and Port, so their absence below means something.
    _choose_type(page, dialog, "Generic")
    for name in ("host", "schema", "port", "login", "password"):
        assert dialog.locator(f'[name="{name}"]').is_visible(), f"Generic form lacks {name}"

    _choose_type(page, dialog, HOOK_NAME)
    _open_section(dialog, "Standard Fields")

    # Standard fields: login/password relabelled, with placeholders; schema, port, host hidden.
    client_id = dialog.get_by_label("Client ID", exact=True)
    client_secret = dialog.get_by_label("Client Secret", exact=True)
    assert client_id.is_visible()
    assert client_id.get_attribute("name") == "login"
    assert client_id.get_attribute("placeholder") == PLACEHOLDERS["login"]
    assert client_secret.is_visible()
    assert client_secret.get_attribute("name") == "password"
    assert client_secret.get_attribute("type") == "password"
    assert client_secret.get_attribute("placeholder") == PLACEHOLDERS["password"]
    labels = [re.sub(r"\s+", " ", t).strip(" *") for t in dialog.locator("label").all_inner_texts()]
    for hidden in ("Login", "Password", "Schema", "Host"):
        assert hidden not in labels, f"{hidden!r} still on the form: {labels}"
    for name in ("schema", "host"):
        assert dialog.locator(f'[name="{name}"]').count() == 0, f"{name} input rendered"
    port = dialog.locator('input[name="port"]')
    assert port.is_visible(), "Port must stay on the form (the Test button of 3.3.2 needs it)"
    assert port.get_attribute("placeholder") == PLACEHOLDERS["port"]
    dialog.get_by_role("heading", name="Add Connection").click()  # no focus ring in the screenshot
    standard_shot = dialog.screenshot()

    # Extra fields: every one with its label and help text, in order; enums as selects.
    _open_section(dialog, "Extra Fields")
    for name, (label, description, _schema) in EXTRA_FIELDS.items():
        group = _field_group(dialog, name)
        assert group.count() == 1, f"extra field {name} not rendered"
        assert group.locator("label").inner_text().replace("*", "").strip() == label
        assert group.locator('[data-part="helper-text"]').inner_text().strip() == description
    for name, label in REQUIRED_EXTRA_LABELS.items():
        assert _field_group(dialog, name).locator("label").inner_text().replace("*", "").strip() == label
    # Required markers: Airflow's own indicator on exactly the required fields, and their inputs
    # flagged required (the form will not save while they are empty).
    for name in EXTRA_FIELDS:
        group = _field_group(dialog, name)
        marked = group.locator(".chakra-field__requiredIndicator").count() == 1
        assert marked == (name in REQUIRED), f"{name}: required marker shown={marked}"
        if name in REQUIRED:
            assert group.locator(f'input[name="element_{name}"]').get_attribute("required") is not None
    for name in ("tenant", "system_id", "base_url"):
        text_input = dialog.locator(f'input[name="element_{name}"]')
        assert text_input.is_visible(), f"{name} input not shown"
        assert text_input.is_editable(), f"{name} is not an editable text input"

    region = dialog.get_by_role("combobox", name="Region")
    region.click()
    options = page.get_by_role("option").all_inner_texts()
    assert options == REGIONS, f"Region choices: {options}"
    page.get_by_role("option", name=REGIONS[0], exact=True).click()  # closes the menu, keeps the value
    dialog.get_by_role("heading", name="Add Connection").click()  # no focus ring in the screenshot

    # Each select shows its default, as the schema says.
    shown = {
        name: dialog.locator(f'input[name="element_{name}"]').input_value()
        for name, (_, _, schema) in EXTRA_FIELDS.items()
        if "enum" in schema
    }
    expected = {
        name: str(schema.get("default") or "")
        for name, (_, _, schema) in EXTRA_FIELDS.items()
        if "enum" in schema
    }
    extra_shot = dialog.screenshot()
    _compose(page, [standard_shot, extra_shot], SCREENSHOT)
    assert shown == expected, (
        f"select defaults shown {shown}, expected {expected} (a masked default shows empty)"
    )


def test_connection_saved_from_the_form_is_accepted_by_the_hook(
    api_server: ApiServer, page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = "qmatic_ui_check"
    dialog = _open_add_dialog(page, api_server)
    dialog.get_by_label("Connection ID").fill(conn_id)
    _choose_type(page, dialog, HOOK_NAME)
    _open_section(dialog, "Standard Fields")
    dialog.get_by_label("Client ID", exact=True).fill("ui-client")
    dialog.get_by_label("Client Secret", exact=True).fill("ui-client-secret")
    _open_section(dialog, "Extra Fields")
    dialog.get_by_role("combobox", name="Region").click()
    page.get_by_role("option", name="us-east-1", exact=True).click()
    dialog.locator('input[name="element_tenant"]').fill("isb")
    dialog.locator('input[name="element_system_id"]').fill("sys-1")
    dialog.get_by_role("button", name="Save").click()
    dialog.wait_for(state="hidden")

    got = api_server.airflow("connections", "get", conn_id, "-o", "json")
    assert got.returncode == 0, got.stderr[-3000:]
    (conn,) = json.loads(got.stdout)
    extra = conn["extra_dejson"]
    assert conn["conn_type"] == CONN_TYPE
    assert conn["login"] == "ui-client"
    assert (extra["region"], extra["tenant"], extra["system_id"]) == ("us-east-1", "isb", "sys-1")
    assert MASKED not in extra.values(), f"the form saved a masked placeholder into Extra: {extra}"

    # The hook reads the saved values (given here as an env connection: same values, no DB lookup).
    from airflow_provider_qmatic.hooks.qmatic import QmaticHook

    monkeypatch.setenv(
        f"AIRFLOW_CONN_{conn_id.upper()}",
        json.dumps(
            {"conn_type": CONN_TYPE, "login": conn["login"], "password": conn["password"], "extra": extra}
        ),
    )
    config = QmaticHook(conn_id).config
    assert (config.client_id, config.region, config.tenant, config.system_id) == (
        "ui-client",
        "us-east-1",
        "isb",
        "sys-1",
    )
    assert config.base_url == "https://api.us-east-1.qmatic.io"


def test_test_button_on_a_saved_connection_shows_the_providers_message(
    api_server: ApiServer, page: Any, qmatic_sandbox_server: SandboxServer
) -> None:
    """Save a connection to a running sandbox from the form, press the row's Test button.

    The form's Port (the sandbox's port, as the Base URL has it) is what lets Airflow 3.3.2
    reuse the stored secret. The test runs in the API server's process, so the sandbox it reaches is
    this one, and the message shown is QmaticHook.test_connection's.
    """
    from airflow import __version__ as airflow_version

    sandbox = qmatic_sandbox_server
    sandbox.reset()
    conn_id = "qmatic_ui_test_button"
    dialog = _open_add_dialog(page, api_server)
    dialog.get_by_label("Connection ID").fill(conn_id)
    _choose_type(page, dialog, HOOK_NAME)
    _open_section(dialog, "Standard Fields")
    dialog.get_by_label("Client ID", exact=True).fill(sandbox.client_id)
    dialog.get_by_label("Client Secret", exact=True).fill(sandbox.client_secret)
    dialog.locator('input[name="port"]').fill(str(sandbox.port))
    _open_section(dialog, "Extra Fields")
    dialog.locator('input[name="element_base_url"]').fill(sandbox.base_url)
    save = dialog.get_by_role("button", name="Save")
    assert not save.is_enabled(), "Save must wait for the required Tenant and System ID"
    dialog.locator('input[name="element_tenant"]').fill(sandbox.tenant)
    assert not save.is_enabled(), "Save must wait for the required System ID"
    dialog.locator('input[name="element_system_id"]').fill(sandbox.system_id)
    save.click()
    dialog.wait_for(state="hidden")

    message = _press_test(page, api_server, conn_id)
    assert "Test Connection Successful" in message, message
    # The provider's own message, naming the base URL in use (not the pre-filled region).
    assert f"Connected to Qmatic Cloud (base URL {sandbox.base_url}, tenant {sandbox.tenant}" in message
    assert "eu-west-1" not in message
    assert "scopes granted: book, reschedule, cancel; 3 branches listed" in message
    assert sandbox.stats()["api_requests"] == 1
    assert sandbox.client_secret not in page.content()

    # The same connection without a port, as the form saves one when Port is left empty.
    portless = "qmatic_ui_no_port"
    added = api_server.airflow("connections", "add", portless, "--conn-json", sandbox.conn_json)
    assert added.returncode == 0, added.stderr[-3000:]
    message = _press_test(page, api_server, portless)
    expected_failure = PORTLESS_TEST_FAILS.get(airflow_version)
    if expected_failure is None:
        assert "Test Connection Successful" in message, f"Airflow {airflow_version}: {message}"
    else:
        assert "Test Connection Failed" in message, f"Airflow {airflow_version}: {message}"
        assert expected_failure in message, f"Airflow {airflow_version}: {message}"
