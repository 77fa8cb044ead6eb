"""The RQ worker process: drains urgent, then default, then bulk, inside the app context, with the scheduler on."""

from __future__ import annotations

from flask import current_app
from rq import Worker

from dashboard.extensions import db
from dashboard.httpclient import tls_context
from dashboard.jobqueue import QUEUE_NAMES, connect


class AppWorker(Worker):
    """A forking worker whose work horses never reuse the parent's database connections."""

    def main_work_horse(self, job, queue):
        db.engine.dispose(close=False)
        super().main_work_horse(job, queue)


def build_worker() -> AppWorker:
    """A worker on a Redis connection of its own. RQ raises its connection's socket time-out to wait on the queues
    (about 7 minutes); on the app's shared connection that would let a lock, a site-guard slot or an enqueue inside a
    job hang that long when Redis stops answering, instead of the app's 2 s."""
    return AppWorker(list(QUEUE_NAMES), connection=connect(current_app.config["REDIS_URL"]), name=None)


def run_worker(*, burst: bool = False) -> None:
    """Run inside `flask worker` (an app context is pushed, and inherited by each forked work horse)."""
    worker = build_worker()
    tls_context()  # built once here, inherited by every forked job instead of built again in each
    current_app.logger.info("worker listening on %s", ", ".join(QUEUE_NAMES))
    worker.work(burst=burst, with_scheduler=True)
