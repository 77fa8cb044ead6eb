"""Periodic jobs (registered by `flask cron`): the relay, the drift sweep, the Trends rollup and the pruning of old
history."""

from __future__ import annotations

import logging

from sqlalchemy import select

from dashboard.clients import pti_client, pti_connection
from dashboard.engine import problems, writeback
from dashboard.engine.drift_fix import remove_stray
from dashboard.engine.intent import relay
from dashboard.engine.sweep import sweep_site
from dashboard.extensions import db
from dashboard.mirror.deliveries import requeue_stale_deliveries
from dashboard.models import Site
from dashboard.pti import PtiError
from dashboard.retention import prune
from dashboard.trends import feed

log = logging.getLogger(__name__)


def relay_owed() -> int:
    """Re-enqueue accounts and webhook deliveries whose job Redis lost; ask for the problems and write-backs still
    owed to Storeganise."""
    accounts = relay()
    deliveries = requeue_stale_deliveries()
    reports = problems.request_reports()
    write_backs = writeback.request_write_backs()
    if accounts or deliveries:
        log.info("relay re-enqueued %s accounts and %s webhook deliveries", accounts, deliveries)
    return accounts + deliveries + reports + write_backs


def sweep_all() -> dict[str, int]:
    """Run the drift sweep on every synced site; a site PTI refuses is reported and skipped."""
    drifted = {}
    for site in db.session.scalars(select(Site).where(Site.sync_enabled.is_(True))).all():
        connection = pti_connection(site)
        if connection is None:
            continue
        try:
            report = sweep_site(site, pti_client(site, connection))
        except PtiError as exc:
            log.warning("sweep of %s skipped: %s", site.code, exc)
            continue
        drifted[site.code] = len(report.drifted)
    return drifted


def fix_drift(site_id: int, kind: str, pti_user_id: str, actor: str) -> str:
    """Staff's fix of one drift report row (engine/drift_fix.py): what was done, or why nothing was."""
    return remove_stray(site_id, kind, pti_user_id, actor).message


def feed_trends() -> int:
    """Add the journal rows written since the last run to the Trends rollup."""
    return feed()


def prune_history() -> dict[str, int]:
    """Delete journal rows and handled webhook deliveries older than their retention (README, Configuration), and
    Trends rows past theirs. The journal's rows are added to the Trends rollup first, so none is pruned unread."""
    feed()
    pruned = prune()
    return {"attempts": pruned.attempts, "deliveries": pruned.deliveries, "trends": pruned.trends}
