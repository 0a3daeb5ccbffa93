"""Benchmarks of airflow-provider-qmatic, each figure side by side with a baseline from the same run.

Run them all with ``make bench`` (``.venv/bin/python -m benchmarks.run``); the table is printed and
written to ``benchmarks/results.md``. ``docs/performance.md`` explains each figure and its baseline.
One benchmark alone: ``python -m benchmarks.run --only tokens`` (names: tokens, bulk, overhead,
parse, memory, resume, cluster, waiting).

Every benchmark talks to the local sandbox in a separate process (``python -m
airflow_provider_qmatic.sandbox``), so the server's CPU is never counted as the client's, and every
count of requests is the sandbox's own (``/_sandbox/stats``):

* ``tokens``   -- K task processes (1, 8, 32) of one connection started at once: token requests and
  time until all have a token, this provider (shared file token cache) vs the naive per-process
  client-credentials fetch of a hand-written HttpHook DAG (retry on 429 after 1 s).
* ``bulk``     -- bulk booking against a scaled-up limit with 20-50 ms latency: share of the limit
  used, requests per booked row, 429s; the bulk runner vs a naive loop (fresh token per row, no
  pacing, retry on 429 after Retry-After).
* ``overhead`` -- client CPU time per API call: QmaticClient (without a limiter, and as the hook
  builds it with the shared limiter) vs a bare ``requests.Session`` doing the same calls.
* ``parse``    -- DAG parse cost: importing the operator modules after ``airflow.sdk``, and parsing
  each example DAG file, vs an empty DAG file.
* ``memory``   -- peak RSS of the bulk runner's validation and planning on 10,000 rows vs 100, and of
  full runs on 1,000 rows vs 100.
* ``resume``   -- requests per booked row of a clean bulk booking, and of one SIGKILLed at ~30% and
  retried: the retry looks up only rows in flight vs every unfinished row (the old behaviour).
* ``cluster``  -- 1, 2 and 4 worker processes acting as separate hosts (own credential cache
  directories) running bulk jobs for one tenant: share of the limit used, 429s, token requests, and
  a single booking's time while the bulk jobs saturate the budget; Redis vs host-local state, and
  the bulk budget's reserve for single calls vs none. Needs ``redis-server`` (``make bench``
  installs it).
* ``waiting``  -- K slot sensors (1, 10, 50) deferred on one tenant, time scaled 60 to 1: requests a
  minute as a share of the limit, this provider's triggers (waiting budget, growing interval) vs
  naive sensors polling every interval; and the time from a slot opening to each seeing it.
"""
