"""The RQ worker processes, inside the app context, with the scheduler on.

Two lanes (`flask worker --lane ...`):
- `all` (the default): drains urgent, then default, then bulk.
- `urgent`: only the urgent queue (payments, lockouts, manual suspends, the relay), never busy with a bulk batch,
  so an unlock never waits behind one.

In both, a job about one event or one customer runs warm in the worker process (its database pool, PTI sessions
and TLS context kept: a fork and a fresh PTI login were most of an event's latency), while a job over a whole site
or more (`FORKED_JOBS`: a bulk batch, an import, the sweep) gets a forked work horse, so a long batch that leaks or
crashes takes nothing else down. A warm job that kills the process is re-driven by the relay like any dead job (the
intent is in the database); the process manager starts the worker again. A delivery's write-back to Storeganise,
after its gate, is finished by a thread of the process (jobs/after_gate.py), so the next payment does not wait for it.
"""

from __future__ import annotations

import logging
import os

import httpx
from flask import current_app
from rq import SimpleWorker, Worker
from rq.worker import WorkerStatus
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import configure_mappers

from dashboard.clients import PTI_CLIENTS_EXTENSION, STOREGANISE_CLIENT_EXTENSION
from dashboard.extensions import db
from dashboard.httpclient import tls_context
from dashboard.jobqueue import FORKED_JOBS, QUEUE_NAMES, URGENT, connect
from jobs.after_gate import AFTER_GATE_EXTENSION, start_after_gate, stop_after_gate
from jobs.rehearsal import rehearse

log = logging.getLogger(__name__)

LANES = {"all": QUEUE_NAMES, "urgent": (URGENT,)}


def runs_warm(job) -> bool:
    return job.func_name not in FORKED_JOBS


class AppWorker(Worker):
    """Runs one-event jobs in this process and forks a work horse for whole-site jobs (see the module's note)."""

    def execute_job(self, job, queue):
        if not runs_warm(job):
            return super().execute_job(job, queue)
        self.prepare_execution(job)
        try:
            self.perform_job(job, queue)
        finally:
            db.session.remove()  # the next job starts with a fresh session, as a forked one would
        self.set_state(WorkerStatus.IDLE)

    def get_heartbeat_ttl(self, job) -> int:
        # Nothing beats for a warm job while it runs (no horse to watch): its heartbeat must outlast the job.
        if runs_warm(job):
            return SimpleWorker.get_heartbeat_ttl(self, job)
        return super().get_heartbeat_ttl(job)

    def main_work_horse(self, job, queue):
        # The horse shares nothing live with its parent: not the database connections, and not the PTI and
        # Storeganise clients' sockets, whose TLS state the parent goes on using (dropped, not closed: closing would
        # end the parent's).
        db.engine.dispose(close=False)
        current_app.extensions.pop(PTI_CLIENTS_EXTENSION, None)
        current_app.extensions.pop(STOREGANISE_CLIENT_EXTENSION, None)
        current_app.extensions.pop(AFTER_GATE_EXTENSION, None)  # the parent's thread is not in the horse
        step_back(current_app.config["HORSE_NICENESS"])
        super().main_work_horse(job, queue)


def step_back(niceness: int) -> int:
    """Lower this process's CPU priority by `niceness` (a forked horse's whole-site work: a bulk batch, an import, the
    sweep), so that on a busy machine the warm jobs (a payment's unlock, a lockout, a webhook's handler) and the web
    get the CPU first, and the bulk push takes what is left. Only ever lowered: the horse ends with its job, and the
    worker process itself keeps its priority. Returns the niceness the process now has."""
    return os.nice(max(0, niceness))


def warm_up() -> None:
    """Ready this process for its first job, so that the first payment after a (re)start unlocks nearly as fast as
    the next: the TLS context every client verifies with (built once here, used by every warm job and inherited by
    every forked one); httpx's transport, which it imports on the first client it builds (httpcore and h11,
    70-140 ms); the ORM's mappers, configured on the first query; a first database connection in the pool; and, on
    PostgreSQL unless WORKER_REHEARSAL is off, the event path's statements, compiled by a rehearsal of a lockout and
    a payment that keeps nothing (jobs/rehearsal.py). On an idle stack a fresh urgent process took 0.2-0.6 s over its
    first event against 0.08 s over the next (py-spy), and those first events made the p95 of event_to_gate. Only
    ever a head start: a database that is not answering yet is logged, and the worker starts anyway (its jobs meet
    the database as they would have)."""
    httpx.Client(verify=tls_context()).close()
    configure_mappers()
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        log.warning("worker starting without a database connection (%s): its first job opens one",
                    exc.__class__.__name__)
        return
    if current_app.config["WORKER_REHEARSAL"]:
        rehearse()  # the event path's statements compiled before the first event (jobs/rehearsal.py)


def build_worker(lane: str = "all") -> Worker:
    """A worker on a Redis connection of its own. RQ raises its connection's socket time-out to wait on the queues
    (about 7 minutes); on the app's shared connection that would let a lock, a site-guard slot or an enqueue inside a
    job hang that long when Redis stops answering, instead of the app's 2 s."""
    return AppWorker(list(LANES[lane]), connection=connect(current_app.config["REDIS_URL"]), name=None)


def run_worker(*, burst: bool = False, lane: str = "all") -> None:
    """Run inside `flask worker` (an app context is pushed, and inherited by each forked work horse)."""
    worker = build_worker(lane)
    warm_up()
    start_after_gate()  # its jobs' write-backs after the gate (jobs/after_gate.py)
    current_app.logger.info("worker listening on %s", ", ".join(LANES[lane]))
    try:
        worker.work(burst=burst, with_scheduler=True)
    finally:
        stop_after_gate()  # what its last jobs handed over is written before the process ends
