"""Benchmark 2: bulk booking against a scaled-up limit with realistic latency.

The sandbox (own process) allows 6,000 API requests per minute (burst 10), the token endpoint its
documented 1 request per second, and answers API calls after 20-50 ms (20 ms plus up to 30 ms of
uniform jitter). Slots have room for everyone, so every row can be booked.

* this provider: ``BulkRunner`` over ``build_client`` (as the bulk operators build it: file
  token cache, limiter at the connection's ``requests_per_minute`` = 6,000), default concurrency
  (4 threads), on ``OURS_ROWS`` rows;
* baseline: a naive loop, one row after another, each with a fresh token (POST /oauth2/token),
  then reserve and confirm, no pacing, retrying any 429 after its Retry-After, on ``NAIVE_ROWS``
  rows (the token endpoint's 1/s makes it take about a second a row, so fewer rows keep the run
  short; every figure is a rate or a per-row count).

Figures: API requests per minute achieved, as a share of the limit; all requests the sandbox
received (token requests and refused ones included) per booked row; 429s served.
"""

from __future__ import annotations

import base64
import tempfile
import time
import uuid
from typing import Any

import requests

from airflow_provider_qmatic.api import contract
from benchmarks.common import Row, Sandbox, Section, fmt, ratio, sandbox_process

LIMIT = 6000
OURS_ROWS = 500
NAIVE_ROWS = 30
FLAGS = (
    "--requests-per-minute",
    str(LIMIT),
    "--token-requests-per-second",
    "1",
    "--latency-ms",
    "20",
    "--latency-jitter-ms",
    "30",
    "--slot-capacity",
    "1000000",
)


def booking_rows(box: Sandbox, n: int) -> list[dict[str, Any]]:
    slots = box.admin.free_slots(limit=50)
    rows = []
    for i in range(n):
        slot = slots[i % len(slots)]
        pid = f"BENCH{uuid.uuid4().hex[:12].upper()}{i:06d}"
        rows.append(
            {
                "branch_id": slot["branchId"],
                "service_id": slot["serviceId"],
                "start_time": slot["startTime"],
                "end_time": slot["endTime"],
                "personal_identifier": pid,
                "first_name": "Bench",
                "last_name": "Mark",
                "email": f"{pid.lower()}@example.com",
            }
        )
    return rows


def _measure(box: Sandbox, n: int, run: Any) -> dict[str, float]:
    box.reset()
    start = time.perf_counter()
    booked = run()
    elapsed = time.perf_counter() - start
    stats = box.stats()
    confirmed = stats["appointments"].get("CONFIRMED", 0)
    assert booked == confirmed == n, (booked, confirmed, n)
    api, tokens = stats["api_requests"], stats["token_requests"]
    limited = stats["rate_limited"]["api"] + stats["rate_limited"]["token"]
    return {
        "elapsed_s": elapsed,
        "api_per_min": api / elapsed * 60,
        "share": api / elapsed * 60 / LIMIT,
        "requests_per_row": (api + tokens) / n,
        "api_per_row": api / n,
        "token_per_row": tokens / n,
        "rate_limited": float(limited),
        "rate_limited_per_row": limited / n,
        "rows": float(n),
    }


def ours(box: Sandbox) -> dict[str, float]:
    from airflow_provider_qmatic.bulk.runner import SUCCEEDED, BulkRunner
    from airflow_provider_qmatic.client.client import build_client
    from airflow_provider_qmatic.config import ClientConfig

    rows = booking_rows(box, OURS_ROWS)
    with tempfile.TemporaryDirectory(prefix="qmatic-bench-bulk-") as cache_dir:
        config = ClientConfig.from_values(
            **box.config_values(
                credential_cache="file", credential_cache_dir=cache_dir, requests_per_minute=LIMIT
            )
        )

        def run() -> int:
            client = build_client(config)
            try:
                result = BulkRunner(client, progress_every_seconds=3600).book(rows)
            finally:
                client.close()
            return sum(1 for o in result.outcomes if o.status == SUCCEEDED)

        return _measure(box, OURS_ROWS, run)


def naive(box: Sandbox) -> dict[str, float]:
    from airflow_provider_qmatic.api.contract import Scope, scope_string

    rows = booking_rows(box, NAIVE_ROWS)
    basic = base64.b64encode(f"{box.client_id}:{box.client_secret}".encode()).decode()
    scope = scope_string(frozenset({Scope.BOOK}))

    def send(session: requests.Session, method: str, url: str, **kwargs: Any) -> requests.Response:
        while True:
            response = session.request(method, url, timeout=30, **kwargs)
            if response.status_code == 429:
                time.sleep(float(response.headers.get("Retry-After", "1")))
                continue
            response.raise_for_status()
            return response

    def run() -> int:
        session = requests.Session()
        booked = 0
        for row in rows:
            token = send(
                session,
                "POST",
                box.base_url + contract.TOKEN.path,
                headers={"Authorization": f"Basic {basic}", "X-ACCOUNT": box.tenant},
                data={"grant_type": "client_credentials", "scope": scope},
            ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}", "X-TENANT-ID": box.system_id}
            reservation = send(
                session,
                "POST",
                box.base_url + contract.RESERVE.path,
                headers=headers,
                json={
                    "branchId": row["branch_id"],
                    "serviceId": row["service_id"],
                    "timeSlot": {"startTime": row["start_time"], "endTime": row["end_time"]},
                    "numberOfReservations": 1,
                },
            ).json()
            send(
                session,
                "POST",
                box.base_url + contract.CONFIRM.path.format(appointment_id=reservation["appointmentId"]),
                headers=headers,
                json={
                    "customer": {
                        "personalIdentifier": row["personal_identifier"],
                        "firstName": row["first_name"],
                        "lastName": row["last_name"],
                        "email": row["email"],
                    }
                },
            )
            booked += 1
        session.close()
        return booked

    return _measure(box, NAIVE_ROWS, run)


def run() -> Section:
    section = Section("bulk")
    with sandbox_process(*FLAGS) as box:
        a = ours(box)
        b = naive(box)
    name = "2 bulk booking"
    section.rows += [
        Row(
            name,
            f"API requests/min as share of the {LIMIT:,}/min limit",
            f"{a['share']:.1%}",
            f"{b['share']:.1%}",
            ratio(a["share"], b["share"]),
            f"{a['api_per_min']:,.0f} vs {b['api_per_min']:,.0f} per minute; higher is better",
        ),
        Row(
            name,
            "requests sent per booked row (all endpoints)",
            fmt(a["requests_per_row"], 2),
            fmt(b["requests_per_row"], 2),
            ratio(a["requests_per_row"], b["requests_per_row"]),
            f"token requests per row {a['token_per_row']:.3f} vs {b['token_per_row']:.2f}",
        ),
        Row(
            name,
            "429s served (per 100 rows)",
            f"{a['rate_limited']:.0f} ({a['rate_limited_per_row'] * 100:.1f})",
            f"{b['rate_limited']:.0f} ({b['rate_limited_per_row'] * 100:.1f})",
            ratio(a["rate_limited_per_row"], b["rate_limited_per_row"]),
            "per row",
        ),
        Row(
            name,
            "rows booked per second",
            fmt(a["rows"] / a["elapsed_s"], 1),
            fmt(b["rows"] / b["elapsed_s"], 2),
            ratio(a["rows"] / a["elapsed_s"], b["rows"] / b["elapsed_s"]),
            f"{a['rows']:.0f} rows in {a['elapsed_s']:.1f} s vs "
            f"{b['rows']:.0f} rows in {b['elapsed_s']:.1f} s",
        ),
    ]
    return section


if __name__ == "__main__":
    for row in run().rows:
        print(row)
