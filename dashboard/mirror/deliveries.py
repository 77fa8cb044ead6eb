"""Storeganise deliveries between the receiver and the worker: their statuses, their jobs and the relay's re-enqueue.

A delivery row is the durable record; the RQ job (one per delivery, with a stable id) is only the hint. Lock and
unlock events go to the urgent queue so a payment's unlock never waits behind other work.
"""

from __future__ import annotations

import hashlib
import logging
import re
from datetime import timedelta

from rq import Retry
from rq.job import Job, JobStatus
from sqlalchemy import select

from ..extensions import db
from ..jobqueue import DEFAULT, HANDLE_DELIVERY, URGENT, enqueue, get_redis
from ..models import WebhookDelivery, utcnow
from ..storeganise.webhooks import MARK_OVERDUE, UNMARK_OVERDUE

QUEUED = "queued"  # recorded, owed to the worker
PROCESSED = "processed"
IGNORED = "ignored"  # a type the product does not act on
ECHO = "echo"  # the update our own write to Storeganise caused, recognised at the receiver (dashboard/echoes.py)
FAILED = "failed"  # a permanent error; `error` says why

URGENT_TYPES = frozenset({MARK_OVERDUE, UNMARK_OVERDUE})
# RQ's own retries of a transient failure; after them the relay keeps re-enqueueing until Storeganise answers.
JOB_RETRY = Retry(max=3, interval=[10, 30, 60])
RELAY_BATCH = 500
SAFE_JOB_ID = re.compile(r"[A-Za-z0-9_-]+")
LIVE_JOB_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED, JobStatus.DEFERRED})

log = logging.getLogger(__name__)


def job_id(delivery_id: str) -> str:
    """A stable RQ job id per delivery (RQ allows only letters, digits, _ and -)."""
    if SAFE_JOB_ID.fullmatch(delivery_id):
        return f"sg-delivery-{delivery_id}"
    return f"sg-delivery-{hashlib.sha256(delivery_id.encode()).hexdigest()[:32]}"


def enqueue_delivery(delivery_id: str, event_type: str):
    """Enqueue the delivery's job in one Redis round trip (the receiver answers within milliseconds)."""
    with get_redis().pipeline() as pipe:
        job = enqueue(HANDLE_DELIVERY, delivery_id, queue=URGENT if event_type in URGENT_TYPES else DEFAULT,
                      job_id=job_id(delivery_id), retry=JOB_RETRY, pipeline=pipe)
        pipe.execute()
    return job


def requeue_stale_deliveries(older_than_s: float = 30) -> int:
    """Enqueue again every delivery still "queued" after `older_than_s` whose job Redis no longer holds alive.

    Called by the relay. A delivery whose job is queued, running or waiting for a retry is left alone, so a
    backlog is never duplicated; one whose job is gone (Redis restarted) or failed is enqueued again.
    """
    cutoff = utcnow() - timedelta(seconds=older_than_s)
    rows = db.session.execute(
        select(WebhookDelivery.id, WebhookDelivery.type)
        .where(WebhookDelivery.status == QUEUED, WebhookDelivery.received_at < cutoff)
        .order_by(WebhookDelivery.received_at).limit(RELAY_BATCH)
    ).all()
    if not rows:
        return 0
    jobs = Job.fetch_many([job_id(row.id) for row in rows], connection=get_redis())
    requeued = 0
    for row, job in zip(rows, jobs, strict=True):
        if job is not None and job.get_status(refresh=False) in LIVE_JOB_STATUSES:
            continue
        enqueue_delivery(row.id, row.type)
        requeued += 1
    if requeued:
        log.info("re-enqueued %d Storeganise deliveries the queue had lost or given up on", requeued)
    return requeued
