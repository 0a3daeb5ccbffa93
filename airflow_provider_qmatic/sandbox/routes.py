"""Which endpoint a request is for, from its method and path (the path table of ``paths.py``).

The middleware needs the endpoint's name before the web framework routes the request: to count it,
to pick the rate limit (token endpoint or API) and to aim faults at it.
"""

from __future__ import annotations

import re

from airflow_provider_qmatic import paths

# (method, path template, endpoint name); order matters only for identical patterns.
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("POST", paths.TOKEN, "token"),
    ("GET", paths.BRANCHES, "branches"),
    ("GET", paths.SERVICES, "services"),
    ("GET", paths.TIMESLOTS, "timeslots"),
    ("POST", paths.RESERVATIONS, "reserve"),
    ("DELETE", paths.RESERVATION, "release"),
    ("POST", paths.SEARCH, "search"),
    ("POST", paths.CONFIRM, "confirm"),
    ("PUT", paths.RESCHEDULE, "reschedule"),
    ("GET", paths.APPOINTMENT, "get"),
    ("DELETE", paths.APPOINTMENT, "cancel"),
)


def _compile(template: str) -> re.Pattern[str]:
    pattern = re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template))
    return re.compile(pattern + "/?")


_COMPILED: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (method, _compile(template), name) for method, template, name in ROUTES
)


def classify(method: str, path: str) -> str | None:
    """The endpoint name (see ``settings.ENDPOINTS``), or None for anything else."""
    for route_method, pattern, name in _COMPILED:
        if route_method == method and pattern.fullmatch(path):
            return name
    return None
