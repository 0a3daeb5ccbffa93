"""Benchmark 3: the client's own CPU time per API call.

The same GET (``list_branches``: token reused, a small JSON list back) is sent N times by a fresh
process, and ``time.process_time()`` of that process is read around the loop, so only the client's
CPU counts: the sandbox runs in another process with no limits and no latency. Variants:

* baseline: a bare ``requests.Session`` with the same headers, decoding the JSON;
* ``QmaticClient`` without a limiter (the bulk runner's threads, scripts), returning models;
* ``QmaticClient`` as the hook builds it: ``request_budget(config)`` (a token bucket in a file
  shared by the host's processes, taken under ``flock`` per request) at a limit too high to wait;
* ``QmaticClient.call`` without a limiter: the request core alone, the JSON not turned into models.

Rounds alternate the variants; the figure is the median over rounds of CPU microseconds per call.
"""

from __future__ import annotations

import json
import tempfile

from benchmarks.common import Row, Section, fmt, median, ratio, run_child, sandbox_process

CALLS = 1000
WARMUP = 50
ROUNDS = 5

CHILD = r"""
import json, sys, time
variant, values, calls, warmup = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if variant == "bare":
    import base64, requests
    from airflow_provider_qmatic.api import contract  # the paths only: a table of plain data
    session = requests.Session()
    basic = base64.b64encode(f"{values['client_id']}:{values['client_secret']}".encode()).decode()
    token = session.post(
        values["base_url"] + contract.TOKEN.path,
        headers={"Authorization": f"Basic {basic}", "X-ACCOUNT": values["tenant"]},
        data={"grant_type": "client_credentials", "scope": values.pop("scope")},
        timeout=30,
    ).json()["access_token"]
    headers = {
        "Authorization": f"Bearer {token}",
        "X-TENANT-ID": values["system_id"],
        "Accept": "application/json",
        "Accept-Language": "en_US",
        "User-Agent": "bench",
    }
    url = values["base_url"] + contract.BRANCHES.path

    def once():
        response = session.get(url, headers=headers, timeout=(10, 30))
        response.raise_for_status()
        return response.json()
else:
    from airflow_provider_qmatic.client.client import QmaticClient
    from airflow_provider_qmatic.state import request_budget
    from airflow_provider_qmatic.api.contract import BOOK_SCOPES
    from airflow_provider_qmatic.config import ClientConfig
    values.pop("scope")
    config = ClientConfig.from_values(**values)
    limiter = request_budget(config) if variant == "hook" else None
    client = QmaticClient(config, limiter=limiter)
    if variant == "core":
        once = lambda: client.call("branches", BOOK_SCOPES)
    else:
        once = client.list_branches
for _ in range(warmup):
    once()
cpu, wall = time.process_time(), time.perf_counter()
for _ in range(calls):
    once()
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
print(json.dumps({"cpu_us": cpu / calls * 1e6, "wall_us": wall / calls * 1e6}))
"""

LIMITER_CHILD = r"""
import json, tempfile, time
from airflow_provider_qmatic.state.budget import RateLimiter
out = {}
with tempfile.TemporaryDirectory() as shared:
    for name, where in (("memory", None), ("shared_file", shared)):
        limiter = RateLimiter(1_000_000, burst=5, shared_dir=where, key="bench")
        for _ in range(200):
            limiter.acquire()
        n = 5000
        cpu = time.process_time()
        for _ in range(n):
            limiter.acquire()
            limiter.on_success()
        out[name] = (time.process_time() - cpu) / n * 1e6
print(json.dumps(out))
"""

VARIANTS = ("bare", "plain", "hook", "core")
LABELS = {
    "plain": "QmaticClient, no limiter",
    "hook": "QmaticClient + request_budget (as the hook)",
    "core": "QmaticClient.call (no models), no limiter",
}


def run() -> Section:
    from airflow_provider_qmatic.api.contract import Scope, scope_string

    section = Section("overhead")
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    wall: dict[str, list[float]] = {v: [] for v in VARIANTS}
    with (
        sandbox_process("--requests-per-minute", "0", "--token-requests-per-second", "0") as box,
        tempfile.TemporaryDirectory(prefix="qmatic-bench-overhead-") as cache_dir,
    ):
        for _ in range(ROUNDS):
            for variant in VARIANTS:
                values = box.config_values(scope=scope_string(frozenset({Scope.BOOK})))
                if variant == "hook":
                    values.update(
                        credential_cache="file", credential_cache_dir=cache_dir, requests_per_minute=1_000_000
                    )
                else:
                    values.update(credential_cache="memory")
                result = run_child(CHILD, variant, json.dumps(values), str(CALLS), str(WARMUP))
                cpu[variant].append(result["cpu_us"])
                wall[variant].append(result["wall_us"])
    limiter = [run_child(LIMITER_CHILD) for _ in range(3)]
    base_cpu = median(cpu["bare"])
    for variant in ("plain", "hook", "core"):
        ours = median(cpu[variant])
        section.rows.append(
            Row(
                "3 client overhead",
                f"CPU µs per call: {LABELS[variant]}",
                fmt(ours, 0),
                fmt(base_cpu, 0),
                ratio(ours, base_cpu),
                f"wall µs per call {median(wall[variant]):.0f} vs {median(wall['bare']):.0f}",
            )
        )
    section.details.append(
        f"Client overhead: {CALLS} GET list_branches calls per process after {WARMUP} warm-up calls, "
        f"{ROUNDS} rounds, median; CPU per round (µs/call): "
        + "; ".join(f"{v}: {', '.join(f'{x:.0f}' for x in cpu[v])}" for v in VARIANTS)
    )
    section.details.append(
        "The limiter alone (RateLimiter.acquire() + on_success(), 5,000 times, no waiting, median of 3 "
        f"processes): {median([r['memory'] for r in limiter]):.0f} µs per request in memory, "
        f"{median([r['shared_file'] for r in limiter]):.0f} µs with the state in a shared file "
        "(open, flock, read, rewrite per request), which is what the hook's request_budget adds."
    )
    return section


if __name__ == "__main__":
    for row in run().rows:
        print(row)
