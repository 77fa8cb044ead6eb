"""Redis, the RQ queues and every job's name: one place that owns their lifecycle (get_redis, get_queue, enqueue).

Jobs are enqueued by dotted name so the web process never imports job code; `JOBS` below is the one table of them.
Three queues, drained in order: `urgent` (lockouts and unlocks: a payment's unlock never waits behind a bulk push),
`default`, `bulk`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime

import redis
from flask import current_app
from rq import Queue
from rq.job import Job

log = logging.getLogger(__name__)

URGENT = "urgent"
DEFAULT = "default"
BULK = "bulk"
QUEUE_NAMES = (URGENT, DEFAULT, BULK)

REDIS_SOCKET_TIMEOUT_S = 2.0  # a Redis that is down must fail a page fast, not hang it
REDIS_HEALTH_CHECK_S = 30
JOB_TIMEOUT_S = 600  # one job; a bulk batch says its own
JOB_RESULT_TTL_S = 600  # the database keeps the durable history; Redis only minutes of results

# Every job, by the dotted name RQ imports in the worker. Enqueue these constants, never a spelled-out name.
RECONCILE = "jobs.reconcile.reconcile_account"
RECONCILE_BATCH = "jobs.reconcile.reconcile_batch"
HANDLE_DELIVERY = "jobs.events.handle_delivery"
WRITE_BACK = "jobs.writeback.write_back_account"
REPORT_PROBLEMS = "jobs.writeback.report_problems"
WRITE_BACK_OVERRIDES = "jobs.writeback.write_back_overrides"
WRITE_BACK_OWED = "jobs.writeback.write_back_owed"
RELAY = "jobs.maintenance.relay_owed"
SWEEP = "jobs.maintenance.sweep_all"
PRUNE = "jobs.maintenance.prune_history"
TRENDS = "jobs.maintenance.feed_trends"
PULL = "jobs.pull.pull_changes"
IMPORT = "jobs.pull.import_all"
FIX_DRIFT = "jobs.maintenance.fix_drift"
CHECK_UPLOAD = "jobs.uploads.check_upload"
APPLY_UPLOAD = "jobs.uploads.apply_upload"

JOBS: dict[str, str] = {
    RECONCILE: "make PTI match Storeganise for one customer at one site",
    RECONCILE_BATCH: "the same for a batch of one site's customers (a site push), PTI calls in parallel",
    HANDLE_DELIVERY: "act on one recorded Storeganise webhook delivery",
    WRITE_BACK: "write a push's results (pti_synced, pti_overlocked, access code, PTI user id) to Storeganise",
    REPORT_PROBLEMS: "raise a Storeganise task for each standing problem not reported yet, once per cause",
    WRITE_BACK_OVERRIDES: "write a customer's access level and zone set by staff to Storeganise",
    WRITE_BACK_OWED: "write every push result and staff override still owed to Storeganise (asked by the relay)",
    RELAY: "re-enqueue every account and delivery still owed that no live job holds (every 15 s, urgent queue)",
    SWEEP: "compare each site's PTI users and units with the mirror; mark drifted customers (hourly)",
    PRUNE: "delete journal rows and handled webhook deliveries past their retention, in bounded batches (hourly)",
    TRENDS: "add the journal's new rows to the Trends page's hourly and daily rollup (every minute)",
    PULL: "read the rentals Storeganise changed since the last pull (every 5 min)",
    IMPORT: "import every site, unit, rental and renting customer from Storeganise",
    FIX_DRIFT: "remove one PTI user the drift sweep found stray (an orphan or a duplicate), if still safe",
    CHECK_UPLOAD: "read and check a CSV upload chunk by chunk and build its preview (default queue: someone waits)",
    APPLY_UPLOAD: "mark a confirmed CSV upload's rentals for a push, all in one transaction (default queue)",
}

# Jobs that read or write a whole site or more: each runs in a forked work horse, so its memory goes back to the
# system when it ends and a crash in it takes nothing else down. Every other job (one event, one customer) runs
# warm in the worker process: its database pool, PTI sessions and TLS context kept, no fork per event.
FORKED_JOBS = frozenset({RECONCILE_BATCH, WRITE_BACK_OWED, SWEEP, PRUNE, PULL, IMPORT, CHECK_UPLOAD, APPLY_UPLOAD})


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=REDIS_SOCKET_TIMEOUT_S,
                                socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
                                health_check_interval=REDIS_HEALTH_CHECK_S)


def get_redis() -> redis.Redis:
    """The Redis connection of this app (one client with its own pool per app)."""
    app = current_app._get_current_object()
    conn = app.extensions.get("pti_sync_redis")
    if conn is None:
        conn = app.extensions["pti_sync_redis"] = connect(app.config["REDIS_URL"])
    return conn


def close_redis(app) -> None:
    """Close the app's Redis pool (an app that ends before its process: tests, one-off commands)."""
    conn = app.extensions.pop("pti_sync_redis", None)
    if conn is not None:
        conn.close()


def get_queue(name: str = DEFAULT) -> Queue:
    return Queue(name, connection=get_redis(), default_timeout=current_app.config["JOB_TIMEOUT_S"])


def enqueue(job: str, *args, queue: str = DEFAULT, job_id: str | None = None, **options):
    """Enqueue one of `JOBS` by name; a `job_id` makes the enqueue idempotent while it is queued."""
    if job not in JOBS:
        raise ValueError(f"{job} is not in the job table (dashboard/jobqueue.py JOBS)")
    options.setdefault("result_ttl", JOB_RESULT_TTL_S)
    return get_queue(queue).enqueue(job, *args, job_id=job_id, **options)


def hint(job: str, *args, **options) -> bool:
    """`enqueue` for a job whose work the database already records as owed (the relay re-drives it): a Redis
    failure is logged, never raised, so a committed change is never reported as failed. True when enqueued."""
    try:
        enqueue(job, *args, **options)
    except redis.RedisError as exc:
        log.warning("could not enqueue %s (%s): the relay will ask again", job.rsplit(".", 1)[-1],
                    exc.__class__.__name__)
        return False
    return True


def naive_utc(moment: datetime | None) -> datetime | None:
    """RQ's times are aware UTC; the database's (and the templates' `when` macro's) are naive UTC."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment and moment.tzinfo else moment


def head_enqueued_at(queue: Queue) -> datetime | None:
    """When the job that has waited longest in `queue` (its head: RQ appends) was enqueued; None when it is empty."""
    head = queue.get_job_ids(0, 0)
    job = Job.fetch_many(head, connection=queue.connection)[0] if head else None
    return naive_utc(job.enqueued_at) if job is not None else None


def queue_depth() -> int:
    conn = get_redis()
    return sum(Queue(name, connection=conn).count for name in QUEUE_NAMES)


def init_app(app) -> None:
    app.config.setdefault("JOB_TIMEOUT_S", JOB_TIMEOUT_S)


@contextmanager
def beating(every_s: float, beat: Callable[[], bool | None], name: str):
    """Call `beat` every `every_s` in a daemon thread while the block runs (a job's heartbeat, a lock kept alive);
    a beat that returns False stops the beating. The thread is stopped when the block ends, however it ends."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(every_s):
            if beat() is False:
                return

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(every_s)
