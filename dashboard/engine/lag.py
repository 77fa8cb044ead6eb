"""How far sync is behind: the oldest change still owed to PTI, the oldest webhook not handled yet, and how long the
urgent queue's head has waited. The banner on every page and `/metrics` read the same figures and the same two
thresholds (`SYNC_STALE_AFTER_S`, `URGENT_STALE_AFTER_S`), so an alert and a person see one truth.

Parked failures do not count: they wait for a person, on the Failures page, and would keep the banner up for good.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import redis
from flask import current_app
from sqlalchemy import func, select

from ..extensions import db
from ..jobqueue import URGENT, get_queue, head_enqueued_at
from ..models import PtiAccount, SyncState, WebhookDelivery

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Lag:
    """Ages in seconds at `now`; None where nothing waits (or, for the urgent queue, where Redis did not answer)."""

    owed_s: float | None  # the oldest change owed to PTI and not parked
    urgent_owed_s: float | None  # the oldest of those that is a lock or an unlock
    delivery_s: float | None  # the oldest webhook delivery still queued
    urgent_job_s: float | None  # the urgent queue's head
    redis_ok: bool = True

    def reasons(self, stale_after_s: float, urgent_after_s: float) -> list[str]:
        """Why sync is stale, in words; empty when it is keeping up."""
        found = []
        if self.urgent_owed_s is not None and self.urgent_owed_s > urgent_after_s:
            found.append(f"a lock or unlock has been owed to PTI for {duration(self.urgent_owed_s)}")
        if self.urgent_job_s is not None and self.urgent_job_s > urgent_after_s:
            found.append(f"the urgent queue's oldest job has waited {duration(self.urgent_job_s)}")
        if self.owed_s is not None and self.owed_s > stale_after_s:
            found.append(f"the oldest change owed to PTI was made {duration(self.owed_s)} ago")
        if self.delivery_s is not None and self.delivery_s > stale_after_s:
            found.append(f"a webhook from Storeganise has waited {duration(self.delivery_s)} to be handled")
        return found

    @property
    def worst_s(self) -> float:
        """The largest of the ages: the gauge an alert watches."""
        return max((s for s in (self.owed_s, self.urgent_owed_s, self.delivery_s, self.urgent_job_s)
                    if s is not None), default=0.0)


def duration(seconds: float | None) -> str:
    """Seconds as an operator reads them: 42 s, 3 min 5 s, 2 h 10 min."""
    if seconds is None:
        return "—"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min" + (f" {seconds % 60} s" if seconds % 60 else "")
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def _age(now: datetime, since: datetime | None) -> float | None:
    return None if since is None else max(0.0, (now - since).total_seconds())


def measure(now: datetime) -> Lag:
    """Two indexed queries and two Redis round trips, whatever the mirror's size: the accounts with a change owed
    through the index on `owed_since` (a range that only leaves out NULL, which min() skips anyway: written as a
    range, SQLite's planner takes the index without statistics), the oldest queued delivery through (status,
    received_at)."""
    owed = (PtiAccount.owed_since >= datetime.min, PtiAccount.generation > PtiAccount.synced_generation,
            PtiAccount.state != SyncState.FAILED)
    oldest, oldest_urgent = db.session.execute(select(
        func.min(PtiAccount.owed_since), func.min(PtiAccount.owed_since).filter(PtiAccount.urgent)).where(*owed)).one()
    delivery = db.session.scalar(select(func.min(WebhookDelivery.received_at))
                                 .where(WebhookDelivery.status == "queued"))
    try:
        queue = get_queue(URGENT)
        urgent_job_s, redis_ok = _age(now, head_enqueued_at(queue)), True
    except redis.RedisError as exc:
        log.warning("lag: Redis is not answering (%s)", exc.__class__.__name__)
        urgent_job_s, redis_ok = None, False
    return Lag(_age(now, oldest), _age(now, oldest_urgent), _age(now, delivery), urgent_job_s, redis_ok)


def stale_reasons(lag: Lag) -> list[str]:
    """`Lag.reasons` against the configured thresholds."""
    config = current_app.config
    return lag.reasons(config["SYNC_STALE_AFTER_S"], config["URGENT_STALE_AFTER_S"])
