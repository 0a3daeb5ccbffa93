"""Child processes of the bulk tests (run as ``python bulk_child.py <mode> <json args>``).

``book``: run a bulk booking with the runner, as a task process would (killed by a test).
``run``: the same for any action (``args["action"]``); with ``redis_journal`` (``{"name", "lease_s"}``)
the journal is in the Redis of the config's ``redis_conn_id``, with ``results`` a results file.
``one_call``: build a client from the connection values and make one API call, then print how many
token requests this process sent (the 32-process test).

Only the provider's plain-Python modules are imported (no Airflow), as in ``@task`` code.
"""

from __future__ import annotations

import json
import sys


def main() -> None:
    mode, raw = sys.argv[1], sys.argv[2]
    args = json.loads(raw)
    from airflow_provider_qmatic.config import ClientConfig

    config = ClientConfig.from_values(**args["config"])
    if mode in ("book", "run"):
        from airflow_provider_qmatic.bulk.runner import BulkRunner
        from airflow_provider_qmatic.client.client import build_client

        client = build_client(config)
        action = args.get("action", "book")
        journal = args.get("journal")
        if "redis_journal" in args:
            from airflow_provider_qmatic.state._redis import redis_for
            from airflow_provider_qmatic.state.journal import RedisJournal

            spec = args["redis_journal"]
            journal = RedisJournal(redis_for(config.redis_conn_id), spec["name"], lease_s=spec["lease_s"])
        BulkRunner(client, journal_path=journal, attempt=1).run(
            action, args["rows"], results_path=args.get("results")
        )
    elif mode == "one_call":
        from airflow_provider_qmatic.api.contract import BOOK_SCOPES
        from airflow_provider_qmatic.client.client import QmaticClient

        with QmaticClient(config) as client:
            client.call("branches", BOOK_SCOPES)
            print(json.dumps({"token_requests": client.token_requests}))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
