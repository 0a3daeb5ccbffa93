"""``[operators] default_deferrable`` as the slot sensor reads it (``compat.default_deferrable``): a
deployment's setting decides, from the environment or from airflow.cfg; where it set nothing, and in
an airflow.cfg as Airflow generates it, the sensor defers.

Each test gives Airflow a fresh configuration parser (its built-in defaults only) that has read a real
airflow.cfg in a temporary directory, as Airflow does at start: the global one is left untouched.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest

from airflow_provider_qmatic.compat import default_deferrable
from airflow_provider_qmatic.sensors.timeslots import QmaticTimeslotAvailableSensor
from tests.operators.conftest import PASSPORT, STOCKHOLM

pytestmark = pytest.mark.airflow

ENV = "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"


def generated_operators_section() -> str:
    """The ``[operators]`` section as Airflow writes it into the airflow.cfg it generates at first
    start (the arguments ``write_default_airflow_configuration_if_needed`` passes)."""
    from airflow.configuration import conf

    text = io.StringIO()
    conf.write(
        text,
        section="operators",
        include_sources=False,
        include_env_vars=True,
        include_providers=True,
        extra_spacing=True,
        only_defaults=True,
        show_values=True,  # Airflow 3's generator passes it; 2.11's writes values anyway
    )
    return text.getvalue()


@pytest.fixture
def airflow_cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str | None], Path]:
    """Start Airflow's configuration afresh from an airflow.cfg holding ``text`` (None: no file)."""
    from airflow import configuration

    monkeypatch.delenv(ENV, raising=False)

    def use(text: str | None) -> Path:
        path = tmp_path / "airflow.cfg"
        parser = configuration.AirflowConfigParser()
        if text is not None:
            path.write_text(text)
            parser.read(str(path))
        monkeypatch.setattr(configuration, "conf", parser)
        monkeypatch.setattr(configuration, "AIRFLOW_CONFIG", str(path))
        return path

    return use


def test_the_generated_section_holds_airflows_default_line() -> None:
    """What the rule below recognises is what Airflow writes, on this Airflow line."""
    from airflow_provider_qmatic.compat import _GENERATED_DEFAULT_DEFERRABLE

    assert _GENERATED_DEFAULT_DEFERRABLE in generated_operators_section()


def test_defers_where_the_deployment_set_nothing(airflow_cfg: Callable[[str | None], Path]) -> None:
    airflow_cfg(None)
    assert default_deferrable() is True
    airflow_cfg("[core]\nload_examples = False\n")
    assert default_deferrable() is True


def test_defers_with_the_airflow_cfg_airflow_generated(airflow_cfg: Callable[[str | None], Path]) -> None:
    """Its ``default_deferrable = false`` is Airflow's default copied, not a choice."""
    from airflow import configuration

    airflow_cfg(generated_operators_section())
    assert (
        configuration.conf.getboolean("operators", "default_deferrable") is False
    )  # what Airflow itself reads
    assert default_deferrable() is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A file written by hand or by a deployment tool (the Helm chart renders only what was set).
        ("[operators]\ndefault_deferrable = false\n", False),
        ("[operators]\ndefault_deferrable = False\n", False),
        ("[operators]\ndefault_deferrable = true\n", True),
    ],
)
def test_a_setting_in_airflow_cfg_decides(
    airflow_cfg: Callable[[str | None], Path], text: str, expected: bool
) -> None:
    airflow_cfg(text)
    assert default_deferrable() is expected


@pytest.mark.parametrize(("edited", "expected"), [("False", False), ("true", True), ("0", False)])
def test_an_edited_generated_line_decides(
    airflow_cfg: Callable[[str | None], Path], edited: str, expected: bool
) -> None:
    generated = generated_operators_section()
    airflow_cfg(generated.replace("default_deferrable = false", f"default_deferrable = {edited}"))
    assert default_deferrable() is expected


@pytest.mark.parametrize(("value", "expected"), [("false", False), ("True", True)])
def test_the_environment_decides_over_any_file(
    airflow_cfg: Callable[[str | None], Path], monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    for text in (None, generated_operators_section(), f"[operators]\ndefault_deferrable = {not expected}\n"):
        airflow_cfg(text)
        monkeypatch.setenv(ENV, value)
        assert default_deferrable() is expected, text


def test_a_value_set_at_run_time_decides(airflow_cfg: Callable[[str | None], Path]) -> None:
    """``conf.set`` (what Airflow's own ``conf_vars`` test helper does) is a setting like a file's."""
    from airflow import configuration

    airflow_cfg("[core]\nload_examples = False\n")
    if not configuration.conf.has_section("operators"):  # as conf_vars does (2.11 needs it)
        configuration.conf.add_section("operators")
    configuration.conf.set("operators", "default_deferrable", "False")
    assert default_deferrable() is False


def test_the_sensor_follows_the_setting_and_its_argument_overrides_it(
    airflow_cfg: Callable[[str | None], Path],
) -> None:
    ids = {"branch_id": STOCKHOLM, "service_id": PASSPORT}
    for text, expected in (
        (generated_operators_section(), True),
        ("[operators]\ndefault_deferrable = 0\n", False),
    ):
        airflow_cfg(text)
        assert QmaticTimeslotAvailableSensor(task_id="t", **ids).deferrable is expected
        assert (
            QmaticTimeslotAvailableSensor(task_id="u", deferrable=not expected, **ids).deferrable
            is not expected
        )
