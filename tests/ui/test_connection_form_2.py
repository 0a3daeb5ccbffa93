"""The Qmatic connection form and its Test button in Airflow 2.11's webserver, in a real browser.

``make test-ui`` runs this module with the Airflow 2.11 environment (.venv-compat): the conftest
starts ``airflow webserver`` with an admin user, and headless Chromium logs in, fills the classic form
(Admin -> Connections -> +) for a running sandbox, saves it and presses **Test** on the saved
connection's edit page. Airflow 2.11 has no Test button in the connection list, and its edit page does
not send the stored secret, so the first press must show the provider's advice (type the secret
again, or use the CLI) and the press after retyping the secret the provider's success message.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_qmatic.hooks.connection_fields import (
    EXTRA_FIELDS,
    PLACEHOLDERS,
    REQUIRED_MARK,
    is_required,
    legacy_label,
)
from airflow_provider_qmatic.sandbox import SandboxServer
from tests.ui.conftest import AIRFLOW_2, ENABLE_VAR, WEBSERVER_USER, ApiServer, ui_tests_enabled

pytestmark = [
    pytest.mark.ui,
    pytest.mark.skipif(
        not ui_tests_enabled(),
        reason=f"UI test: runs only under `make test-ui` (set {ENABLE_VAR}=1); "
        "it starts an Airflow webserver and headless Chromium",
    ),
    pytest.mark.skipif(
        not AIRFLOW_2, reason="Airflow 2.11's webserver; Airflow 3 is test_connection_form.py"
    ),
]

EXTRA = "extra__qmatic__"


def _log_in(page: Any, server: ApiServer) -> None:
    user, password = WEBSERVER_USER
    page.goto(f"{server.url}/login/", wait_until="networkidle")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("input[type=submit]")
    page.wait_for_load_state("networkidle")


def _alert_after_test(page: Any) -> str:
    """Press Test and wait for the answer, which connection_form.js writes into the page's alert."""
    alert = page.locator(".container .row .alert")
    before = alert.first.inner_text() if alert.count() else ""
    page.click("#test-connection")
    page.wait_for_function(
        """before => {
            const alert = document.querySelector('.container .row .alert');
            return alert !== null && alert.offsetParent !== null && alert.innerText !== before;
        }""",
        arg=before,
    )
    return str(alert.first.inner_text())


def test_form_and_test_button_on_a_saved_connection(
    api_server: ApiServer, page: Any, qmatic_sandbox_server: SandboxServer
) -> None:
    sandbox = qmatic_sandbox_server
    sandbox.reset()
    conn_id = "qmatic_ui_2"
    _log_in(page, api_server)
    page.goto(f"{api_server.url}/connection/add", wait_until="networkidle")
    # The type select is a select2 widget; set the underlying select as its change handler expects.
    page.evaluate("() => { $('#conn_type').val('qmatic').trigger('change'); }")

    # Labels (required ones marked), placeholders on standard and extra fields, Port shown, Host hidden.
    assert page.locator("label[for=login]").inner_text().strip() == "Client ID"
    assert page.locator("label[for=password]").inner_text().strip() == "Client Secret"
    for name in ("login", "password", "port"):
        assert page.locator(f"#{name}").is_visible(), f"{name} not shown"
        assert page.locator(f"#{name}").get_attribute("placeholder") == PLACEHOLDERS[name]
    assert not page.locator("#host").is_visible()
    for name, (label, _description, schema) in EXTRA_FIELDS.items():
        shown = page.locator(f"label[for={EXTRA}{name}]").inner_text().strip()
        assert shown == label + (REQUIRED_MARK if is_required(schema) else ""), f"{name}: {shown!r}"
        assert shown == legacy_label(name)
        assert page.locator(f"#{EXTRA}{name}").get_attribute("placeholder") == PLACEHOLDERS[name]
    assert {n for n, (_, _, schema) in EXTRA_FIELDS.items() if is_required(schema)} == {"tenant", "system_id"}

    page.fill("#conn_id", conn_id)
    page.fill("#login", sandbox.client_id)
    page.fill("#password", sandbox.client_secret)
    page.fill(f"#{EXTRA}tenant", sandbox.tenant)
    page.fill(f"#{EXTRA}system_id", sandbox.system_id)
    page.fill(f"#{EXTRA}base_url", sandbox.base_url)
    page.click("button[type=submit]:has-text('Save')")
    page.wait_for_load_state("networkidle")

    got = api_server.airflow("connections", "get", conn_id, "-o", "json")
    assert got.returncode == 0, got.stderr[-3000:]
    (saved,) = json.loads(got.stdout)
    assert saved["extra_dejson"]["base_url"] == sandbox.base_url

    # The saved connection's edit page: its password field is empty, so Test sends no secret.
    page.goto(f"{api_server.url}/connection/edit/{saved['id']}", wait_until="networkidle")
    assert page.locator("#password").input_value() == ""
    message = _alert_after_test(page)
    assert "client_secret is missing" in message, message
    assert "type the Client Secret again, then press Test" in message
    assert sandbox.stats()["token_requests"] == 0

    page.fill("#password", sandbox.client_secret)
    message = _alert_after_test(page)
    assert f"Connected to Qmatic Cloud (base URL {sandbox.base_url}, tenant {sandbox.tenant}" in message, (
        message
    )
    assert "3 branches listed" in message
    assert sandbox.stats()["api_requests"] == 1
