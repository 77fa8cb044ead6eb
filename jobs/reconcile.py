"""Reconcile jobs: one account, or a batch of a site's accounts with bounded parallel PTI calls."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from flask import current_app
from rq import get_current_job

from dashboard.intent import PENDING_KEY
from dashboard.queue import get_redis
from dashboard.reconcile import reconcile


def reconcile_account(account_id: int, trigger: str = "relay") -> str:
    """Make PTI match Storeganise for one customer at one site (every trigger maps to this)."""
    # First: from now on any newer intent enqueues a new job, which waits for this one's lock.
    get_redis().delete(PENDING_KEY.format(account_id=account_id))
    job = get_current_job()
    return reconcile(account_id, trigger, job.id if job else None).outcome


def reconcile_batch(account_ids: list[int], trigger: str = "bulk") -> dict[str, int]:
    """Reconcile many accounts of one site, PTI_SITE_CONCURRENCY at a time (the site guard still caps the
    calls across all workers). A bulk push goes through this: one forked job, many PTI calls in flight."""
    app = current_app._get_current_object()
    if account_ids:
        get_redis().delete(*[PENDING_KEY.format(account_id=a) for a in account_ids])
    job = get_current_job()

    def one(account_id: int) -> str:
        with app.app_context():
            return reconcile(account_id, trigger, job.id if job else None).outcome

    outcomes: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=app.config["PTI_SITE_CONCURRENCY"]) as pool:
        for outcome in pool.map(one, account_ids):
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes
