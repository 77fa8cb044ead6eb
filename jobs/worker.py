"""The RQ worker process: drains urgent, then default, then bulk, inside the app context, with the scheduler on."""

from __future__ import annotations

from flask import current_app
from rq import Worker

from dashboard.extensions import db
from dashboard.jobqueue import QUEUE_NAMES, get_redis


class AppWorker(Worker):
    """A forking worker whose work horses never reuse the parent's database connections."""

    def main_work_horse(self, job, queue):
        db.engine.dispose(close=False)
        super().main_work_horse(job, queue)


def run_worker(*, burst: bool = False) -> None:
    """Run inside `flask worker` (an app context is pushed, and inherited by each forked work horse)."""
    conn = get_redis()
    worker = AppWorker(list(QUEUE_NAMES), connection=conn, name=None)
    current_app.logger.info("worker listening on %s", ", ".join(QUEUE_NAMES))
    worker.work(burst=burst, with_scheduler=True)
