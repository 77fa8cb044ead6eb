"""Redis and the RQ queues: one place that owns their lifecycle (get_redis, get_queue, enqueue, init_app).

Jobs are enqueued by dotted name so the web process never imports job code. Three queues, drained in order:
`urgent` (lockouts and unlocks: a payment's unlock never waits behind a bulk push), `default`, `bulk`.
"""

from __future__ import annotations

import redis
from flask import current_app
from rq import Queue

URGENT = "urgent"
DEFAULT = "default"
BULK = "bulk"
QUEUE_NAMES = (URGENT, DEFAULT, BULK)

REDIS_SOCKET_TIMEOUT_S = 2.0  # a Redis that is down must fail a page fast, not hang it
JOB_RESULT_TTL_S = 600  # the database keeps the durable history; Redis only minutes of results


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=REDIS_SOCKET_TIMEOUT_S,
                                socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S, health_check_interval=30)


def get_redis() -> redis.Redis:
    """The Redis connection of this app (one client with its own pool per app)."""
    app = current_app._get_current_object()
    conn = app.extensions.get("pti_sync_redis")
    if conn is None:
        conn = app.extensions["pti_sync_redis"] = connect(app.config["REDIS_URL"])
    return conn


def get_queue(name: str = DEFAULT) -> Queue:
    return Queue(name, connection=get_redis(), default_timeout=current_app.config["JOB_TIMEOUT_S"])


def enqueue(func_path: str, *args, queue: str = DEFAULT, job_id: str | None = None, **kwargs):
    """Enqueue `jobs.<module>.<function>` by name; a `job_id` makes the enqueue idempotent while it is queued."""
    return get_queue(queue).enqueue(func_path, *args, job_id=job_id, result_ttl=JOB_RESULT_TTL_S, **kwargs)


def queue_depth() -> int:
    conn = get_redis()
    return sum(Queue(name, connection=conn).count for name in QUEUE_NAMES)


def init_app(app) -> None:
    app.config.setdefault("JOB_TIMEOUT_S", 600)
