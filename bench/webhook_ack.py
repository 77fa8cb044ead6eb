"""Webhook acknowledgement: how fast the product answers Storeganise's signed webhooks under a steady load.

20,000 signed deliveries (unique ids, mostly of types the product enqueues) at a steady 300/s against the product
served by gunicorn as in production (Procfile: 4 sync workers, access log on), on a fresh PostgreSQL database when
one answers (else SQLite) and a Redis of its own; no RQ worker drains the queues, so only the receiver is measured.
The same load then goes to a bare endpoint served by the same gunicorn (a WSGI function that answers 200 at once),
to separate the receiver's own cost from the server's and this machine's.

Target: p99 ≤ 25 ms and p99 ≤ 2 × the bare endpoint's p99; ratio = max(p99 / 25, bare_ratio / 2) (≤ 1 passes).
Environment: BENCH_WEBHOOKS [20000], BENCH_RATE per second [300], BENCH_WEB_WORKERS [4], BENCH_DATABASE=sqlite.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
SECRET = "bench-webhook-secret"
BARE_PATH = "/_bench/bare"
WEBHOOK_PATH = "/webhooks/storeganise"
TARGET_P99_MS = 25.0
TARGET_BARE_FACTOR = 2.0
SENDERS = 16  # client threads; at 300/s and a few ms per request only a handful are ever busy
WARMUP = 300  # requests sent before each measured run
START_TIMEOUT_S = 60.0
# Types and weights: mostly what the product enqueues (overdue ones to the urgent queue), some it ignores.
EVENT_MIX = [
    ("unitRental.updated", 40), ("unitRental.markOverdue", 15), ("unitRental.unmarkOverdue", 10),
    ("job.unit_moveIn.completed", 10), ("job.unit_moveOut.completed", 8), ("user.updated", 7),
    ("invoice.updated", 10),
]


def served_app():
    """gunicorn entry point: the product, plus the bare endpoint on the same server and workers."""
    from dashboard import create_app

    product = create_app()

    def app(environ, start_response):
        if environ.get("PATH_INFO") == BARE_PATH:
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return [b"ok"]
        return product(environ, start_response)

    return app


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def bodies(count: int, seed: int = 4) -> list[tuple[bytes, str, str]]:
    """(body, signature, type) for `count` deliveries with unique ids, signed as Storeganise signs them."""
    from dashboard.storeganise import compact_json, sign

    rng = random.Random(seed)
    types = rng.choices([t for t, _ in EVENT_MIX], weights=[w for _, w in EVENT_MIX], k=count)
    created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    out = []
    for event_type in types:
        data = {"unitRentalId": uuid.uuid4().hex[:24]}
        if event_type == "unitRental.updated":
            data["changedKeys"] = ["customFields.pti_synced"]
        body = compact_json({"id": uuid.uuid4().hex[:24], "type": event_type, "created": created, "data": data,
                             "apiUrl": "https://bench.storeganise.com/api/v1/admin"})
        out.append((body, sign(SECRET, body), event_type))
    return out


def steady_load(url: str, requests: list[tuple[bytes, str] | None], rate: float) -> tuple[list[float], int]:
    """Send `requests` (body and signature, or None for a GET) at a fixed schedule of `rate` per second.

    Returns the latencies (ms, from connecting to the complete answer) and how many answers were not 200. Bounded:
    every thread stops when the list is used up. The client is the standard library's: httpx costs several times
    more CPU per request, which on a small machine would be measured as the server's latency.
    """
    parts = urllib.parse.urlsplit(url)
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    cursor = iter(range(len(requests)))
    start = time.perf_counter() + 0.2

    def send(item: tuple[bytes, str] | None) -> int:
        # A new connection per request, as gunicorn's sync workers close each one; http.client sends headers and
        # body in one segment, so Nagle's algorithm never waits for a delayed ACK.
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            if item is None:
                conn.request("GET", parts.path)
            else:
                conn.request("POST", parts.path, body=item[0],
                             headers={"Content-Type": "application/json", "sg-signature": item[1]})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    def sender() -> None:
        nonlocal failures
        while True:
            with lock:
                index = next(cursor, None)
            if index is None:
                return
            delay = start + index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sent = time.perf_counter()
            try:
                status = send(requests[index])
            except OSError:
                status = 0
            elapsed = (time.perf_counter() - sent) * 1000
            with lock:
                latencies.append(elapsed)
                failures += status != 200

    threads = [threading.Thread(target=sender, name=f"sender-{i}") for i in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, failures


class Server:
    """A database, a Redis and the product under gunicorn, on free ports; everything removed on exit."""

    def __init__(self, web_workers: int) -> None:
        self.web_workers = web_workers
        self.tmp = Path(tempfile.mkdtemp(prefix="pti-bench-ack-"))
        self.procs: list[subprocess.Popen] = []
        self.pg_name: str | None = None
        self.redis_port, self.web_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.web_port}"

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PTI_SYNC_DEMO", "FLASK_APP", "FLASK_DEBUG")}
        env.update({
            "PTI_SYNC_INSTANCE": str(self.tmp / "instance"),
            "DATABASE_URL": self.database_url,
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "SECRET_KEY": "bench-secret-key",
            "ENCRYPTION_KEYS": "ZGVtby1vbmx5LWtleS1kZW1vLW9ubHkta2V5LWRlbW8=",
            "STOREGANISE_WEBHOOK_SECRET": SECRET,
        })
        return env

    def start(self) -> None:
        if os.environ.get("BENCH_DATABASE", "").lower() != "sqlite" and self._postgres():
            self.pg_name = f"pti_bench_ack_{uuid.uuid4().hex[:10]}"
            self._pg(f'CREATE DATABASE "{self.pg_name}"')
            self.database_url = PG_URL.format(name=self.pg_name)
        else:
            self.database_url = f"sqlite:///{self.tmp / 'bench.sqlite3'}"
        self.spawn("redis", [shutil.which("redis-server") or "redis-server", "--port", str(self.redis_port),
                             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.tmp)])
        subprocess.run([str(BIN / "flask"), "--app", "dashboard", "db", "upgrade"], cwd=ROOT, env=self.env,
                       check=True, capture_output=True, timeout=300)
        self.spawn("web", [str(BIN / "gunicorn"), "--workers", str(self.web_workers), "--bind",
                           f"127.0.0.1:{self.web_port}", "--access-logfile", "-", "bench.webhook_ack:served_app()"])
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a server process exited; logs in {self.tmp}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + BARE_PATH, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("gunicorn did not answer")

    def spawn(self, name: str, argv: list[str]) -> None:
        with open(self.tmp / f"{name}.log", "wb") as log:
            self.procs.append(subprocess.Popen(argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                               stdin=subprocess.DEVNULL, start_new_session=True))

    def stop(self) -> None:
        for proc in reversed(self.procs):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.procs.clear()
        if self.pg_name:
            with contextlib.suppress(Exception):
                self._pg(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')
        shutil.rmtree(self.tmp, ignore_errors=True)

    def counts(self) -> tuple[int, int]:
        """(deliveries recorded, handle_delivery jobs waiting in Redis)."""
        import redis
        from rq import Queue
        from sqlalchemy import create_engine, text

        engine = create_engine(self.database_url)
        with engine.connect() as conn:
            recorded = conn.execute(text("SELECT count(*) FROM webhook_deliveries")).scalar()
        engine.dispose()
        conn = redis.Redis(port=self.redis_port)
        queued = sum(Queue(name, connection=conn).count for name in ("urgent", "default", "bulk"))
        return recorded, queued

    @staticmethod
    def _postgres() -> bool:
        try:
            import psycopg

            with psycopg.connect(PG_ADMIN_URL, connect_timeout=2):
                return True
        except Exception:  # noqa: BLE001 - any failure means: use SQLite
            return False

    @staticmethod
    def _pg(sql: str) -> None:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql)


def main() -> None:
    count = int(os.environ.get("BENCH_WEBHOOKS") or 20_000)
    rate = float(os.environ.get("BENCH_RATE") or 300)
    web_workers = int(os.environ.get("BENCH_WEB_WORKERS") or 4)
    deliveries = bodies(WARMUP + count)
    known = sum(t != "invoice.updated" for *_, t in deliveries)
    with Server(web_workers) as server:
        database = f"PostgreSQL {server.pg_name}" if server.pg_name else "SQLite"
        say(f"webhook_ack: {count} webhooks at {rate:.0f}/s, gunicorn {web_workers} workers, {database}")
        steady_load(server.url + BARE_PATH, [None] * WARMUP, rate)
        bare, bare_failures = steady_load(server.url + BARE_PATH, [None] * count, rate)
        signed = [(body, signature) for body, signature, _ in deliveries]
        steady_load(server.url + WEBHOOK_PATH, signed[:WARMUP], rate)
        hooks, failures = steady_load(server.url + WEBHOOK_PATH, signed[WARMUP:], rate)
        recorded, queued = server.counts()
    say(f"bare: {len(bare)} requests, {bare_failures} not 200; webhooks: {len(hooks)} requests, {failures} not 200; "
        f"{recorded} deliveries recorded, {queued} jobs enqueued (expected {len(deliveries)} and {known})")
    if failures or bare_failures or recorded != len(deliveries) or queued != known:
        say("webhook_ack: some deliveries were refused or lost")
    p99, p50, bare_p99 = percentile(hooks, 99), percentile(hooks, 50), percentile(bare, 99)
    bare_ratio = p99 / bare_p99
    ratio = max(p99 / TARGET_P99_MS, bare_ratio / TARGET_BARE_FACTOR)
    print(f"BENCH webhook_ack p99_ms={p99:.2f} p50_ms={p50:.2f} bare_p99_ms={bare_p99:.2f} "
          f"bare_ratio={bare_ratio:.2f} ratio={ratio:.2f}", flush=True)


if __name__ == "__main__":
    main()
