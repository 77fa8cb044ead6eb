"""The production-like stack the benchmarks measure, on free ports of this machine, started and stopped as one.

- a fresh PostgreSQL database (postgresql+psycopg://postgres@127.0.0.1:5432/<fresh name>) when one answers, else
  SQLite in a temporary folder (BENCH_DATABASE=sqlite forces it); or (`database="own-postgres"`) a PostgreSQL server
  of the stack's own, which a test may stop and start (`OwnPostgres`); migrated with `flask db upgrade`
- a redis-server of its own (no persistence), the PTI simulator (gunicorn, one process, threads: its state lives
  in the process) and the Storeganise simulator, both serving the load profile SIM_SITES names
- the product: gunicorn (`dashboard:create_app()`, or another entry point that wraps it; 4 workers), N RQ workers
  (`flask --app dashboard worker`) and, when asked, the cron scheduler (`flask --app dashboard cron`: relay every
  15 s)
- the business loaded into the mirror with every site's PTI address pointing at the PTI simulator

StackConfig says which of these a benchmark needs (webhook_ack: only the database, Redis and gunicorn). Every
process runs in its own process group and is stopped (TERM, then KILL) when the `with` block ends, however it
ends; the database is dropped and the temporary folder removed. Traffic stays on 127.0.0.1.

The chaos tests (tests/chaos/) break the stack while it works: `pause`/`resume` a process (SIGSTOP/SIGCONT),
`kill` one with everything it forked (SIGKILL) and `respawn` it, restart the stack's own PostgreSQL; `dashboard()`
logs in to the real web process as a demo user to read what it shows meanwhile.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import redis
from cryptography.fernet import Fernet
from rq import Queue, Worker
from sqlalchemy import func, select

from dashboard import create_app
from dashboard.demo import load_business
from dashboard.engine.intent import push_site
from dashboard.extensions import db
from dashboard.jobqueue import QUEUE_NAMES, get_redis
from dashboard.models import PtiAccount, Site, SyncState
from dashboard.storeganise import SIGNATURE_HEADER, compact_json, format_timestamp, sign
from sim.demo_data import build_demo_business, sites_from_spec
from sim.server import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
WEBHOOK_SECRET = "bench-webhook-secret"
WEBHOOK_PATH = "/webhooks/storeganise"
API_KEY = "bench-api-key"
START_TIMEOUT_S = 60.0  # for each process to answer
START_POLL_S = 0.05
STOP_TIMEOUT_S = 10.0  # after TERM, for all processes together
KILL_TIMEOUT_S = 5.0  # after KILL, for each process
MIGRATE_TIMEOUT_S = 300.0  # a `flask` command (the migrations)
PG_PROBE_TIMEOUT_S = 2  # does PostgreSQL answer at all
PG_ADMIN_TIMEOUT_S = 5
HTTP_TIMEOUT_S = 30.0  # the harness's own calls to the simulators
PROBE_TIMEOUT_S = 2.0  # one readiness request
LOG_TAIL_CHARS = 3000  # of a process that exited, in the error
SG_SIM_KEEP_ALIVE_S = 60  # how long the Storeganise simulator keeps an idle connection (a load balancer's usual)
PTI_SIM_BACKLOG = 2048  # connections the PTI simulator's gunicorn queues (every site's workers call it at once)
PROGRESS_EVERY_S = 10.0
IDLE_POLL_S = 0.5
SPARE_UNITS = 10  # units per site beyond the rented ones, at the least (else a tenth of them)
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"  # Debian's PostgreSQL server binaries (not on the PATH)
PG_START_TIMEOUT_S = 60
PG_USER = "postgres"  # the OS user an own PostgreSQL runs as when we are root (initdb refuses root)
DASHBOARD_PASSWORD = "chaos-and-bench-password"


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def env_flag(name: str, default: bool) -> bool:
    """0 is off, any other value on; unset or empty: `default`."""
    raw = os.environ.get(name)
    return raw != "0" if raw not in (None, "") else default


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def report(name: str, **figures: str) -> str:
    """Print a benchmark's one result line, `BENCH <name> <figure>=<value> ...`, on stdout; return it."""
    line = " ".join([f"BENCH {name}", *(f"{key}={value}" for key, value in figures.items())])
    print(line, flush=True)
    return line


def calls_by_operation(before: dict, after: dict) -> dict[str, int]:
    """The PTI calls made between two `Stack.pti_calls()` readings, by operation."""
    return {op: n - before["by_operation"].get(op, 0) for op, n in after["by_operation"].items()}


def workers_cpu_s(before: dict[str, float], after: dict[str, float]) -> float:
    """The CPU seconds the RQ workers (general and urgent) used between two `Stack.cpu_seconds()` readings."""
    return sum(after.get(kind, 0.0) - before.get(kind, 0.0) for kind in ("worker", "urgent"))


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def descendants(pid: int) -> list[int]:
    """The processes `pid` forked, and theirs (read from /proc: RQ's work horse and scheduler, gunicorn's workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def postgres_available() -> bool:
    if os.environ.get("BENCH_DATABASE", "").lower() == "sqlite":
        return False
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=PG_PROBE_TIMEOUT_S):
            return True
    except Exception:  # noqa: BLE001 - any failure means: use SQLite
        return False


def _pg_admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=PG_ADMIN_TIMEOUT_S) as conn:
        conn.execute(sql)


def gunicorn(entry_point: str, port: int, workers: int, *options: str) -> list[str]:
    """The command serving a WSGI entry point (`module:callable()`) under gunicorn on 127.0.0.1:`port`."""
    return [str(BIN / "gunicorn"), "--workers", str(workers), "--bind", f"127.0.0.1:{port}", *options, entry_point]


def signed_webhook(event_type: str, data: dict, api_url: str) -> tuple[bytes, str]:
    """A Storeganise webhook with a fresh id, created now, and its signature, as Storeganise sends it."""
    created = format_timestamp(datetime.now(UTC))
    body = compact_json({"id": uuid.uuid4().hex[:24], "type": event_type, "created": created, "data": data,
                         "apiUrl": api_url})
    return body, sign(WEBHOOK_SECRET, body)


class OwnPostgres:
    """A PostgreSQL server of our own (initdb in a temporary folder, a free port, its unix socket in that folder),
    so a test may stop and start it without touching anybody else's. As root, every server command runs as the
    postgres user (`runuser -u postgres`), and the folder is theirs. Missing server binaries are an error, never a
    reason to skip."""

    def __init__(self) -> None:
        self.bin = self.find_binaries()
        self.folder = Path(tempfile.mkdtemp(prefix="pti-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.port = free_port()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.folder, PG_USER, PG_USER)

    @staticmethod
    def find_binaries() -> Path:
        found = sorted(glob.glob(PG_BIN_GLOB), key=lambda p: [int(n) for n in re.findall(r"\d+", p)])
        for folder in reversed(found):
            if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
                return Path(folder)
        raise RuntimeError(f"no PostgreSQL server binaries (initdb, pg_ctl) in {PG_BIN_GLOB}: install the "
                           "postgresql package (apt-get install postgresql) to run the tests that restart PostgreSQL")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str, timeout: float = PG_START_TIMEOUT_S) -> str:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self.as_root:
            command = ["runuser", "-u", PG_USER, "--", *command]
        done = subprocess.run(command, cwd=self.folder, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-LOG_TAIL_CHARS:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
                               f"\n{tail}")
        return done.stdout

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", str(PG_START_TIMEOUT_S),
                  "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: sessions are ended, then a clean shut-down; `immediate`: as if the server crashed."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(PG_START_TIMEOUT_S), "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self, name: str) -> str:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True,
                             connect_timeout=PG_ADMIN_TIMEOUT_S) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        if self.running():
            with contextlib.suppress(Exception):
                self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class StackConfig:
    # the business: sites × rented rentals (of `units` units a site), loaded into the mirror when `business`
    sites: int = 10
    units: int = 1100
    rented: int = 1000
    business: bool = True
    # the simulators
    pti: bool = True
    pti_server: str = "gunicorn"  # or "werkzeug" (python -m sim.pti: one threaded Werkzeug server)
    pti_threads: int = 64
    storeganise: bool = True  # the Storeganise simulator (write-backs and their echo webhooks go there)
    # gunicorn keeps connections open between requests, as Storeganise's servers do (a guess: docs/storeganise.md);
    # "werkzeug" (python -m sim.storeganise) closes each one after its answer
    sg_server: str = field(default_factory=lambda: os.environ.get("BENCH_SG_SERVER", "gunicorn"))
    sg_threads: int = 32
    # the product
    web: bool = True  # gunicorn serving the product (off: a benchmark that requests pages in-process)
    web_app: str = "dashboard:create_app()"  # gunicorn's entry point
    web_workers: int = 4
    access_log: bool = False  # gunicorn's access log on, as in the Procfile
    workers: int = 4  # RQ workers on every queue (a fork per job)
    urgent_workers: int = 2  # RQ workers on the urgent queue alone, warm (the Procfile's `urgent`, two as README says)
    site_concurrency: int = 4
    cron: bool = False  # the relay and the other periodic jobs
    extra_env: dict[str, str] = field(default_factory=dict)
    # "auto": a fresh database on the PostgreSQL at 127.0.0.1:5432 when it answers, else SQLite; "sqlite";
    # "own-postgres": a PostgreSQL server of the stack's own (stack.postgres), which may be stopped and started;
    # "postgres": the PostgreSQL at 127.0.0.1:5432, an error when it does not answer
    database: str = "auto"
    database_prefix: str = "pti_bench"  # a fresh PostgreSQL database is named <prefix>_<random>

    @property
    def profile(self) -> str:
        return f"load:{self.sites}:{self.units}:{self.rented}"


def business_config(**options) -> StackConfig:
    """The stack for BENCH_SITES sites × BENCH_RENTALS rentals (BENCH_UNITS units a site), pushed by BENCH_WORKERS RQ
    workers with BENCH_SITE_CONCURRENCY PTI calls a site at once, and BENCH_URGENT_WORKERS on the urgent lane (2, or
    the `urgent_workers` a benchmark asks for); BENCH_CRON=1 adds the cron. `options`: the rest."""
    sites = env_int("BENCH_SITES", 10)
    urgent = env_int("BENCH_URGENT_WORKERS", options.pop("urgent_workers", StackConfig.urgent_workers))
    rented = env_int("BENCH_RENTALS", 1000)
    return StackConfig(sites=sites, rented=rented,
                       units=env_int("BENCH_UNITS", rented + max(SPARE_UNITS, rented // 10)),
                       site_concurrency=env_int("BENCH_SITE_CONCURRENCY", 4),
                       workers=env_int("BENCH_WORKERS", sites + 2), urgent_workers=urgent,
                       cron=env_flag("BENCH_CRON", False), **options)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # beside the stack's own


class Stack:
    """`with Stack(config) as stack:` starts everything; `stack.app` is an in-process app on the same database."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.procs: list[Proc] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="pti-bench-"))
        self.pg_name: str | None = None
        self.postgres: OwnPostgres | None = None
        self.database_url = ""
        self.encryption_key = Fernet.generate_key().decode()
        self.app = None
        self._ctx = None
        self.redis_port = free_port()
        self.pti_port = free_port()
        self.sg_port = free_port()
        self.web_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.pti_url = f"http://127.0.0.1:{self.pti_port}"
        self.sg_url = f"http://127.0.0.1:{self.sg_port}"
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        self.webhook_url = f"{self.web_url}{WEBHOOK_PATH}"
        self.http = httpx.Client(timeout=HTTP_TIMEOUT_S)
        self._killed: dict[str, Proc] = {}
        self._clients: list[httpx.Client] = []

    # --- lifecycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        cfg = self.config
        started = time.monotonic()
        self.database_url = self.create_database()
        say(f"stack: {cfg.profile if cfg.business else 'no business'}, {cfg.workers} RQ workers, "
            f"site concurrency {cfg.site_concurrency}, database {self.database}")
        self.start_redis()
        self.start_simulators()
        self.wait_redis()
        self.flask("db", "upgrade")
        if cfg.web:
            self.start_web()
        self._open_app()
        if cfg.business:
            self.load_business()
        self.start_workers()
        self.wait_ready()
        say(f"stack up in {time.monotonic() - started:.1f} s (logs in {self.tmp})")

    def create_database(self) -> str:
        """A fresh PostgreSQL database when one answers (named in self.pg_name), else SQLite in the temporary folder;
        with `database="own-postgres"`, a database on a PostgreSQL server of the stack's own."""
        if self.config.database == "own-postgres":
            self.postgres = OwnPostgres()
            self.postgres.init()
            self.postgres.start()
            return self.postgres.create_database("pti_sync")
        if self.config.database == "sqlite" or (self.config.database == "auto" and not postgres_available()):
            return f"sqlite:///{self.tmp / 'bench.sqlite3'}"
        self.pg_name = f"{self.config.database_prefix}_{uuid.uuid4().hex[:12]}"
        _pg_admin(f'CREATE DATABASE "{self.pg_name}"')
        return PG_URL.format(name=self.pg_name)

    @property
    def database(self) -> str:
        if self.postgres is not None:
            return f"own PostgreSQL on port {self.postgres.port}"
        return f"PostgreSQL {self.pg_name}" if self.pg_name else "SQLite"

    def start_simulators(self) -> None:
        cfg = self.config
        if cfg.pti and cfg.pti_server == "gunicorn":
            self.spawn("pti-sim", gunicorn("sim.pti:create_app()", self.pti_port, 1, "--worker-class", "gthread",
                                           "--threads", str(cfg.pti_threads), "--backlog", str(PTI_SIM_BACKLOG)))
        elif cfg.pti:
            self.spawn("pti-sim", [sys.executable, "-m", "sim.pti", "--port", str(self.pti_port)])
        if cfg.storeganise and cfg.sg_server == "gunicorn":
            self.spawn("sg-sim", gunicorn("sim.storeganise:from_environment()", self.sg_port, 1, "--worker-class",
                                          "gthread", "--threads", str(cfg.sg_threads),
                                          "--keep-alive", str(SG_SIM_KEEP_ALIVE_S)),
                       env={"SG_WEBHOOK_URL": self.webhook_url, "PTI_SIM_URL": self.pti_url})
        elif cfg.storeganise:
            self.spawn("sg-sim", [sys.executable, "-m", "sim.storeganise", "--port", str(self.sg_port),
                                  "--webhook-url", self.webhook_url, "--pti-url", self.pti_url])

    def start_redis(self) -> None:
        self.spawn("redis", [shutil.which("redis-server") or "redis-server", "--port", str(self.redis_port),
                             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.tmp)])

    def start_web(self) -> None:
        access_log = ["--access-logfile", "-"] if self.config.access_log else []
        self.spawn("web", gunicorn(self.config.web_app, self.web_port, self.config.web_workers, *access_log))

    def start_workers(self) -> None:
        for i in range(self.config.workers):
            self.spawn(f"worker-{i + 1}", [str(BIN / "flask"), "--app", "dashboard", "worker"])
        for i in range(self.config.urgent_workers):
            self.spawn(f"urgent-{i + 1}", [str(BIN / "flask"), "--app", "dashboard", "worker", "--lane", "urgent"])
        if self.config.cron:
            self.spawn("cron", [str(BIN / "flask"), "--app", "dashboard", "cron"])

    def wait_ready(self) -> None:
        """Until every server answers and every RQ worker has registered."""
        if self.config.pti:
            self.wait_http(f"{self.pti_url}/_sim/faults", "PTI simulator")
        if self.config.storeganise:
            self.wait_http(f"{self.sg_url}/_sim/config", "Storeganise simulator")
        if self.config.web:
            self.wait_http(f"{self.web_url}/healthz", "web", any_status=True)
        self.wait_workers(self.config.workers + self.config.urgent_workers)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) per kind of process: each process the stack started, every process below it
        (RQ's work horses run in a session of their own, so a process group misses a horse still running), and the
        children they reaped."""
        tick = os.sysconf("SC_CLK_TCK")
        kinds = {proc.popen.pid: (proc.name.split("-")[0] if proc.name.startswith(("worker", "urgent")) else proc.name)
                 for proc in self.procs}
        parents: dict[int, int] = {}
        used: dict[int, float] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid = int(stat.parent.name)
            parents[pid] = int(fields[1])
            used[pid] = sum(int(v) for v in fields[11:15]) / tick
        totals: dict[str, float] = {}
        for pid, seconds in used.items():
            ancestor, hops = pid, 0
            while ancestor not in kinds and ancestor in parents and hops < 8:
                ancestor, hops = parents[ancestor], hops + 1
            if ancestor in kinds:
                totals[kinds[ancestor]] = totals.get(kinds[ancestor], 0.0) + seconds
        usage = resource.getrusage(resource.RUSAGE_SELF)
        totals["bench"] = usage.ru_utime + usage.ru_stime
        return totals

    def report_cpu(self, since: dict[str, float] | None = None) -> str:
        now = self.cpu_seconds()
        since = since or {}
        text = ", ".join(f"{k} {v - since.get(k, 0.0):.1f}" for k, v in sorted(now.items(), key=lambda kv: -kv[1]))
        say(f"CPU seconds by process: {text}")
        return text

    def stop(self) -> None:
        for client in [self.http, *self._clients]:
            with contextlib.suppress(Exception):
                client.close()
        if self._ctx is not None:
            with contextlib.suppress(Exception):
                db.session.remove()
                db.engine.dispose()
            with contextlib.suppress(Exception):
                self._ctx.pop()
            self._ctx = None
        for proc in reversed(self.procs):  # workers before Redis, the web before the database
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.popen.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.popen.wait(timeout=KILL_TIMEOUT_S)
        self.procs.clear()
        if self.pg_name:
            try:
                _pg_admin(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
            except Exception as exc:  # noqa: BLE001 - reported, never hides the benchmark's own error
                say(f"could not drop database {self.pg_name}: {exc}")
            self.pg_name = None
        if self.postgres is not None:
            self.postgres.remove()
            self.postgres = None
        if os.environ.get("BENCH_KEEP_LOGS"):
            say(f"logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- processes ---------------------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PTI_SYNC_DEMO", "FLASK_APP", "FLASK_DEBUG")}
        env.update({
            "PYTHONUNBUFFERED": "1",
            "PTI_SYNC_INSTANCE": str(self.tmp / "instance"),
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "SECRET_KEY": "bench-secret-key",
            "ENCRYPTION_KEYS": self.encryption_key,
            "STOREGANISE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "SG_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STOREGANISE_API_URL": f"{self.sg_url}/api/v1/admin",
            "STOREGANISE_API_KEY": API_KEY,
            "SG_API_KEY": API_KEY,
            "PTI_SITE_CONCURRENCY": str(self.config.site_concurrency),
            "SIM_SITES": self.config.profile,
            "SESSION_COOKIE_SECURE": "0",
        })
        env.update(self.config.extra_env)
        return env

    def spawn(self, name: str, argv: list[str], log_name: str | None = None, env: dict[str, str] | None = None) -> Proc:
        log = self.tmp / f"{log_name or name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(argv, cwd=ROOT, env={**self.env, **(env or {})}, stdout=out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        proc = Proc(name, popen, log, argv, env or {})
        self.procs.append(proc)
        return proc

    def proc(self, name: str) -> Proc:
        for proc in self.procs:
            if proc.name == name:
                return proc
        raise KeyError(f"no process {name!r} in the stack ({', '.join(p.name for p in self.procs)})")

    def pause(self, name: str) -> None:
        """SIGSTOP the process and its group: it holds its sockets open and answers nothing (a hung Redis)."""
        os.killpg(self.proc(name).popen.pid, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        os.killpg(self.proc(name).popen.pid, signal.SIGCONT)

    def kill(self, name: str) -> None:
        """kill -9 the process and everything it forked (an RQ work horse runs in a process group of its own); it
        leaves the stack until `respawn`."""
        proc = self.proc(name)
        for pid in [proc.popen.pid, *descendants(proc.popen.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.popen.wait(timeout=KILL_TIMEOUT_S)
        self.procs.remove(proc)
        self._killed[name] = proc

    def respawn(self, name: str) -> Proc:
        """Start a process `kill` ended again, with the same command (its log goes on in a new file)."""
        old = self._killed.pop(name)
        return self.spawn(name, old.argv, log_name=f"{name}-respawned-{time.monotonic_ns()}", env=old.env)

    def flask(self, *args: str) -> str:
        done = subprocess.run([str(BIN / "flask"), "--app", "dashboard", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=MIGRATE_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"flask {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def _check_alive(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is not None:
                tail = proc.log.read_text(errors="replace")[-LOG_TAIL_CHARS:] if proc.log.exists() else ""
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{tail}")

    def wait_redis(self) -> None:
        conn = redis.Redis(port=self.redis_port, socket_timeout=PROBE_TIMEOUT_S)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(redis.RedisError):
                if conn.ping():
                    conn.close()
                    return
            time.sleep(START_POLL_S)
        raise RuntimeError("Redis did not start")

    def wait_http(self, url: str, what: str, any_status: bool = False) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                response = self.http.get(url, timeout=PROBE_TIMEOUT_S)
                if any_status or response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(START_POLL_S)
        raise RuntimeError(f"the {what} did not answer at {url}")

    def wait_workers(self, count: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            if len(Worker.all(connection=get_redis())) >= count:
                return
            time.sleep(START_POLL_S)
        raise RuntimeError(f"{count} RQ workers did not register")

    # --- the product's database, in this process ---------------------------------------------------------

    def _open_app(self) -> None:
        self.app = create_app({
            "SQLALCHEMY_DATABASE_URI": self.database_url,
            "REDIS_URL": self.redis_url,
            "SECRET_KEY": "bench-secret-key",
            "ENCRYPTION_KEYS": self.encryption_key,
            "STOREGANISE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "STOREGANISE_API_URL": f"{self.sg_url}/api/v1/admin",
            "STOREGANISE_API_KEY": API_KEY,
            "PTI_SITE_CONCURRENCY": self.config.site_concurrency,
        })
        logging.getLogger().setLevel(logging.WARNING)
        self._ctx = self.app.app_context()
        self._ctx.push()

    def business(self):
        return build_demo_business(self.pti_url, sites=sites_from_spec(self.config.profile))

    def load_business(self) -> dict[str, int]:
        started = time.monotonic()
        counts = load_business(self.business())
        say(f"mirror loaded in {time.monotonic() - started:.1f} s: "
            + ", ".join(f"{n} {k}" for k, n in counts.items()))
        return counts

    # --- helpers the benchmarks share --------------------------------------------------------------------

    def pti_faults(self, **faults) -> None:
        self.http.post(f"{self.pti_url}/_sim/faults", json=faults).raise_for_status()

    def pti_calls(self) -> dict:
        return self.http.get(f"{self.pti_url}/_sim/state").json()["calls"]

    def pti_state(self) -> dict:
        return self.http.get(f"{self.pti_url}/_sim/state").json()

    def sg_state(self) -> dict:
        return self.http.get(f"{self.sg_url}/_sim/state").json()

    def sg_config(self, **settings) -> dict:
        """The Storeganise simulator's settings (`deliver`, `drop_pending`, `faults`...), changed."""
        response = self.http.post(f"{self.sg_url}/_sim/config", json=settings)
        response.raise_for_status()
        return response.json()

    def post_webhook(self, body: bytes, signature: str) -> httpx.Response:
        """A delivery as Storeganise sends it, to the real web process."""
        return self.http.post(self.webhook_url, content=body,
                              headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature})

    def dashboard(self, role: str = "manager") -> httpx.Client:
        """A browser-like client of the real web process, logged in as the demo user of `role` (created here when
        missing) through the login form, CSRF token and all. Closed with the stack."""
        from dashboard.demo import DEMO_ACCOUNTS
        from dashboard.models import StaffUser

        email, name, kind = next(a for a in DEMO_ACCOUNTS if a[2] == role)
        db.session.rollback()
        if db.session.scalar(select(StaffUser).where(StaffUser.email == email)) is None:
            user = StaffUser(email=email, name=name, role=kind)
            user.set_password(DASHBOARD_PASSWORD)
            db.session.add(user)
            db.session.commit()
        client = httpx.Client(base_url=self.web_url, timeout=HTTP_TIMEOUT_S, follow_redirects=True)
        self._clients.append(client)
        form = client.get("/login").text
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form)
        if token is None:
            raise RuntimeError("no CSRF token on the login page")
        page = client.post("/login", data={"email": email, "password": DASHBOARD_PASSWORD,
                                           "csrf_token": token.group(1)})
        if page.status_code != 200 or str(page.url).endswith("/login"):
            raise RuntimeError(f"could not log in as {email}: {page.status_code} at {page.url}")
        return client

    def push_all(self, trigger: str = "bench") -> int:
        """push_site for every site (what an operator's "push site" does), in this process."""
        total = 0
        for site in db.session.scalars(select(Site).order_by(Site.id)).all():
            total += push_site(site, trigger)
        return total

    def count(self, model, *where) -> int:
        """Rows of `model` (matching `where`) in the product's database, from a fresh snapshot."""
        db.session.rollback()
        try:
            return db.session.scalar(select(func.count()).select_from(model).where(*where))
        finally:
            db.session.rollback()

    def owed(self) -> tuple[int, int]:
        """(accounts still owed a push, accounts parked as failed)."""
        owed = self.count(PtiAccount, PtiAccount.generation > PtiAccount.synced_generation,
                          PtiAccount.state != SyncState.FAILED)
        return owed, self.count(PtiAccount, PtiAccount.state == SyncState.FAILED)

    def wait_converged(self, timeout_s: float, poll_s: float = 0.25) -> float:
        """Seconds until no account is owed a push; TimeoutError after `timeout_s`."""
        started = time.monotonic()
        deadline = started + timeout_s
        last_report = started
        while True:
            self._check_alive()
            owed, failed = self.owed()
            now = time.monotonic()
            if owed == 0:
                return now - started
            if now > deadline:
                raise TimeoutError(f"{owed} accounts still owed a push after {timeout_s:.0f} s ({failed} failed)")
            if now - last_report > PROGRESS_EVERY_S:
                say(f"  {owed} accounts owed after {now - started:.0f} s ({failed} failed)")
                last_report = now
            time.sleep(poll_s)

    def queue_depths(self) -> dict[str, int]:
        return {name: Queue(name, connection=get_redis()).count for name in QUEUE_NAMES}

    def wait_idle(self, timeout_s: float) -> None:
        """Until the queues are empty and no job is running (write-backs and their echo webhooks done)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            busy = [w for w in Worker.all(connection=get_redis()) if w.get_current_job_id()]
            if not any(self.queue_depths().values()) and not busy:
                return
            time.sleep(IDLE_POLL_S)
        say(f"queues not idle after {timeout_s:.0f} s: {self.queue_depths()}")
