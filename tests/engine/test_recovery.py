"""R5 (reliability.md): intent lives in the database, so a killed worker and a Redis restarted empty lose nothing.

A real worker (`flask --app dashboard worker`) pushes a site's customers to the PTI simulator from a Redis of the
test's own. It is killed (-9, with its work horse) in the middle of a job, Redis is restarted empty, and the relay
(what the cron runs every 15 s) finds every account still owed a push in the database and enqueues it again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rq import Queue
from rq.registry import StartedJobRegistry
from sqlalchemy import select

from bench.stack import descendants
from dashboard.demo import load_business
from dashboard.engine.intent import mark_dirty, relay, request_reconcile
from dashboard.extensions import db
from dashboard.jobqueue import QUEUE_NAMES, get_redis
from dashboard.models import Customer, PtiAccount, Site, SyncState
from sim.demo_data import build_demo_business, make_sites
from sim.pti import create_app
from sim.server import serve_in_thread
from tests.conftest import RedisServer
from tests.engine.conftest import PtiSim
from tests.engine.test_stateful import WRITES, mismatches, site_invariant_problems

SITE = make_sites(1, units=48, rented=36, prefix="r5")[0]  # 28 customers, 35 mapped rentals, 2 overdue
WRITE_LATENCY_MS = 150  # PTI writes are slow, so a job is killed in the middle of its plan
KILL_AFTER = 5  # converged accounts before the worker is killed
FLASK = str(Path(sys.executable).with_name("flask"))
WAIT_S = 180  # bound of every wait (generous: CI machines are slow); running out fails with what it waited for
ROUNDS = 3  # relay + burst worker rounds allowed after the crash
BURST_WORKERS = 2  # workers started after the crash, side by side


# --- a Redis, a PTI and workers of the test's own -------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path, app):
    """A Redis server the test may stop and start again; the app's jobs go to it."""
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    server.start()
    app.config["REDIS_URL"] = server.url
    app.extensions.pop("pti_sync_redis", None)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def slow_pti():
    pti_sites = build_demo_business("http://127.0.0.1:1", sites=[SITE]).pti_sites
    server = serve_in_thread(create_app(pti_sites))
    sim = PtiSim(server.url)
    yield sim
    sim.close()
    server.stop()


@pytest.fixture
def site(app, own_redis, slow_pti) -> Site:
    load_business(build_demo_business(slow_pti.url, sites=[SITE]))
    return db.session.scalar(select(Site))


class Workers:
    """`flask --app dashboard worker` subprocesses on the test's database and Redis; killed at the end."""

    def __init__(self, app, redis: RedisServer, folder: Path) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen] = []
        self.logs: dict[int, Path] = {}
        self.env = {k: v for k, v in os.environ.items() if k != "PTI_SYNC_DEMO"}
        self.env.update(DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"], REDIS_URL=redis.url,
                        SECRET_KEY=app.config["SECRET_KEY"], ENCRYPTION_KEYS=app.config["ENCRYPTION_KEYS"],
                        PTI_SYNC_INSTANCE=str(folder))

    def start(self, *args: str) -> subprocess.Popen:
        log = self.folder / f"worker-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([FLASK, "--app", "dashboard", "worker", *args], env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.logs[proc.pid] = log
        self.procs.append(proc)
        return proc

    def burst(self, count: int = 1) -> None:
        """Run `count` workers side by side until the queues are empty."""
        procs = [self.start("--burst") for _ in range(count)]
        deadline = time.monotonic() + WAIT_S
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"a burst worker did not finish in {WAIT_S} s:\n{self.log_tail(proc)}")
            assert proc.returncode == 0, f"a burst worker failed:\n{self.log_tail(proc)}"

    def kill(self, proc: subprocess.Popen) -> None:
        """kill -9 the worker and everything it forked (the work horse runs in a process group of its own)."""
        tree = [proc.pid, *descendants(proc.pid)]
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)

    def log_tail(self, proc: subprocess.Popen, lines: int = 30) -> str:
        return "\n".join(self.logs[proc.pid].read_text(errors="replace").splitlines()[-lines:])

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)


@pytest.fixture
def workers(app, own_redis, tmp_path):
    folder = tmp_path / "worker"
    folder.mkdir()
    group = Workers(app, own_redis, folder)
    try:
        yield group
    finally:
        group.stop_all()


# --- reading the outcome ------------------------------------------------------------------------------------------


def accounts() -> list:
    """Where every account stands, read afresh (rows, not ORM objects, so nothing stale is kept)."""
    db.session.rollback()
    rows = db.session.execute(select(PtiAccount.id, PtiAccount.customer_id, PtiAccount.generation,
                                     PtiAccount.synced_generation, PtiAccount.state, PtiAccount.last_error)
                             .order_by(PtiAccount.id)).all()
    db.session.rollback()  # no read lock kept on the database file the workers write
    return rows


def converged(rows: list) -> set[int]:
    return {a.id for a in rows if a.synced_generation >= a.generation and a.state == SyncState.IN_SYNC}


def wait_for(condition, what: str, timeout: float = WAIT_S, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(every)
    pytest.fail(f"waited {timeout:.0f} s for {what}")


def queued_jobs() -> int:
    return sum(Queue(name, connection=get_redis()).count for name in QUEUE_NAMES)


def started_jobs() -> int:
    return sum(StartedJobRegistry(name, connection=get_redis()).count for name in QUEUE_NAMES)


def ask_for_pushes(site: Site, customers: list[Customer]) -> list[int]:
    """What an import or a webhook does: mark the customers for a push, commit, then hint RQ."""
    marked = [mark_dirty(c, site.id) for c in customers]
    db.session.commit()
    assert request_reconcile(marked, trigger="import") == len(marked)
    assert queued_jobs() == len(marked)
    return [a.id for a in marked]


def all_customers() -> list[Customer]:
    return list(db.session.scalars(select(Customer).order_by(Customer.id)))


def drain_after_relay(workers: Workers) -> None:
    """What the cron and the workers do: relay what is owed, work the queues; a few rounds at most."""
    for _ in range(ROUNDS):
        relay()
        workers.burst(BURST_WORKERS)
        rows = accounts()
        if len(converged(rows)) == len(rows):
            return
    done = converged(rows)
    pytest.fail(f"accounts still owed after {ROUNDS} relays: "
                + ", ".join(f"{a.id} ({a.state}, {a.last_error})" for a in rows if a.id not in done))


def assert_pti_matches_the_mirror(site: Site, sim: PtiSim, customers: list[Customer]) -> None:
    """Per customer exactly what the mirror wants; no duplicate users or codes; every other unit vacant."""
    db.session.rollback()
    state = sim.site(SITE.pti_site_code)
    problems = site_invariant_problems(state) + mismatches(site, state, customers, every_unit=True)
    assert not problems, "PTI does not match the mirror:\n" + "\n".join(problems)


# --- the tests ------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_worker_killed_mid_job_and_redis_restarted_empty_converge_through_the_relay(site, slow_pti, own_redis,
                                                                                       workers):
    slow_pti.faults(latency_ms=WRITE_LATENCY_MS, operations=WRITES)
    marked = ask_for_pushes(site, all_customers())
    worker = workers.start()

    # Kill it right after a job created a PTI user: the rest of that job's plan (its units) is still to come. (Any
    # such user will do, not only the last call: on a loaded machine a poll may come a call or two late.)
    def mid_job():
        assert worker.poll() is None, f"the worker stopped by itself:\n{workers.log_tail(worker)}"
        rows = accounts()
        done = converged(rows)
        if len(done) < KILL_AFTER:
            return None
        pending = {c.email for c in db.session.scalars(select(Customer).where(Customer.id.in_(
            [a.customer_id for a in rows if a.id not in done])))}
        db.session.rollback()
        created = [c for c in slow_pti.calls() if c["operation"] == "create_user" and c["status"] == 200
                   and c.get("email") in pending]
        return created[-1] if created else None

    created = wait_for(mid_job, f"{KILL_AFTER} accounts to converge and then a job to create a PTI user")
    assert started_jobs() == 1, "no job was running when the worker was killed"
    workers.kill(worker)

    own_redis.stop()
    own_redis.start()  # --save "": the queues, the pending hints, the locks and the site's slots are gone
    get_redis().connection_pool.disconnect()
    assert queued_jobs() == started_jobs() == 0

    rows = accounts()
    done = converged(rows)
    assert KILL_AFTER <= len(done) < len(marked)
    customer = db.session.scalar(select(Customer).where(Customer.email == created["email"]))
    interrupted = next(a for a in rows if a.customer_id == customer.id)
    assert interrupted.id not in done, "the killed job had finished after all: nothing was interrupted"

    drain_after_relay(workers)
    assert_pti_matches_the_mirror(site, slow_pti, all_customers())
    created = [c for c in slow_pti.calls() if c["operation"] == "create_user" and c["applied"]]
    assert len(created) == len(slow_pti.site(SITE.pti_site_code)["users"]), "a PTI user was created twice"


def test_a_job_redis_lost_before_any_worker_ran_is_delivered_by_the_relay_alone(site, slow_pti, own_redis, workers):
    customers = all_customers()[:3]
    marked = ask_for_pushes(site, customers)
    get_redis().flushall()
    assert queued_jobs() == 0

    assert relay() == len(marked)
    workers.burst()

    assert converged(accounts()) == set(marked)
    assert_pti_matches_the_mirror(site, slow_pti, customers)
