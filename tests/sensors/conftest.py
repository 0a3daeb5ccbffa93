"""The slot sensor's and trigger's tests share the operator tests' sandbox (a fresh seed-0 sandbox
with its connections in the environment) and add a way to fill a slot and free it again."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.operators.conftest import Sandbox, customer, sandbox, sandbox_clients  # noqa: F401  (the fixtures)


@dataclass
class FullSlot:
    """One slot booked to capacity, and the window (its day, its quarter hour) that holds only it."""

    slot: dict[str, Any]
    appointment_ids: list[str]
    window: dict[str, Any]

    def free_one_when_polled(self, box: Sandbox, polls: int = 2) -> threading.Thread:
        """Cancel one of the slot's bookings, as a customer who cancels, once the sandbox has
        answered ``polls`` more listings of time slots (all of them finding the slot full)."""
        seen = box.requests("timeslots")

        def cancel() -> None:
            deadline = time.monotonic() + 30
            while box.requests("timeslots") < seen + polls and time.monotonic() < deadline:
                time.sleep(0.02)
            box.client().cancel(self.appointment_ids[0])

        thread = threading.Thread(target=cancel, daemon=True)
        thread.start()
        return thread


@pytest.fixture
def full_slot(sandbox: Sandbox) -> FullSlot:  # noqa: F811
    """The first free slot, booked to capacity by two customers."""
    slot = sandbox.free_slots(limit=1)[0]
    ids = [sandbox.book_directly(customer(str(n)), slot)["appointment_id"] for n in range(slot["available"])]
    start = datetime.fromisoformat(slot["startTime"])
    window = {
        "branch_id": slot["branchId"],
        "service_id": slot["serviceId"],
        "date_from": start.date().isoformat(),
        "date_to": start.date().isoformat(),
        "time_from": start.strftime("%H:%M"),
        "time_to": (start + timedelta(minutes=1)).strftime("%H:%M"),
    }
    return FullSlot(slot, ids, window)


def paced_connection(box: Sandbox, monkeypatch: pytest.MonkeyPatch, conn_id: str, rpm: int) -> None:
    """``conn_id``: the sandbox's all-scopes connection declaring ``rpm`` requests a minute."""
    conn = json.loads(box.env["AIRFLOW_CONN_QMATIC_DEFAULT"])
    conn["extra"]["requests_per_minute"] = rpm
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
