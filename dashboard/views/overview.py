"""Overview: every site's sync health at a glance (managers' home page)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from flask import Blueprint, render_template
from sqlalchemy import func, select

from ..extensions import db
from ..models import ACTIVE_RENTAL_STATES, Rental, Site, SyncState
from ..security import EVERYONE, roles_required

bp = Blueprint("overview", __name__)


@dataclass
class SiteHealth:
    site: Site
    states: dict[str, int] = field(default_factory=dict)
    overlocked: int = 0
    last_synced: datetime | None = None

    @property
    def active(self) -> int:
        return sum(self.states.values())

    @property
    def health(self) -> str:
        """ok, warn or bad, with words on the tile (never colour alone)."""
        if self.states.get(SyncState.FAILED):
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


@bp.route("/")
@roles_required(*EVERYONE)
def index():
    sites = site_health()
    totals: dict[str, int] = {}
    for s in sites:
        for state, n in s.states.items():
            totals[state] = totals.get(state, 0) + n
    return render_template("overview/index.html", sites=sites, totals=totals, SyncState=SyncState,
                           overlocked=sum(s.overlocked for s in sites))
