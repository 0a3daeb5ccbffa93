"""A local emulator of the Qmatic Cloud Appointments API (Part B of the contract).

Import-light: the web framework is loaded only when a server starts, and nothing here imports
Airflow, so the sandbox also runs standalone (``qmatic-sandbox`` or ``python -m
airflow_provider_qmatic.sandbox``).
"""

from __future__ import annotations

from airflow_provider_qmatic.sandbox.server import SandboxAdmin, SandboxServer
from airflow_provider_qmatic.sandbox.settings import SandboxClient, SandboxSettings

__all__ = ["SandboxAdmin", "SandboxClient", "SandboxServer", "SandboxSettings"]
