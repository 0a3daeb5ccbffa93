"""Apache Airflow provider for the Qmatic Cloud Appointments API."""

from __future__ import annotations

__version__ = "0.1.0"
# The connection id every hook, operator, sandbox fixture and CLI uses unless told otherwise.
DEFAULT_CONN_ID = "qmatic_default"
