"""The RQ worker processes, inside the app context, with the scheduler on.

Two kinds (`flask worker --lane ...`):
- `all` (the default): drains urgent, then default, then bulk; each job in a forked work horse, so a long bulk
  batch that leaks or crashes takes nothing else down.
- `urgent`: only the urgent queue (payments, lockouts, manual suspends, the relay), never busy with a bulk batch,
  so an unlock never waits behind one; and without a fork per job: the process stays warm (its database pool, its
  PTI sessions and TLS context), which is most of an event's latency. A job that kills the process is re-driven by
  the relay like any dead job (the intent is in the database); the process manager starts it again.
"""

from __future__ import annotations

from flask import current_app
from rq import SimpleWorker, Worker

from dashboard.extensions import db
from dashboard.httpclient import tls_context
from dashboard.jobqueue import QUEUE_NAMES, URGENT, connect

LANES = {"all": QUEUE_NAMES, "urgent": (URGENT,)}


class AppWorker(Worker):
    """A forking worker whose work horses never reuse the parent's database connections."""

    def main_work_horse(self, job, queue):
        db.engine.dispose(close=False)
        super().main_work_horse(job, queue)


class WarmWorker(SimpleWorker):
    """Runs each job in this process (no fork). Each job starts with a fresh database session, as a forked one
    would: nothing one job loaded or left uncommitted is seen by the next."""

    def perform_job(self, job, queue) -> bool:
        try:
            return super().perform_job(job, queue)
        finally:
            db.session.remove()


def build_worker(lane: str = "all") -> Worker:
    """A worker on a Redis connection of its own. RQ raises its connection's socket time-out to wait on the queues
    (about 7 minutes); on the app's shared connection that would let a lock, a site-guard slot or an enqueue inside a
    job hang that long when Redis stops answering, instead of the app's 2 s."""
    kind = WarmWorker if lane == "urgent" else AppWorker
    return kind(list(LANES[lane]), connection=connect(current_app.config["REDIS_URL"]), name=None)


def run_worker(*, burst: bool = False, lane: str = "all") -> None:
    """Run inside `flask worker` (an app context is pushed, and inherited by each forked work horse)."""
    worker = build_worker(lane)
    tls_context()  # built once here, inherited by every forked job instead of built again in each
    current_app.logger.info("worker listening on %s", ", ".join(LANES[lane]))
    worker.work(burst=burst, with_scheduler=True)
