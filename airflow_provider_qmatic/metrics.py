"""Metric names, and the session hook that counts what Qmatic answered.

The client knows no Airflow, so it reports counts to a sink, ``(name, count) -> None``, as it
reports secrets to ``on_secret``; the hook and the bulk operators pass
:func:`airflow_provider_qmatic.compat.incr_stat`, which counts them in Airflow's ``Stats``
(StatsD or OpenTelemetry, as the deployment configures). ``docs/metrics.md`` lists the names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import requests

MetricSink = Callable[[str, int], None]

API_REQUESTS = "qmatic.api.requests"
TOKEN_REQUESTS = "qmatic.token.requests"
RATE_LIMITED = "qmatic.rate_limited"
BULK_ROWS = "qmatic.bulk.rows.{outcome}"


def count_responses(session: requests.Session, sink: MetricSink) -> None:
    """Count every answer ``session`` receives: API or token request, and each 429.

    A response hook sees every request the client sends, the token request included, in one place;
    a request that got no answer at all is not counted (the task's error reports it). The token
    request is the only one sent with Basic credentials; API calls carry a Bearer token.
    """

    def on_response(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        scheme = str(response.request.headers.get("Authorization", "")).partition(" ")[0]
        sink(TOKEN_REQUESTS if scheme == "Basic" else API_REQUESTS, 1)
        if response.status_code == 429:
            sink(RATE_LIMITED, 1)

    session.hooks["response"].append(on_response)
