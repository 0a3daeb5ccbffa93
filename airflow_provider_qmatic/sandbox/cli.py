"""``qmatic-sandbox``: run the emulator in the foreground and print how to point Airflow at it.

The server runs in a background thread while the main thread waits for SIGINT or SIGTERM, so
either stops it cleanly with exit code 0 (uvicorn in the main thread would re-raise the signal).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import date
from types import FrameType
from typing import Any

from airflow_provider_qmatic import DEFAULT_CONN_ID
from airflow_provider_qmatic.config import is_loopback
from airflow_provider_qmatic.sandbox.connection import connection_json, env_var_name
from airflow_provider_qmatic.sandbox.settings import (
    ANSWER_SHAPES,
    COMMIT_THEN_FAIL_MODES,
    ENDPOINTS,
    FAULT_BODIES,
    MAX_BRANCHES,
    RATE_LIMIT_ALGORITHMS,
    SEARCH_ANSWERS,
    TENANT_KNOBS,
    SandboxClient,
    SandboxSettings,
    parse_scopes,
)

DEFAULT_PORT = 8765
# A secret file is read up to this size; a secret is a line of text, not a document.
_MAX_SECRET_FILE = 64 * 1024

# The flags that add a client, and what their second field holds.
SECRET_FIELDS = {"--client": "SECRET", "--client-env": "VARIABLE", "--client-file": "PATH"}

CLIENT_HELP = """\
a client the sandbox accepts, as ID:SECRET:TENANT[:SCOPES] (repeatable; the first client given by
--client, --client-env or --client-file is the connection qmatic_default). The ID is everything
before the first ':' (an ID has no ':'); TENANT and SCOPES are read from the right, so the SECRET
may contain ':'. SCOPES are short names or full scope strings separated by ',' or spaces (default:
all three). Because scopes are recognised by their names, a tenant literally called book,
reschedule or cancel needs explicit scopes. A secret on the command line is visible to other users
(ps): prefer --client-env or --client-file."""


def parse_client(text: str, flag: str = "--client") -> SandboxClient:
    """``ID:SECRET:TENANT[:SCOPES]`` -> client; see ``CLIENT_HELP`` for the splitting rule.

    With ``--client-env`` the second field names an environment variable holding the secret, with
    ``--client-file`` a file holding it; errors name the flag, the client and the variable or file,
    never the secret.
    """
    client_id, field, tenant, scopes_text = _split_client(text, flag)
    secret = _read_secret(flag, client_id, field)
    if scopes_text is None:
        return SandboxClient(client_id=client_id, client_secret=secret, tenant=tenant)
    return SandboxClient(
        client_id=client_id, client_secret=secret, tenant=tenant, scopes=parse_scopes(scopes_text)
    )


def _split_client(text: str, flag: str) -> tuple[str, str, str, str | None]:
    """``(id, second field, tenant, scopes text or None)``: the id up to the first ':', the tenant
    and the scopes from the right, the second field (which may hold ':') in between."""
    form = f"{flag} must be ID:{SECRET_FIELDS[flag]}:TENANT[:SCOPES]"
    client_id, sep, rest = text.partition(":")
    if not sep or not client_id:
        raise ValueError(form)
    parts = rest.split(":")
    scopes_text: str | None = None
    if len(parts) >= 3 and _looks_like_scopes(parts[-1]):
        scopes_text = parts.pop()
    if len(parts) < 2:
        raise ValueError(f"{form} (tenant missing)")
    tenant = parts.pop()
    return client_id, ":".join(parts), tenant, scopes_text


def _read_secret(flag: str, client_id: str, field: str) -> str:
    """The secret itself (``--client``), or read from the variable or file ``field`` names."""
    if flag == "--client-env":
        secret = os.environ.get(field, "")
        if not secret:
            raise ValueError(f"{flag} {client_id}: the environment variable {field!r} is not set or empty")
        return secret
    if flag == "--client-file":
        try:
            with open(os.path.expanduser(field), encoding="utf-8") as file:
                secret = file.read(_MAX_SECRET_FILE).rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
            raise ValueError(f"{flag} {client_id}: cannot read the secret from {field!r}: {reason}") from None
        if not secret:
            raise ValueError(f"{flag} {client_id}: the secret file {field!r} is empty")
        return secret
    return field


def _looks_like_scopes(text: str) -> bool:
    try:
        return bool(text.strip()) and bool(parse_scopes(text))
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qmatic-sandbox",
        description="Local emulator of the Qmatic Cloud Appointments API, for developing and "
        "testing Airflow DAGs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on (loopback only unless --allow-remote)")
    add("--port", type=int, default=DEFAULT_PORT, help="port; 0 picks a free one (printed)")
    add(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback --host (the sandbox has no real security)",
    )
    add("--seed", type=int, default=0, help="seed of ids, data, the demo client's secret and faults")
    add(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="a Host name to answer besides loopback names (repeatable). A specific --host is "
        "answered anyway; behind --host 0.0.0.0 list the names clients use. Any other name is "
        "refused with 421 (DNS-rebinding protection)",
    )
    add(
        "--client",
        dest="clients",
        action="append",
        default=[],
        type=_tagged("--client"),
        metavar="ID:SECRET:TENANT[:SCOPES]",
        help=CLIENT_HELP,
    )
    add(
        "--client-env",
        dest="clients",
        action="append",
        type=_tagged("--client-env"),
        metavar="ID:VARIABLE:TENANT[:SCOPES]",
        help="a client like --client whose secret is read from the environment variable VARIABLE "
        "(not shown by ps, not printed in the banner)",
    )
    add(
        "--client-file",
        dest="clients",
        action="append",
        type=_tagged("--client-file"),
        metavar="ID:PATH:TENANT[:SCOPES]",
        help="a client like --client whose secret is the first line of the file PATH "
        "(not shown by ps, not printed in the banner)",
    )
    add(
        "--system-id",
        action="append",
        default=[],
        metavar="[TENANT=]ID",
        help="a tenant's system id (X-TENANT-ID); without TENANT= it is the first client's tenant. "
        "Default: a GUID derived from the tenant name",
    )
    add("--conn-id", default=DEFAULT_CONN_ID, help="Airflow connection id of the first client")
    add(
        "--catalogue",
        action="store_true",
        help="print the seeded branches and services with their ids (for DAG params) and exit",
    )
    data = parser.add_argument_group("seed data")
    data.add_argument("--branches", type=int, default=3, help=f"number of branches (1-{MAX_BRANCHES})")
    data.add_argument("--weeks", type=int, default=4, help="weeks of time slots")
    data.add_argument(
        "--start-date", type=date.fromisoformat, default=None, help="first day of slots (default tomorrow)"
    )
    data.add_argument("--slot-capacity", type=int, default=2, help="people per time slot")
    limits = parser.add_argument_group("limits and lifetimes")
    limits.add_argument(
        "--requests-per-minute",
        type=float,
        default=100.0,
        help="API requests per minute per tenant (0 = off)",
    )
    limits.add_argument("--api-burst", type=int, default=10, help="token-bucket size of the API limit")
    limits.add_argument("--rate-limit-algorithm", choices=RATE_LIMIT_ALGORITHMS, default="token_bucket")
    limits.add_argument("--token-requests-per-second", type=float, default=1.0, help="per client (0 = off)")
    limits.add_argument("--token-burst", type=int, default=1)
    limits.add_argument(
        "--no-retry-after", action="store_true", help="send 429s without a Retry-After header"
    )
    limits.add_argument(
        "--token-lifetime", type=float, default=3600.0, help="access token lifetime in seconds"
    )
    limits.add_argument("--reservation-hold", type=float, default=900.0, help="reservation hold in seconds")
    faults = parser.add_argument_group("fault injection (seeded)")
    faults.add_argument("--fail-rate", type=float, default=0.0, help="fraction of API requests answered 500")
    faults.add_argument("--unavailable-rate", type=float, default=0.0, help="fraction answered 503")
    faults.add_argument(
        "--drop-rate", type=float, default=0.0, help="fraction whose connection is closed unanswered"
    )
    faults.add_argument(
        "--commit-then-fail-rate", type=float, default=0.0, help="fraction of writes stored, then failed"
    )
    faults.add_argument("--commit-then-fail-mode", choices=COMMIT_THEN_FAIL_MODES, default="both")
    faults.add_argument("--latency-ms", type=float, default=0.0, help="added latency per API request")
    faults.add_argument(
        "--latency-jitter-ms", type=float, default=0.0, help="plus uniform random latency up to this"
    )
    faults.add_argument(
        "--fault-endpoints",
        default="",
        help=f"comma-separated endpoints to aim faults at (default all): {', '.join(ENDPOINTS)}",
    )
    faults.add_argument(
        "--faults-on-token", action="store_true", help="apply faults to the token endpoint too"
    )
    faults.add_argument(
        "--fault-body", choices=FAULT_BODIES, default="json", help="body of injected 500/503s"
    )
    faults.add_argument(
        "--fault-seed", type=int, default=None, help="seed of the fault generator (default --seed)"
    )
    answers = parser.add_argument_group("answers and paths")
    answers.add_argument(
        "--answer-shape",
        choices=ANSWER_SHAPES,
        default="public",
        help="public: only the fields Qmatic's public examples show; rich: plus status, expiresAt, "
        "notes, durationMinutes, timeZone and the slots' available",
    )
    answers.add_argument(
        "--search-answer",
        choices=SEARCH_ANSWERS,
        default="array",
        help="object: a search with exactly one match answers the object itself (the public example)",
    )
    answers.add_argument(
        "--move-path",
        action="append",
        default=[],
        metavar="OPERATION=PATH",
        help="serve an operation at another path, e.g. reserve=/external/v2/reservations (repeatable); "
        "its old path then answers 404, as on a tenant where the guess is wrong",
    )
    tenant = parser.add_argument_group(
        "tenant configuration (every tenant; --tenant-config sets one tenant's own)"
    )
    tenant.add_argument(
        "--require-date-of-birth", action="store_true", help="a confirm without dateOfBirth is refused (400)"
    )
    tenant.add_argument(
        "--required-question",
        action="append",
        default=[],
        metavar="QUESTION_ID",
        help="a confirm must answer this information question (repeatable)",
    )
    tenant.add_argument(
        "--max-reservations",
        action="append",
        default=[],
        metavar="SERVICE=N",
        help="config.maxNumberOfReservations of a service (id or name; * for every service); a "
        "larger numberOfReservations is refused (409). 0: no cap (repeatable)",
    )
    tenant.add_argument(
        "--service-group",
        action="append",
        default=[],
        metavar="NAME=SERVICE[,SERVICE...]",
        help="a service group listed by GET /servicegroups, its services by id or name (repeatable)",
    )
    tenant.add_argument(
        "--service-combinations",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="service combinations on (a system setting; on by default); off, every "
        "/serviceCombination/ call is refused (400)",
    )
    tenant.add_argument(
        "--combination",
        action="append",
        default=[],
        metavar="BRANCH=SERVICE,SERVICE[,...]",
        help="configure a branch (id or name) for combinations: these of its services (ids or names) "
        "may share one appointment (repeatable; other branches then have none; without any, every "
        "branch's services may share one)",
    )
    tenant.add_argument(
        "--tenant-config",
        action="append",
        default=[],
        metavar="TENANT=JSON",
        help=f"one tenant's own configuration, a JSON object of {', '.join(TENANT_KNOBS)}, e.g. "
        'acme={"require_date_of_birth": true} (repeatable)',
    )
    return parser


def _pairs(flag: str, values: Sequence[str]) -> list[tuple[str, str]]:
    """``KEY=VALUE`` items of a repeatable flag; ValueError names the flag and the item."""
    out = []
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip() or not rest.strip():
            raise ValueError(f"{flag} {value!r}: write it as KEY=VALUE")
        out.append((key.strip(), rest.strip()))
    return out


def _tenant_knobs(args: argparse.Namespace) -> dict[str, Any]:
    """The answer, path and tenant-configuration settings of the command line."""
    caps: dict[str, int] = {}
    for service, number in _pairs("--max-reservations", args.max_reservations):
        if not number.isdigit():
            raise ValueError(f"--max-reservations {service}={number}: N must be a whole number (0: no cap)")
        caps[service] = int(number)
    groups, combinations = (
        {
            name: tuple(m.strip() for m in members.split(",") if m.strip())
            for name, members in _pairs(flag, values)
        }
        for flag, values in (("--service-group", args.service_group), ("--combination", args.combination))
    )
    per_tenant: dict[str, Any] = {}
    for tenant, text in _pairs("--tenant-config", args.tenant_config):
        try:
            per_tenant[tenant] = json.loads(text)
        except ValueError:
            raise ValueError(f"--tenant-config {tenant}=...: the value is not valid JSON") from None
    return {
        "answer_shape": args.answer_shape,
        "search_answer": args.search_answer,
        "moved_paths": dict(_pairs("--move-path", args.move_path)),
        "require_date_of_birth": args.require_date_of_birth,
        "required_questions": tuple(args.required_question),
        "max_reservations": caps,
        "service_groups": groups,
        "service_combinations": args.service_combinations,
        "combination_branches": combinations or None,
        "tenant_config": per_tenant,
    }


def settings_from_args(args: argparse.Namespace) -> SandboxSettings:
    """Settings from parsed arguments; ValueError names what is wrong."""
    clients = [parse_client(text, flag) for flag, text in args.clients]
    system_ids = _system_ids(args.system_id, clients)
    if system_ids:
        clients = [
            SandboxClient(c.client_id, c.client_secret, c.tenant, system_ids.get(c.tenant, ""), c.scopes)
            for c in clients
        ]
    knobs: dict[str, Any] = {
        "seed": args.seed,
        "branch_count": args.branches,
        "weeks": args.weeks,
        "start_date": args.start_date,
        "slot_capacity": args.slot_capacity,
        "requests_per_minute": args.requests_per_minute,
        "api_burst": args.api_burst,
        "rate_limit_algorithm": args.rate_limit_algorithm,
        "token_requests_per_second": args.token_requests_per_second,
        "token_burst": args.token_burst,
        "retry_after_header": not args.no_retry_after,
        "token_lifetime": args.token_lifetime,
        "reservation_hold": args.reservation_hold,
        "fail_rate": args.fail_rate,
        "unavailable_rate": args.unavailable_rate,
        "drop_rate": args.drop_rate,
        "commit_then_fail_rate": args.commit_then_fail_rate,
        "commit_then_fail_mode": args.commit_then_fail_mode,
        "latency_ms": args.latency_ms,
        "latency_jitter_ms": args.latency_jitter_ms,
        "fault_endpoints": tuple(args.fault_endpoints.replace(",", " ").split()),
        "faults_on_token": args.faults_on_token,
        "fault_body": args.fault_body,
        "fault_seed": args.fault_seed,
        **_tenant_knobs(args),
    }
    if not clients and system_ids:
        demo = SandboxSettings(seed=args.seed).client
        clients = [
            SandboxClient(demo.client_id, demo.client_secret, demo.tenant, system_ids.get(demo.tenant, ""))
        ]
    return SandboxSettings(clients=tuple(clients), **knobs)


def _system_ids(values: Sequence[str], clients: Sequence[SandboxClient]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        tenant, sep, system_id = value.rpartition("=")
        if not sep:
            tenant = clients[0].tenant if clients else "demo"
        if not system_id:
            raise ValueError(f"--system-id {value!r}: the system id is empty")
        out[tenant.strip().lower()] = system_id.strip()
    return out


def _tagged(flag: str) -> Callable[[str], tuple[str, str]]:
    """An argparse ``type`` that remembers which flag gave a client, keeping the clients in order."""

    def tag(text: str) -> tuple[str, str]:
        return flag, text

    return tag


def _hidden_secrets(tagged: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Client id -> what the banner shows instead of a secret that did not come from the command line."""
    out: dict[str, str] = {}
    for flag, text in tagged:
        if flag != "--client":
            client_id, where, _, _ = _split_client(text, flag)
            out[client_id] = f"<secret from ${where}>" if flag == "--client-env" else f"<secret in {where}>"
    return out


def _conn_id_for(index: int, client: SandboxClient, first_conn_id: str) -> str:
    if index == 0:
        return first_conn_id
    return "qmatic_" + re.sub(r"[^a-z0-9]+", "_", client.client_id.lower()).strip("_")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.allow_remote and not is_loopback(args.host):
        parser.error(
            f"--host {args.host} is not a loopback address; the sandbox has no real security and "
            "must not be reachable from other machines. Pass --allow-remote if you really mean it."
        )
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))

    if args.catalogue:
        print("\n".join(_catalogue(settings)))
        return 0

    from airflow_provider_qmatic.sandbox.server import SandboxServer

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    try:
        # Building the seed checks what the settings name in it (the services of caps and groups).
        server = SandboxServer(
            settings, host=args.host, port=args.port, allow_remote=True, allowed_hosts=args.allow_host
        )
    except ValueError as exc:
        parser.error(str(exc))
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server.start()
        except RuntimeError as exc:
            print(f"qmatic-sandbox: {exc}", file=sys.stderr)
            return 1
        _announce(server, args.conn_id, _hidden_secrets(args.clients))
        while not stop.wait(0.5):
            if not server.running:
                print("qmatic-sandbox: the server stopped unexpectedly", file=sys.stderr)
                return 1
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("qmatic-sandbox: stopped", flush=True)
    return 0


def _announce(server: Any, first_conn_id: str, hidden: dict[str, str]) -> None:
    """The banner. Secrets read from a variable or a file (``hidden``) are shown as placeholders."""
    s: SandboxSettings = server.settings
    out = [
        f"Qmatic sandbox listening on {server.base_url}",
        f"  seed {s.seed}, {s.branch_count} branches, {s.weeks} weeks of slots, "
        f"slot capacity {s.slot_capacity}, "
        f"{s.requests_per_minute:g} requests/minute, token lifetime {s.token_lifetime:g} s",
    ]
    out.append(f"  answers in the {s.answer_shape} shape (--answer-shape)")
    if s.moved_paths:
        moved = json.dumps(s.moved_paths)
        out.append(f"  moved paths (old paths answer 404); the connections below carry endpoints {moved}")
    if server.allowed_hosts:
        out.append(f"  answers for Host: loopback names, {', '.join(sorted(server.allowed_hosts))}")
    for c in s.clients:
        scopes = ", ".join(sorted(sc.name.lower() for sc in c.scopes))
        out.append(f"  client {c.client_id}  tenant {c.tenant}  system id {c.system_id}  scopes {scopes}")
    out.append("Point Airflow at it (paste into your shell with `export`, or into a .env file):")
    if hidden:
        out.append(
            "(secrets from --client-env/--client-file are not printed: put them in place of <secret ...>)"
        )
    for index, c in enumerate(s.clients):
        conn_id = _conn_id_for(index, c, first_conn_id)
        shown = dataclasses.replace(c, client_secret=hidden[c.client_id]) if c.client_id in hidden else c
        connection = connection_json(shown, server.base_url, s.moved_paths)
        out.append(f"{env_var_name(conn_id)}={shlex.quote(connection)}")
    out.extend(_catalogue(s))
    out.append(f"Introspection: {server.base_url}/_sandbox/stats  API docs: {server.base_url}/_sandbox/docs")
    out.append("Press Ctrl-C to stop.")
    print("\n".join(out), flush=True)


def _catalogue(settings: SandboxSettings) -> list[str]:
    """The branches and services a DAG's ``branch_id`` and ``service_id`` can name (fixed by the seed)."""
    from datetime import datetime, timezone

    from airflow_provider_qmatic.sandbox.seed import build_seed

    out = ["Branches and services (branch_id, service_id):"]
    for branch in build_seed(settings, datetime.now(timezone.utc)).branches:
        out.append(f"  branch {branch.id}  {branch.name} ({branch.time_zone})")
        out.extend(f"    service {sv.id}  {sv.name}, {sv.duration_minutes} min" for sv in branch.services)
    return out
