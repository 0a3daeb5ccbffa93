"""Benchmark 8: K slot sensors waiting on one tenant. How many requests a minute do they spend
together, and how soon after a slot opens does each one see it?

Time is scaled 60 to 1 so that a run takes seconds: the tenant allows 6,000 requests a minute
(Qmatic's 100, times 60), sensors poll every second (60 s) and this provider's interval grows to 5 s
(300 s) while nothing changes. Shares of the limit and latencies in real seconds (times 60) read
the same as at full scale.

* this provider: K ``QmaticTimeslotTrigger`` in one event loop (a triggerer), the connection's
  file-backed budgets: each poll draws from the tenant's waiting budget (half its limit) and then
  from its budget;
* baseline: K naive sensors, each a thread that lists the slots every second with ``requests``
  and its own token, as a ``PythonSensor`` or ``HttpSensor`` with ``poke_interval=60`` would (a 429
  is a failed poke, tried again at the next interval).

The window watched is one full slot (the sandbox's capacity booked by others), so nobody stops
waiting during the rate measurement. For the latency figure the slot is then freed (one booking
cancelled) and each waiter's time to see it is taken.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import tempfile
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import requests

from airflow_provider_qmatic.api import contract
from benchmarks.common import PASSPORT, STOCKHOLM, Row, Sandbox, Section, fmt, median, ratio, sandbox_process

KS = (1, 10, 50)
# The share's cap alone: so many sensors that polling every interval, without growing it, would
# take twice the tenant's limit.
K_CAP = 200
SCALE = 60  # real seconds per benchmark second
LIMIT = 100 * SCALE  # requests a minute
POLL_S = 60 / SCALE
MAX_POLL_S = 300 / SCALE
MEASURE_S = 20.0  # 20 real minutes
CONN_ID = "qmatic_bench_waiting"
FLAGS = ("--requests-per-minute", str(LIMIT), "--token-requests-per-second", "0", "--slot-capacity", "2")


def _full_window(box: Sandbox) -> tuple[dict[str, Any], str]:
    """Book the first free slot to capacity; the query kwargs of its window and one booking's id."""
    from airflow_provider_qmatic.api.models import BookingRequest
    from airflow_provider_qmatic.client.client import QmaticClient
    from airflow_provider_qmatic.config import ClientConfig
    from airflow_provider_qmatic.flows import Flows

    slot = box.admin.free_slots(STOCKHOLM, PASSPORT, 1)[0]
    config = ClientConfig.from_values(**box.config_values(credential_cache="memory"))
    ids = []
    with QmaticClient(config) as client:
        for n in range(int(slot["available"])):
            request = BookingRequest.parse(
                {
                    "branch_id": STOCKHOLM,
                    "service_id": PASSPORT,
                    "start_time": slot["startTime"],
                    "end_time": slot["endTime"],
                    "customer": {
                        "personal_identifier": f"BENCHWAIT{n:04d}",
                        "first_name": "Wait",
                        "last_name": "Bench",
                        "email": f"wait{n}@example.com",
                    },
                }
            )
            ids.append(Flows(client).book(request).appointment_id)
    start = datetime.fromisoformat(slot["startTime"])
    window: dict[str, Any] = {
        "branch_id": STOCKHOLM,
        "service_id": PASSPORT,
        "date_from": start.date().isoformat(),
        "date_to": start.date().isoformat(),
        "time_from": start.strftime("%H:%M"),
        "time_to": (start + timedelta(minutes=1)).strftime("%H:%M"),
    }
    return window, ids[0]


def _cancel(box: Sandbox, appointment_id: str) -> None:
    from airflow_provider_qmatic.client.client import QmaticClient
    from airflow_provider_qmatic.config import ClientConfig

    config = ClientConfig.from_values(**box.config_values(credential_cache="memory"))
    with QmaticClient(config) as client:
        client.cancel(appointment_id)


def _ours(
    box: Sandbox, k: int, window: dict[str, Any], free: str | None, *, grow: bool = True
) -> tuple[float, list[float]]:
    """K triggers for MEASURE_S: timeslots requests per minute, and (``free``: cancel that booking
    at the end of the measurement) each trigger's seconds from the cancellation to its event.
    ``grow=False``: the interval stays at POLL_S (the waiting budget alone paces)."""
    from airflow_provider_qmatic.triggers.timeslots import QmaticTimeslotTrigger

    triggers = [
        QmaticTimeslotTrigger(
            **window,
            qmatic_conn_id=CONN_ID,
            poll_interval=POLL_S,
            max_poll_interval=MAX_POLL_S if grow else POLL_S,
        )
        for _ in range(k)
    ]
    seen: list[float] = []

    async def wait(trigger: QmaticTimeslotTrigger) -> None:
        async for _ in trigger.run():
            seen.append(time.monotonic())

    async def main() -> tuple[float, float]:
        tasks = [asyncio.ensure_future(wait(t)) for t in triggers]
        await asyncio.sleep(2.0)  # tokens fetched, first polls done: the steady state
        before, started = _timeslots(box), time.monotonic()
        await asyncio.sleep(MEASURE_S)
        rate = (_timeslots(box) - before) / (time.monotonic() - started) * 60
        opened = time.monotonic()
        if free is not None:
            await asyncio.to_thread(_cancel, box, free)
            await asyncio.wait(tasks, timeout=4 * MAX_POLL_S)
        for task in tasks:
            task.cancel()
        return rate, opened

    rate, opened = asyncio.run(main())
    return rate, [t - opened for t in seen]


def _naive(
    box: Sandbox, k: int, window: dict[str, Any], free: str | None, *, grow: bool = True
) -> tuple[float, list[float]]:
    """K threads, each listing the window every POLL_S with its own token, no budget."""
    basic = base64.b64encode(f"{box.client_id}:{box.client_secret}".encode()).decode()
    path = contract.TIMESLOTS.path.format(branch_id=STOCKHOLM, service_id=PASSPORT)
    stop, opened_at = threading.Event(), [0.0]
    seen: list[float] = []
    lock = threading.Lock()

    def sensor() -> None:
        session = requests.Session()
        token = session.post(
            box.base_url + contract.TOKEN.path,
            headers={"Authorization": f"Basic {basic}", "X-ACCOUNT": box.tenant},
            data={"grant_type": "client_credentials", "scope": contract.Scope.BOOK.value},
            timeout=30,
        )
        token.raise_for_status()
        token = token.json()["access_token"]
        headers = {"Authorization": f"Bearer {token}", "X-TENANT-ID": box.system_id}
        params = {"from": window["date_from"], "to": window["date_to"]}
        while not stop.is_set():
            answer = session.get(box.base_url + path, headers=headers, params=params, timeout=30)
            if answer.status_code == 429:  # as a poke that failed and is tried again next interval
                stop.wait(POLL_S)
                continue
            answer.raise_for_status()
            slots = answer.json()
            if any(s["startTime"][11:16] == window["time_from"] for s in slots):
                with lock:
                    seen.append(time.monotonic())
                return
            stop.wait(POLL_S)

    failures: list[BaseException] = []

    def guarded() -> None:
        try:
            sensor()
        except Exception as exc:  # a baseline that silently stopped would read as "no requests"
            failures.append(exc)

    threads = [threading.Thread(target=guarded, daemon=True) for _ in range(k)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    before, started = _timeslots(box), time.monotonic()
    time.sleep(MEASURE_S)
    rate = (_timeslots(box) - before) / (time.monotonic() - started) * 60
    opened_at[0] = time.monotonic()
    if free is not None:
        _cancel(box, free)
        for thread in threads:
            thread.join(timeout=4 * POLL_S)
    stop.set()
    if failures:
        raise RuntimeError(f"{len(failures)} naive sensors failed: {failures[0]!r}")
    return rate, [t - opened_at[0] for t in seen]


def _timeslots(box: Sandbox, status: str | None = None) -> int:
    """Listings the sandbox answered (with ``status`` only, e.g. ``"429"``)."""
    answers = box.stats()["requests"].get("timeslots", {})
    return int(sum(n for code, n in answers.items() if status is None or code == status))


def run() -> Section:
    section = Section("waiting")
    with tempfile.TemporaryDirectory(prefix="qmatic-bench-waiting-") as cache:
        os.environ["QMATIC_TOKEN_CACHE_DIR"] = cache
        for k in (*KS, K_CAP):
            grow = k != K_CAP
            results: dict[str, tuple[float, list[float], int]] = {}
            for name, measure in (("ours", _ours), ("naive", _naive)):
                with sandbox_process(*FLAGS) as box:
                    conn = {
                        "conn_type": "qmatic",
                        "login": box.client_id,
                        "password": box.client_secret,
                        "extra": {
                            "tenant": box.tenant,
                            "system_id": box.system_id,
                            "base_url": box.base_url,
                            "requests_per_minute": LIMIT,
                        },
                    }
                    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(conn)
                    window, booking = _full_window(box)
                    rate, seen = measure(box, k, window, booking if k == KS[1] else None, grow=grow)
                    results[name] = (rate, seen, _timeslots(box, "429"))
            (ours, ours_seen, ours_429), (naive, naive_seen, naive_429) = results["ours"], results["naive"]
            section.rows.append(
                Row(
                    "8 waiting sensors",
                    f"K={k}{'' if grow else ', interval not growing'}: requests/min as share of the limit",
                    f"{ours / LIMIT:.1%}",
                    f"{naive / LIMIT:.1%}",
                    ratio(ours, naive),
                    f"{ours / SCALE:.1f} vs {naive / SCALE:.1f} per real minute at 100/min; 429s {ours_429} vs "
                    f"{naive_429}; share cap 50%",
                )
            )
            if k == KS[1]:
                section.rows.append(
                    Row(
                        "8 waiting sensors",
                        f"K={k}: real s from a slot opening to the sensor seeing it (median)",
                        fmt(median(ours_seen) * SCALE, 0) if ours_seen else "none",
                        fmt(median(naive_seen) * SCALE, 0) if naive_seen else "none",
                        ratio(median(ours_seen), median(naive_seen)) if ours_seen and naive_seen else "n/a",
                        f"{len(ours_seen)} vs {len(naive_seen)} of {k} saw it; worst "
                        f"{max(ours_seen, default=0) * SCALE:.0f} s vs {max(naive_seen, default=0) * SCALE:.0f} s",
                    )
                )
    section.details.append(
        f"Waiting sensors: time scaled {SCALE} to 1 (limit {LIMIT}/min, polls every {POLL_S:g} s growing to "
        f"{MAX_POLL_S:g} s); {MEASURE_S:g} s measured after 2 s of warm-up; the only slot of the window "
        f"stays full, then one booking of it is cancelled (K=10). K={K_CAP}: the interval does not grow, "
        "so the waiting budget alone paces them; the naive sensors then meet the tenant's own limit."
    )
    return section
