"""Run a single operator's first try in this process, stopping for a SIGKILL at one client call.

``python killed_try.py '<json>'`` with ``operator`` (a class name in ``operators.appointments``),
``arguments``, ``ti`` (dag_id, task_id, run_id, map_index), ``block`` (a ``QmaticClient`` method)
and ``ready`` (a path). When the try reaches ``block``, what came before it is journaled: the file
``ready`` is created and the call waits for the test to kill the process.
"""

from __future__ import annotations

import json
import sys
import time
from types import SimpleNamespace
from typing import Any

from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.operators import appointments


def main(args: dict[str, Any]) -> None:
    def wait_for_the_kill(*_args: Any, **_kwargs: Any) -> None:
        open(args["ready"], "w").close()
        time.sleep(120)

    setattr(QmaticClient, args["block"], wait_for_the_kill)
    operator = getattr(appointments, args["operator"])(task_id=args["ti"]["task_id"], **args["arguments"])
    operator.execute({"ti": SimpleNamespace(try_number=1, **args["ti"])})


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
