"""Overview: every site's sync health at a glance (managers' home page)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

import redis
from flask import Blueprint, render_template
from sqlalchemy import func, select

from ..engine.site_guard import outages
from ..extensions import db
from ..jobqueue import get_redis
from ..models import ACTIVE_RENTAL_STATES, Rental, Site, SyncState
from ..security import EVERYONE, roles_required

bp = Blueprint("overview", __name__)
log = logging.getLogger(__name__)


@dataclass
class SiteHealth:
    site: Site
    states: dict[str, int] = field(default_factory=dict)
    overlocked: int = 0
    last_synced: datetime | None = None
    pti_outage: str | None = None  # site_guard's PTI_DOWN, PTI_PROBING or PTI_RATE_LIMITED while calls are held back

    @property
    def active(self) -> int:
        return sum(self.states.values())

    @property
    def health(self) -> str:
        """ok, warn or bad, with words on the tile (never colour alone)."""
        if self.states.get(SyncState.FAILED) or self.pti_outage:
            return "bad"
        if self.states.get(SyncState.PENDING) or self.states.get(SyncState.SYNCING):
            return "warn"
        return "ok"


def site_health() -> list[SiteHealth]:
    """One grouped query for all sites: no query per site."""
    sites = db.session.scalars(select(Site).order_by(Site.title)).all()
    by_id = {s.id: SiteHealth(s) for s in sites}
    active = Rental.state.in_(ACTIVE_RENTAL_STATES)
    rows = db.session.execute(
        select(Rental.site_id, Rental.sync_state, func.count(), func.sum(Rental.overlocked.cast(db.Integer)),
               func.max(Rental.pti_synced))
        .where(active).group_by(Rental.site_id, Rental.sync_state)
    )
    for site_id, state, n, overlocked, last in rows:
        health = by_id[site_id]
        health.states[state] = n
        health.overlocked += overlocked or 0
        if last and (health.last_synced is None or last > health.last_synced):
            health.last_synced = last
    return list(by_id.values())


def queue_status(sites: list[SiteHealth]) -> bool:
    """Fill in each site's PTI outage from the site guards in Redis; False when Redis does not answer (within the
    app's Redis time-out), which the page shows: nothing new reaches PTI until it answers again."""
    try:
        found = outages(get_redis(), [s.site.id for s in sites])
    except redis.RedisError as exc:
        log.warning("overview: Redis is not answering (%s)", exc.__class__.__name__)
        return False
    for s in sites:
        s.pti_outage = found.get(s.site.id)
    return True


@bp.route("/")
@roles_required(*EVERYONE)
def index():
    sites = site_health()
    redis_ok = queue_status(sites)
    totals: dict[str, int] = {}
    for s in sites:
        for state, n in s.states.items():
            totals[state] = totals.get(state, 0) + n
    return render_template("overview/index.html", sites=sites, totals=totals, SyncState=SyncState,
                           overlocked=sum(s.overlocked for s in sites), redis_ok=redis_ok)
