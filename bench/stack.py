"""The production-like stack the benchmarks measure, on free ports of this machine, started and stopped as one.

- a fresh PostgreSQL database (postgresql+psycopg://postgres@127.0.0.1:5432/<fresh name>) when one answers, else
  SQLite in a temporary folder (BENCH_DATABASE=sqlite forces it); migrated with `flask db upgrade`
- a redis-server of its own (no persistence), the PTI simulator (gunicorn, one process, threads: its state lives
  in the process) and the Storeganise simulator, both serving the load profile SIM_SITES names
- the product: gunicorn (`dashboard:create_app()`, 4 workers), N RQ workers (`flask --app dashboard worker`) and,
  when asked, the cron scheduler (`flask --app dashboard cron`: relay every 15 s)
- the business loaded into the mirror with every site's PTI address pointing at the PTI simulator

Every process runs in its own process group and is stopped (TERM, then KILL) when the `with` block ends, however
it ends; the database is dropped and the temporary folder removed. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
WEBHOOK_SECRET = "bench-webhook-secret"
API_KEY = "bench-api-key"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def postgres_available() -> bool:
    if os.environ.get("BENCH_DATABASE", "").lower() == "sqlite":
        return False
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=2):
            return True
    except Exception:  # noqa: BLE001 - any failure means: use SQLite
        return False


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


@dataclass
class StackConfig:
    sites: int = 10
    units: int = 1100
    rented: int = 1000
    site_concurrency: int = 4
    workers: int = 4
    web_workers: int = 4
    storeganise: bool = True  # the Storeganise simulator (write-backs and their echo webhooks go there)
    cron: bool = False  # the relay and the other periodic jobs
    pti_threads: int = 64
    pti_server: str = "gunicorn"  # or "werkzeug" (python -m sim.pti: one threaded Werkzeug server)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def profile(self) -> str:
        return f"load:{self.sites}:{self.units}:{self.rented}"


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path


class Stack:
    """`with Stack(config) as stack:` starts everything; `stack.app` is an in-process app on the same database."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.procs: list[Proc] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="pti-bench-"))
        self.pg_name: str | None = None
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
        self.http = httpx.Client(timeout=30.0)

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
        if postgres_available():
            self.pg_name = f"pti_bench_{uuid.uuid4().hex[:12]}"
            _pg_admin(f'CREATE DATABASE "{self.pg_name}"')
            self.database_url = PG_URL.format(name=self.pg_name)
        else:
            self.database_url = f"sqlite:///{self.tmp / 'bench.sqlite3'}"
        say(f"stack: {cfg.profile}, {cfg.workers} RQ workers, site concurrency {cfg.site_concurrency}, "
            f"database {'PostgreSQL ' + self.pg_name if self.pg_name else 'SQLite'}")
        self.spawn("redis", [shutil.which("redis-server") or "redis-server", "--port", str(self.redis_port),
                             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.tmp)])
        if cfg.pti_server == "gunicorn":
            self.spawn("pti-sim", [str(BIN / "gunicorn"), "-w", "1", "-k", "gthread", "--threads", str(cfg.pti_threads),
                                   "--backlog", "2048", "--bind", f"127.0.0.1:{self.pti_port}", "sim.pti:create_app()"])
        else:
            self.spawn("pti-sim", [sys.executable, "-m", "sim.pti", "--port", str(self.pti_port)])
        if cfg.storeganise:
            self.spawn("sg-sim", [sys.executable, "-m", "sim.storeganise", "--port", str(self.sg_port),
                                  "--webhook-url", f"{self.web_url}/webhooks/storeganise", "--pti-url", self.pti_url])
        self.wait_redis()
        self.flask("db", "upgrade")
        self.spawn("web", [str(BIN / "gunicorn"), "-w", str(cfg.web_workers), "--bind", f"127.0.0.1:{self.web_port}",
                           "dashboard:create_app()"])
        self._open_app()
        self.load_business()
        for i in range(cfg.workers):
            self.spawn(f"worker-{i + 1}", [str(BIN / "flask"), "--app", "dashboard", "worker"])
        if cfg.cron:
            self.spawn("cron", [str(BIN / "flask"), "--app", "dashboard", "cron"])
        self.wait_http(f"{self.pti_url}/_sim/faults", "PTI simulator")
        if cfg.storeganise:
            self.wait_http(f"{self.sg_url}/_sim/config", "Storeganise simulator")
        self.wait_http(f"{self.web_url}/healthz", "web", any_status=True)
        self.wait_workers(cfg.workers)
        say(f"stack up in {time.monotonic() - started:.1f} s (logs in {self.tmp})")

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds (user + system) per kind of process, over each process group: the live processes and the
        children they reaped (RQ's work horses, gunicorn's workers)."""
        tick = os.sysconf("SC_CLK_TCK")
        groups = {proc.popen.pid: (proc.name.split("-")[0] if proc.name.startswith("worker") else proc.name)
                  for proc in self.procs}
        totals: dict[str, float] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            kind = groups.get(int(fields[2]))  # the process group
            if kind is not None:
                totals[kind] = totals.get(kind, 0.0) + sum(int(v) for v in fields[11:15]) / tick
        import resource

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
        with contextlib.suppress(Exception):
            self.http.close()
        if self._ctx is not None:
            from dashboard.extensions import db

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
                    proc.popen.wait(timeout=5)
        self.procs.clear()
        if self.pg_name:
            try:
                _pg_admin(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
            except Exception as exc:  # noqa: BLE001 - reported, never hides the benchmark's own error
                say(f"could not drop database {self.pg_name}: {exc}")
            self.pg_name = None
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

    @property
    def encryption_key(self) -> str:
        if not hasattr(self, "_key"):
            from cryptography.fernet import Fernet

            self._key = Fernet.generate_key().decode()
        return self._key

    def spawn(self, name: str, argv: list[str]) -> Proc:
        log = self.tmp / f"{name}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def flask(self, *args: str) -> str:
        done = subprocess.run([str(BIN / "flask"), "--app", "dashboard", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"flask {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def _check_alive(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is not None:
                tail = proc.log.read_text(errors="replace")[-3000:] if proc.log.exists() else ""
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{tail}")

    def wait_redis(self) -> None:
        import redis

        conn = redis.Redis(port=self.redis_port, socket_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(redis.RedisError):
                if conn.ping():
                    conn.close()
                    return
            time.sleep(0.05)
        raise RuntimeError("Redis did not start")

    def wait_http(self, url: str, what: str, any_status: bool = False) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                response = self.http.get(url, timeout=2)
                if any_status or response.status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the {what} did not answer at {url}")

    def wait_workers(self, count: int) -> None:
        from rq import Worker

        from dashboard.jobqueue import get_redis

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._check_alive()
            if len(Worker.all(connection=get_redis())) >= count:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{count} RQ workers did not register")

    # --- the product's database, in this process ---------------------------------------------------------

    def _open_app(self) -> None:
        import logging

        from dashboard import create_app

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
        from sim.demo_data import build_demo_business, sites_from_spec

        return build_demo_business(self.pti_url, sites=sites_from_spec(self.config.profile))

    def load_business(self) -> dict[str, int]:
        from dashboard.demo import load_business

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

    def push_all(self, trigger: str = "bench") -> int:
        """push_site for every site (what an operator's "push site" does), in this process."""
        from sqlalchemy import select

        from dashboard.engine.intent import push_site
        from dashboard.extensions import db
        from dashboard.models import Site

        total = 0
        for site in db.session.scalars(select(Site).order_by(Site.id)).all():
            total += push_site(site, trigger)
        return total

    def owed(self) -> tuple[int, int]:
        """(accounts still owed a push, accounts parked as failed)."""
        from sqlalchemy import func, select

        from dashboard.extensions import db
        from dashboard.models import PtiAccount, SyncState

        db.session.rollback()  # a fresh snapshot
        owed = db.session.scalar(select(func.count()).select_from(PtiAccount).where(
            PtiAccount.generation > PtiAccount.synced_generation, PtiAccount.state != SyncState.FAILED))
        failed = db.session.scalar(select(func.count()).select_from(PtiAccount).where(
            PtiAccount.state == SyncState.FAILED))
        db.session.rollback()
        return owed, failed

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
            if now - last_report > 10:
                say(f"  {owed} accounts owed after {now - started:.0f} s ({failed} failed)")
                last_report = now
            time.sleep(poll_s)

    def queue_depths(self) -> dict[str, int]:
        from rq import Queue

        from dashboard.jobqueue import QUEUE_NAMES, get_redis

        return {name: Queue(name, connection=get_redis()).count for name in QUEUE_NAMES}
