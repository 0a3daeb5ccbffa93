"""A real CeleryExecutor cluster on one machine, for ``make test-cluster`` only.

:func:`running_cluster` starts, in this order, every process on 127.0.0.1 with a free port and its data
in one temporary directory:

- ``redis-server`` (no persistence): the Celery broker, and the provider's cluster-wide state;
- PostgreSQL (``initdb`` + ``postgres``, as the ``postgres`` user when the tests run as root, since
  PostgreSQL refuses to run as root): Airflow's metadata database and Celery's result backend;
- ``qmatic-sandbox`` at a scaled-down limit, so the budget is saturated within seconds;
- ``airflow db migrate``, then ``airflow api-server``, ``scheduler``, ``dag-processor`` and
  ``triggerer`` (the slot sensor's deferred waits and the asset watcher run there; a host of its own,
  as the workers below);
- two ``airflow celery worker``s standing in for two hosts: each with its own ``HOME``, its own
  token cache / rate-limit / bulk-journal directory (``QMATIC_TOKEN_CACHE_DIR``), its own Celery
  hostname, and its own Airflow host name (``tests/cluster/cluster_host.py``).

Each process runs in its own process group and is killed with it at teardown, also when a test
failed or the start-up timed out; every wait is bounded. Logs stay in the temporary directory while
the session runs and the tail of each is printed when something fails.

Used by ``test_celery_cluster.py`` only, which is skipped unless ``QMATIC_CLUSTER_TESTS=1`` (set by
``make test-cluster``, which also installs the Debian packages and the cluster virtualenv). A plain
module, not the directory's ``conftest.py``: the Redis tests beside it have their own fixtures.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

ENABLE_VAR = "QMATIC_CLUSTER_TESTS"
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # the console scripts of this venv (airflow, qmatic-sandbox)
# The sandbox's limit and the connection's, scaled down from Qmatic's 100 per minute: below what
# ONE worker host can send on a busy 2-core machine (about 70-90 requests a minute were measured),
# so two hosts that each pace to the whole limit do overshoot it, and "no 429" means something.
REQUESTS_PER_MINUTE = 30
WORKER_CONCURRENCY = 4
WORKERS = ("worker-a", "worker-b")
STARTUP_TIMEOUT = 180.0
# A worker killed with SIGKILL stops heartbeating; the scheduler fails (and so retries) its tasks
# after this many seconds instead of Airflow's default 300. Generous against a loaded 2-core machine.
HEARTBEAT_TIMEOUT = 40
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
CLIENT_ID = "cluster-client"
TENANT = "cluster"


def cluster_tests_enabled() -> bool:
    return os.environ.get(ENABLE_VAR) == "1"


def cluster_wide_state() -> bool:
    """Whether the connection keeps the token cache, budget and journal in Redis (issue 13).

    Yes, unless ``QMATIC_CLUSTER_STATE=host-local`` runs the same cluster with each worker's state
    on its own host, to see what Redis changes (the cluster-wide checks then fail, as expected).
    """
    return os.environ.get("QMATIC_CLUSTER_STATE", "redis") != "host-local"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except AssertionError:  # a dead process, a run that ended: no point in waiting longer
            raise
        except Exception as exc:  # a service still starting answers with all kinds of errors
            result, last = None, exc
        else:
            last = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{what}: not after {timeout:.0f} s" + (f" (last error: {last!r})" if last else "")
            )
        time.sleep(interval)


@dataclass
class Proc:
    """A started process, its own process group, and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    stop_signal: int = signal.SIGTERM

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def session(self) -> list[int]:
        """Live (not zombie) processes of its session: it and all it started. Airflow's task
        processes take process groups of their own, so a signal to the group misses them, but they
        stay in the session. (Their environment cannot tell either: ``setproctitle`` writes the
        process title over it.)"""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z" and int(fields[3]) == self.popen.pid:
                found.append(int(stat.parent.name))
        return found

    def kill_session(self) -> None:
        """Power it off: freeze every process of the session (SIGSTOP), then SIGKILL them all.

        Freezing first makes the kill one instant, as a power cut is: no process outlives another
        (a task process outliving its supervisor would fail its task on a broken log pipe, or run
        on unseen, which a dead host does not).
        """
        frozen: set[int] = set()
        deadline = time.monotonic() + 10
        while new := set(self.session()) - frozen:  # a process may fork while the sweep runs
            if time.monotonic() > deadline:
                raise AssertionError(f"processes of {self.name} kept appearing: {sorted(new)}")
            for pid in new:
                with suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGSTOP)
            frozen |= new
        for pid in frozen:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        while survivors := self.session():
            if time.monotonic() > deadline:
                raise AssertionError(f"processes of {self.name} survived SIGKILL: {survivors}")
            time.sleep(0.1)

    def stop(self, grace: float = 10.0, *, signalled: bool = False) -> None:
        """``stop_signal`` to the whole group (unless ``signalled`` already), SIGKILL what is left
        of the session after ``grace`` seconds."""
        if self.alive():
            if not signalled:
                self.kill_group(self.stop_signal)
            with suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace)
        # Children (Celery's pool, task processes) may outlive the leader: kill the session anyway.
        self.kill_session()
        with suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


@dataclass
class Cluster:
    """What the tests need to reach the cluster, and every process in it."""

    work: Path
    env: dict[str, str]
    pg_port: int
    redis_url: str
    sandbox_url: str
    api_url: str
    redis_backends: bool
    procs: dict[str, Proc] = field(default_factory=dict)
    killed: set[str] = field(default_factory=set)

    @property
    def pg_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.pg_port} user=postgres dbname=airflow"

    @property
    def pg_url(self) -> str:
        """``user@host:port/db``, for SQLAlchemy and Celery URLs."""
        return f"postgres@127.0.0.1:{self.pg_port}/airflow"

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        stop_signal: int = signal.SIGTERM,
        **kwargs: Any,
    ) -> Proc:
        log_path = self.work / "logs" / f"{name}.log"
        log: IO[bytes] = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: teardown reaches every child
                **kwargs,
            )
        finally:
            log.close()
        proc = Proc(name, popen, log_path, stop_signal)
        self.procs[name] = proc
        return proc

    def airflow(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """The Airflow CLI with the cluster's configuration (the scheduler's view, no worker's)."""
        return subprocess.run(
            [str(BIN / "airflow"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query against Airflow's metadata database."""
        import psycopg2

        with psycopg2.connect(self.pg_dsn, connect_timeout=10) as conn, conn.cursor() as cur:
            cur.execute(query, params)
            return list(cur.fetchall()) if cur.description else []

    def check_alive(self) -> None:
        """Fail with the log tail of any process that died (except one the test killed)."""
        for proc in self.procs.values():
            if not proc.alive() and proc.name not in self.killed:
                raise AssertionError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")

    def logs(self) -> str:
        return "\n".join(f"===== {p.name} (last lines)\n{p.tail(2500)}" for p in self.procs.values())


# ------------------------------------------------------------------------------------ services
def _postgres_bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if not found:
        pytest.fail(
            f"PostgreSQL's {name} not found: run `make test-cluster` (it installs postgresql)", pytrace=False
        )
    return found


def _postgres_user() -> dict[str, Any]:
    """Popen arguments that drop root to the ``postgres`` user (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail(
            "running as root but there is no `postgres` user: install the postgresql package", pytrace=False
        )
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _start_postgres(cluster: Cluster) -> None:
    as_user = _postgres_user()
    pg = cluster.work / "pg"
    data, sockets = pg / "data", pg / "run"
    sockets.mkdir(parents=True)
    if as_user:
        for path in (pg, sockets):
            os.chown(path, as_user["user"], as_user["group"])
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
    init = subprocess.run(
        [
            _postgres_bin("initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        env=env,
        cwd=pg,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **as_user,
    )
    if init.returncode != 0:
        pytest.fail(f"initdb failed:\n{init.stdout[-2000:]}\n{init.stderr[-2000:]}", pytrace=False)
    cluster.start(
        "postgres",
        [
            _postgres_bin("postgres"),
            "-D",
            str(data),
            "-h",
            "127.0.0.1",
            "-p",
            str(cluster.pg_port),
            "-k",
            str(sockets),
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ],
        env,
        stop_signal=signal.SIGINT,  # "fast" shutdown; SIGTERM would wait for every client to leave
        cwd=pg,
        **as_user,
    )

    def create_database() -> bool:
        import psycopg2

        conn = psycopg2.connect(
            cluster.pg_dsn.replace("dbname=airflow", "dbname=postgres"), connect_timeout=5
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("CREATE DATABASE airflow")
        finally:
            conn.close()
        return True

    wait_for("PostgreSQL accepting connections", create_database, 60)


def _start_redis(cluster: Cluster, port: int) -> None:
    redis_dir = cluster.work / "redis"
    redis_dir.mkdir()
    server = shutil.which("redis-server")
    if not server:
        pytest.fail(
            "redis-server not found: run `make test-cluster` (it installs redis-server)", pytrace=False
        )
    cluster.start(
        "redis",
        [
            server,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(redis_dir),
        ],
        {"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )

    def ping() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    wait_for("redis-server answering PING", ping, 30)


def _start_sandbox(cluster: Cluster, port: int, secret: str) -> None:
    from airflow_provider_qmatic.sandbox.server import SandboxAdmin

    env = {**_base_env(), "QMATIC_CLUSTER_SECRET": secret}
    cluster.start(
        "sandbox",
        [
            str(BIN / "qmatic-sandbox"),
            "--port",
            str(port),
            "--seed",
            "0",
            "--client-env",
            f"{CLIENT_ID}:QMATIC_CLUSTER_SECRET:{TENANT}",
            "--requests-per-minute",
            str(REQUESTS_PER_MINUTE),
            "--slot-capacity",
            "1000",
            "--weeks",
            "2",
        ],
        env,
    )
    admin = SandboxAdmin(cluster.sandbox_url)
    try:
        wait_for("qmatic-sandbox healthy", admin.health, 60)
    finally:
        admin.close()


# ------------------------------------------------------------------------------------ Airflow
def _base_env() -> dict[str, str]:
    """This process's environment without any Airflow or Qmatic setting of the test session."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW", "QMATIC_", "XDG_RUNTIME_DIR", "PYTEST"))
    }


def _airflow_env(cluster: Cluster, api_port: int, secret: str) -> dict[str, str]:
    home = cluster.work / "airflow-home"
    home.mkdir()
    db = cluster.pg_url
    from airflow_provider_qmatic.sandbox.connection import connection_extra
    from airflow_provider_qmatic.sandbox.settings import SandboxClient

    client = SandboxClient(client_id=CLIENT_ID, client_secret=secret, tenant=TENANT)
    extra = {**connection_extra(client, cluster.sandbox_url), "requests_per_minute": REQUESTS_PER_MINUTE}
    if cluster.redis_backends:
        extra.update({"credential_cache": "redis", "redis_conn_id": "redis_default"})
    env = _base_env()
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__DAGS_FOLDER": str(HERE / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db}",
            "AIRFLOW__CELERY__BROKER_URL": f"{cluster.redis_url}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://{db}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            # A deferred task past its timeout is failed by the scheduler's check (default every 15 s).
            "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW_CONN_QMATIC_DEFAULT": json.dumps(
                {"conn_type": "qmatic", "login": CLIENT_ID, "password": secret, "extra": extra}
            ),
            # The provider's state in db 1, apart from the broker's (db 0). A URI's path is not the
            # db for RedisHook, its extra is.
            "AIRFLOW_CONN_REDIS_DEFAULT": f"{cluster.redis_url}?db=1",
            "QMATIC_CLUSTER_DATA": str(cluster.work / "data"),
            # The scheduler, API server and CLI are a third "host": their own token cache directory.
            "QMATIC_TOKEN_CACHE_DIR": str(cluster.work / "control" / "qmatic"),
            "HOME": str(cluster.work / "control" / "home"),
        }
    )
    return env


def _host_env(cluster: Cluster, name: str) -> dict[str, str]:
    """The environment of a process on a "host" of its own (a worker, the triggerer)."""
    host = cluster.work / name
    (host / "home").mkdir(parents=True)
    return {
        **cluster.env,
        "HOME": str(host / "home"),
        "QMATIC_TOKEN_CACHE_DIR": str(host / "qmatic"),
        "QMATIC_CLUSTER_HOST": name,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "cluster_host.hostname",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH", "")])),
    }


def start_worker(cluster: Cluster, name: str) -> Proc:
    return cluster.start(
        name,
        [
            str(BIN / "airflow"),
            "celery",
            "worker",
            "--celery-hostname",
            f"{name}@%h",
            "--concurrency",
            str(WORKER_CONCURRENCY),
        ],
        _host_env(cluster, name),
    )


def _start_airflow(cluster: Cluster) -> None:
    migrated = cluster.airflow("db", "migrate", timeout=400)
    if migrated.returncode != 0:
        pytest.fail(
            f"airflow db migrate failed:\n{migrated.stdout[-3000:]}\n{migrated.stderr[-3000:]}", pytrace=False
        )
    airflow = str(BIN / "airflow")
    cluster.start(
        "api-server",
        [
            airflow,
            "api-server",
            "--host",
            "127.0.0.1",
            "--port",
            cluster.api_url.rsplit(":", 1)[1],
            "--workers",
            "1",
        ],
        cluster.env,
    )
    cluster.start("scheduler", [airflow, "scheduler"], cluster.env)
    cluster.start("dag-processor", [airflow, "dag-processor"], cluster.env)
    cluster.start("triggerer", [airflow, "triggerer"], _host_env(cluster, "triggerer"))
    for name in WORKERS:
        start_worker(cluster, name)

    import requests

    def api_healthy() -> bool:
        cluster.check_alive()
        return requests.get(f"{cluster.api_url}/api/v2/monitor/health", timeout=5).status_code == 200

    wait_for("airflow api-server healthy", api_healthy, STARTUP_TIMEOUT, interval=1)

    def workers_ready() -> bool:
        cluster.check_alive()
        # Celery logs "<name>@<host> ready." once the worker consumes from the broker.
        return all("ready." in cluster.procs[name].tail(20000) for name in WORKERS)

    wait_for("both Celery workers ready", workers_ready, STARTUP_TIMEOUT, interval=1)
    wait_for(
        "the triggerer running",
        lambda: (
            cluster.check_alive()
            or cluster.sql("SELECT 1 FROM job WHERE job_type = 'TriggererJob' AND state = 'running'")
        ),
        STARTUP_TIMEOUT,
        interval=1,
    )


@contextmanager
def running_cluster() -> Iterator[Cluster]:
    """The whole cluster, up; on exit (also after a failure) every process is killed, the data gone."""
    work = Path(tempfile.mkdtemp(prefix="qmatic-cluster-"))
    # PostgreSQL runs as another user and must reach its directory: traversable, not listable.
    work.chmod(0o711)
    (work / "logs").mkdir()
    (work / "data").mkdir()
    (work / "control").mkdir()
    pg_port, redis_port, sandbox_port, api_port = (free_port() for _ in range(4))
    secret = secrets.token_urlsafe(24)
    cluster = Cluster(
        work=work,
        env={},
        pg_port=pg_port,
        redis_url=f"redis://127.0.0.1:{redis_port}",
        sandbox_url=f"http://127.0.0.1:{sandbox_port}",
        api_url=f"http://127.0.0.1:{api_port}",
        redis_backends=cluster_wide_state(),
    )
    started = time.monotonic()
    try:
        _start_redis(cluster, redis_port)
        _start_postgres(cluster)
        _start_sandbox(cluster, sandbox_port, secret)
        cluster.env = _airflow_env(cluster, api_port, secret)
        _start_airflow(cluster)
        print(
            f"\ncluster up in {time.monotonic() - started:.0f} s (redis backends: {cluster.redis_backends})"
        )
        yield cluster
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        # Workers first (they hold tasks), then Airflow's services, then the stores they use; every
        # process is told in that order at once, so their shutdowns overlap instead of queueing.
        order = [
            *WORKERS,
            "triggerer",
            "scheduler",
            "dag-processor",
            "api-server",
            "sandbox",
            "redis",
            "postgres",
        ]
        procs = [
            cluster.procs[name]
            for name in sorted(cluster.procs, key=lambda n: order.index(n) if n in order else -1)
        ]
        for proc in procs:
            proc.kill_group(proc.stop_signal)
        for proc in procs:
            proc.stop(signalled=True)
        shutil.rmtree(work, ignore_errors=True)
