"""``python -m airflow_provider_qmatic.sandbox``: the same as the ``qmatic-sandbox`` command."""

from __future__ import annotations

import sys

from airflow_provider_qmatic.sandbox.cli import main

sys.exit(main())
