"""How long the journal (`sync_attempts`) and the recorded webhook deliveries are kept, and the job that prunes them.

Both tables grow with every push and every webhook; nothing else deletes from them. `prune` deletes rows older than
their retention in bounded batches (one short transaction each, so it never holds a long lock on a busy table), at
most `max_batches` per run; the next run carries on. A delivery still `queued` is owed to the worker and is never
deleted, whatever its age.

The retention settings are read with the others (dashboard/config.py; README, Configuration). The Trends rollup
(dashboard/trends.py) is not the journal: it keeps its hourly rows 7 days and its daily rows 400, whatever the
journal's retention.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import delete, select

from . import trends
from .extensions import db
from .mirror.deliveries import QUEUED
from .models import SyncAttempt, WebhookDelivery, utcnow

log = logging.getLogger(__name__)

PRUNE_BATCH = 5000  # rows per DELETE
PRUNE_MAX_BATCHES = 100  # DELETEs per table per run: a run stays short, the next one carries on


@dataclass
class Pruned:
    attempts: int = 0
    deliveries: int = 0
    trends: int = 0


def _in_batches(model, *where, batch: int, max_batches: int) -> int:
    table = model.__table__
    deleted = 0
    for _ in range(max_batches):
        ids = select(table.c.id).where(*where).order_by(table.c.id).limit(batch).scalar_subquery()
        count = db.session.execute(delete(table).where(table.c.id.in_(ids))).rowcount
        db.session.commit()
        deleted += count
        if count < batch:
            break
    return deleted


def prune(*, batch: int = PRUNE_BATCH, max_batches: int = PRUNE_MAX_BATCHES) -> Pruned:
    """Delete journal rows and handled deliveries older than their retention (0 days: keep them all)."""
    config = current_app.config
    now = utcnow()
    pruned = Pruned()
    if (days := config["JOURNAL_RETENTION_DAYS"]) > 0:
        pruned.attempts = _in_batches(SyncAttempt, SyncAttempt.started_at < now - timedelta(days=days),
                                      batch=batch, max_batches=max_batches)
    if (days := config["DELIVERY_RETENTION_DAYS"]) > 0:
        pruned.deliveries = _in_batches(WebhookDelivery, WebhookDelivery.received_at < now - timedelta(days=days),
                                        WebhookDelivery.status != QUEUED, batch=batch, max_batches=max_batches)
    pruned.trends = trends.prune(now)
    if pruned.attempts or pruned.deliveries:
        log.info("pruned %d journal rows and %d webhook deliveries", pruned.attempts, pruned.deliveries)
    return pruned
