"""Durable intent: "PTI owes this customer a push", recorded in the database first, then hinted to RQ.

Every trigger (webhook, import, staff action, CSV, sweep) ends here. `mark_dirty` bumps the account's
generation in the caller's transaction; `request_reconcile` enqueues the job after the commit. Redis can lose
the hint (restart, eviction): the relay job finds accounts whose generation is ahead of what was pushed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis
from sqlalchemy import select

from .extensions import db
from .models import ACTIVE_RENTAL_STATES, Customer, PtiAccount, Rental, SyncState
from .queue import BULK, DEFAULT, URGENT, enqueue, get_redis

log = logging.getLogger(__name__)

RECONCILE_JOB = "jobs.reconcile.reconcile_account"
PENDING_KEY = "pti-sync:pending:{account_id}"  # the queue of the reconcile job waiting for the account, if any
PENDING_TTL_S = 3600  # a hint outlives no job: the relay re-enqueues what is still owed after that


def account_for(customer: Customer | int, site_id: int) -> PtiAccount:
    """The customer's PTI account at the site, created (pending, generation 1) when it is the first time."""
    customer_id = customer if isinstance(customer, int) else customer.id
    # Lock the account row before any of the caller's pending rental changes are flushed: every writer takes the
    # account first, then its rentals, so two writers of one customer queue up instead of deadlocking.
    with db.session.no_autoflush:
        account = db.session.scalar(
            select(PtiAccount).where(PtiAccount.customer_id == customer_id, PtiAccount.site_id == site_id)
            .with_for_update()
        )
    if account is None:
        account = PtiAccount(customer_id=customer_id, site_id=site_id, generation=1, synced_generation=0)
        db.session.add(account)
        db.session.flush()
    return account


def mark_dirty(customer: Customer | int, site_id: int, *, urgent: bool = False) -> PtiAccount:
    """Record in the caller's transaction that this customer's PTI access at the site must be pushed again."""
    account = account_for(customer, site_id)
    account.generation = max(account.generation, account.synced_generation) + 1
    account.state = SyncState.PENDING
    account.urgent = account.urgent or urgent
    account.attempts = 0
    account.next_attempt_at = None
    db.session.execute(
        Rental.__table__.update()
        .where(Rental.customer_id == account.customer_id, Rental.site_id == site_id,
               Rental.state.in_(ACTIVE_RENTAL_STATES),
               Rental.sync_state.in_([SyncState.IN_SYNC, SyncState.FAILED, SyncState.PENDING]))
        .values(sync_state=SyncState.PENDING)
    )
    return account


def request_reconcile(accounts: Iterable[PtiAccount | int], *, trigger: str, bulk: bool = False) -> int:
    """After the commit: enqueue one reconcile per account unless one is already queued. Returns how many.

    Urgent accounts (a lock or unlock is owed) go to the urgent queue, so no bulk push delays a payment's unlock.
    A Redis failure is logged, not raised: the intent is already in the database and the relay will deliver it.
    """
    enqueued = 0
    try:
        conn = get_redis()
        for item in accounts:
            account = item if isinstance(item, PtiAccount) else db.session.get(PtiAccount, item)
            if account is None:
                continue
            queue = URGENT if account.urgent else (BULK if bulk else DEFAULT)
            key = PENDING_KEY.format(account_id=account.id)
            if not conn.set(key, queue, nx=True, ex=PENDING_TTL_S):
                # A queued job will read the newest intent when it runs, unless it waits in a slower queue than
                # a lock or unlock may: then an urgent job goes too (the account lock keeps them apart).
                if queue != URGENT or conn.get(key) == URGENT.encode():
                    continue
                conn.set(key, URGENT, ex=PENDING_TTL_S)
            enqueue(RECONCILE_JOB, account.id, trigger, queue=queue)
            enqueued += 1
    except redis.RedisError as exc:
        log.warning("could not enqueue reconciles (%s): the relay will pick them up", exc.__class__.__name__)
    return enqueued
