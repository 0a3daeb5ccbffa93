"""Benchmark 1: K task processes of one connection on one host, started at once, each making one
API call. How many token requests reach Qmatic, and how long until every process has its token,
under the token endpoint's limit of 1 request per second (the sandbox's default)?

* this provider: ``QmaticClient`` as the hook builds it (``request_budget``), with the file token
  cache in a fresh private directory shared by the K processes: one of them fetches, the others
  wait on the cache's lock and read the token it stored;
* baseline: the naive per-process client-credentials fetch of a hand-written ``HttpHook`` DAG:
  each process POSTs to ``/oauth2/token`` itself with ``requests`` and, on 429, sleeps 1 s and
  tries again.

Each process imports everything and builds its client first, then waits for a "go" line on stdin,
so the K processes really start their requests together. Counts are the sandbox's own.

A second figure: two clients of ONE process (a book task's and a reschedule task's scopes, so
two token requests are needed) start together, ROUNDS times. This provider spaces token requests
per Qmatic host for the whole process; the baseline is two clients that each pace only themselves
(as this provider did before), which the token endpoint answers with a 429 for one of them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from typing import Any

from airflow_provider_qmatic.api import contract
from benchmarks.common import REPO, Row, Sandbox, Section, fmt, ratio, sandbox_process

KS = (1, 8, 32)
ROUNDS = 5

PROVIDER_CHILD = r"""
import json, sys, time
from airflow_provider_qmatic.client.client import QmaticClient
from airflow_provider_qmatic.state import request_budget
from airflow_provider_qmatic.config import ClientConfig
from airflow_provider_qmatic.api.contract import Scope
import airflow_provider_qmatic.api.models  # parsing the answer is not part of the token race

config = ClientConfig.from_values(**json.loads(sys.argv[1]))
client = QmaticClient(config, limiter=request_budget(config))
print("ready", flush=True)
sys.stdin.readline()
client.tokens.token(frozenset({Scope.BOOK}))
got_token = time.time()
client.list_branches()
print(json.dumps({"token_at": got_token, "done_at": time.time()}), flush=True)
"""

NAIVE_CHILD = r"""
import base64, json, sys, time
import requests
from airflow_provider_qmatic.api import contract

cfg = json.loads(sys.argv[1])
basic = base64.b64encode(f"{cfg['client_id']}:{cfg['client_secret']}".encode()).decode()
session = requests.Session()
print("ready", flush=True)
sys.stdin.readline()
while True:
    response = session.post(
        cfg["base_url"] + contract.TOKEN.path,
        headers={"Authorization": f"Basic {basic}", "X-ACCOUNT": cfg["tenant"]},
        data={"grant_type": "client_credentials", "scope": cfg["scope"]},
        timeout=30,
    )
    if response.status_code == 429:
        time.sleep(1)
        continue
    response.raise_for_status()
    token = response.json()["access_token"]
    break
got_token = time.time()
answer = session.get(
    cfg["base_url"] + contract.BRANCHES.path,
    headers={"Authorization": f"Bearer {token}", "X-TENANT-ID": cfg["system_id"]},
    timeout=30,
)
answer.raise_for_status()
answer.json()
print(json.dumps({"token_at": got_token, "done_at": time.time()}), flush=True)
"""


def _race(box: Sandbox, k: int, code: str, arg: str) -> dict[str, float]:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, arg],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        for _ in range(k)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            line = child.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(
                    f"a child did not start: {line!r} {child.stderr.read() if child.stderr else ''}"
                )
        box.reset()  # counters and tokens from zero, right before the start
        go = time.time()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        results: list[dict[str, Any]] = []
        for child in children:
            out, err = child.communicate(timeout=300)
            if child.returncode != 0:
                raise RuntimeError(f"a child failed: {err[-2000:]}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    stats = box.stats()
    return {
        "token_requests": float(stats["token_requests"]),
        "token_429": float(stats["rate_limited"]["token"]),
        "all_tokens_s": max(r["token_at"] for r in results) - go,
        "all_done_s": max(r["done_at"] for r in results) - go,
    }


def _two_clients(box: Sandbox, spaced: bool) -> dict[str, float]:
    """ROUNDS times: two clients of this process ask for a token (book, reschedule) at once."""
    import base64
    import threading

    import requests

    from airflow_provider_qmatic.api.contract import BOOK_SCOPES, RESCHEDULE_SCOPES, scope_string
    from airflow_provider_qmatic.client.client import QmaticClient
    from airflow_provider_qmatic.config import ClientConfig

    values = box.config_values(credential_cache="memory", requests_per_minute=6000)
    basic = base64.b64encode(f"{box.client_id}:{box.client_secret}".encode()).decode()

    def naive(scopes: frozenset[object]) -> None:
        # Paces only itself: one request, and on 429 one second's wait before the next.
        with requests.Session() as session:
            while True:
                response = session.post(
                    box.base_url + contract.TOKEN.path,
                    headers={"Authorization": f"Basic {basic}", "X-ACCOUNT": box.tenant},
                    data={"grant_type": "client_credentials", "scope": scope_string(scopes)},  # type: ignore[arg-type]
                    timeout=30,
                )
                if response.status_code != 429:
                    response.raise_for_status()
                    return
                time.sleep(1)

    token_requests = rate_limited = 0.0
    elapsed: list[float] = []
    for _ in range(ROUNDS):
        time.sleep(1.2)  # the endpoint's one request per second, free again
        box.reset()
        if spaced:
            clients = [QmaticClient(ClientConfig.from_values(**values)) for _ in range(2)]
            actions = [
                lambda c=c, s=s: c.tokens.token(s)
                for c, s in zip(clients, (BOOK_SCOPES, RESCHEDULE_SCOPES), strict=True)
            ]
        else:
            actions = [lambda s=s: naive(s) for s in (BOOK_SCOPES, RESCHEDULE_SCOPES)]
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=lambda a=a, b=barrier: (b.wait(), a())) for a in actions]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        elapsed.append(time.perf_counter() - start)
        stats = box.stats()
        token_requests += stats["token_requests"]
        rate_limited += stats["rate_limited"]["token"]
    return {"token_requests": token_requests, "token_429": rate_limited, "max_s": max(elapsed)}


def run() -> Section:
    from airflow_provider_qmatic.api.contract import Scope, scope_string

    section = Section("tokens")
    # The API limit is off here: only the token endpoint's 1 request/second is under test.
    with sandbox_process("--requests-per-minute", "0", "--token-requests-per-second", "1") as box:
        for k in KS:
            with tempfile.TemporaryDirectory(prefix="qmatic-bench-tokens-") as cache_dir:
                # requests_per_minute of the connection raised so that pacing API calls does not
                # blur the token figure (the shared limiter is still in the path, as the hook builds it).
                values = box.config_values(
                    credential_cache="file", credential_cache_dir=cache_dir, requests_per_minute=6000
                )
                ours = _race(box, k, PROVIDER_CHILD, json.dumps(values))
            naive_cfg = {**box.config_values(), "scope": scope_string(frozenset({Scope.BOOK}))}
            naive = _race(box, k, NAIVE_CHILD, json.dumps(naive_cfg))
            section.rows.append(
                Row(
                    "1 token stampede",
                    f"K={k}: token requests",
                    fmt(ours["token_requests"], 0),
                    fmt(naive["token_requests"], 0),
                    ratio(ours["token_requests"], naive["token_requests"]),
                    f"429s: {ours['token_429']:.0f} vs {naive['token_429']:.0f}",
                )
            )
            section.rows.append(
                Row(
                    "1 token stampede",
                    f"K={k}: s until all K have a token",
                    fmt(ours["all_tokens_s"], 3),
                    fmt(naive["all_tokens_s"], 3),
                    ratio(ours["all_tokens_s"], naive["all_tokens_s"]),
                    f"all K calls done: {ours['all_done_s']:.3f} s vs {naive['all_done_s']:.3f} s",
                )
            )
        ours2, naive2 = _two_clients(box, spaced=True), _two_clients(box, spaced=False)
        section.rows.append(
            Row(
                "1 token stampede",
                f"2 clients in 1 process, {ROUNDS} starts: token 429s",
                fmt(ours2["token_429"], 0),
                fmt(naive2["token_429"], 0),
                ratio(ours2["token_429"], naive2["token_429"]),
                f"token requests {ours2['token_requests']:.0f} vs {naive2['token_requests']:.0f}; "
                f"slowest start {ours2['max_s']:.2f} s vs {naive2['max_s']:.2f} s",
            )
        )
    return section


if __name__ == "__main__":
    for row in run().rows:
        print(row)
