"""Concurrent requests: the store's lock keeps capacity exact."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from sandbox_helpers import Api, reserve_body

from airflow_provider_qmatic.api import contract
from airflow_provider_qmatic.sandbox import SandboxServer


def test_eight_threads_race_for_a_slot_of_capacity_two(sandbox: SandboxServer, slot: dict[str, Any]) -> None:
    apis = [Api(sandbox) for _ in range(8)]
    barrier = threading.Barrier(8)
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def attempt(api: Api) -> None:
        barrier.wait()
        response = api.post(contract.RESERVE.path, json=reserve_body(slot))
        with lock:
            results.append((response.status_code, response.json().get("error", "")))

    threads = [threading.Thread(target=attempt, args=(api,)) for api in apis]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert Counter(results) == {(201, ""): 2, (409, "slot_unavailable"): 6}
    assert len(sandbox.appointments(status="RESERVED")) == 2


def test_many_bookings_in_parallel_with_a_large_capacity(sandbox: SandboxServer) -> None:
    sandbox.configure(slot_capacity=10_000)
    slot = sandbox.free_slots(limit=1)[0]
    apis = [Api(sandbox) for _ in range(4)]

    def work(api: Api) -> None:
        for _ in range(25):
            api.book(slot)

    threads = [threading.Thread(target=work, args=(api,)) for api in apis]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(sandbox.appointments(status="CONFIRMED")) == 100
    assert sandbox.free_slots(slot["branchId"], slot["serviceId"], limit=1)[0]["available"] == 10_000 - 100
