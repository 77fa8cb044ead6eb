"""Durable intent: "PTI owes this customer a push", recorded in the database first, then hinted to RQ.

Every trigger (webhook, import, staff action, CSV, sweep, site push) ends here. `mark_dirty` bumps the account's
generation in the caller's transaction (`mark_site_dirty` does the same for many customers of a site at once);
`request_reconcile` enqueues the job after the commit. Redis can lose the hint (restart, eviction): the `relay`
finds accounts whose generation is ahead of what was pushed and enqueues them again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis
from sqlalchemy import case, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from ..extensions import db
from ..jobqueue import BULK, DEFAULT, RECONCILE, RECONCILE_BATCH, URGENT, enqueue, get_redis
from ..models import ACTIVE_RENTAL_STATES, Customer, PtiAccount, Rental, Site, SyncState, utcnow

log = logging.getLogger(__name__)

PENDING_KEY = "pti-sync:pending:{account_id}"  # the queue of the reconcile job waiting for the account, if any
PENDING_TTL_S = 3600  # a hint outlives no job: the relay re-enqueues what is still owed after that
BATCH_SIZE = 200  # accounts per bulk job: big enough to keep a site's calls in flight, small enough to retry
BATCH_JOB_TIMEOUT_S = 3600  # a batch of BATCH_SIZE accounts at a slow site
MARK_CHUNK = 500  # customer ids per IN (...) list
# A rental already pushed (or waiting, or failed) waits for the new push; unmapped and disabled ones keep their state.
REPUSHABLE_STATES = (SyncState.IN_SYNC, SyncState.FAILED, SyncState.PENDING)


def account_for(customer: Customer | int, site_id: int) -> PtiAccount:
    """The customer's PTI account at the site, created (pending, generation 1) when it is the first time."""
    customer_id = customer if isinstance(customer, int) else customer.id
    # Lock the account row before any of the caller's pending rental changes are flushed: every writer takes the
    # account first, then its rentals, so two writers of one customer queue up instead of deadlocking.
    # The first time, the row does not exist and FOR UPDATE locks nothing: two first marks of one customer would
    # both insert. INSERT ... ON CONFLICT DO NOTHING lets one of them create it (the other waits for that insert's
    # transaction, then inserts nothing), and both then lock the one row.
    lock = select(PtiAccount).where(PtiAccount.customer_id == customer_id, PtiAccount.site_id == site_id) \
        .with_for_update()
    with db.session.no_autoflush:
        account = db.session.scalar(lock)
        if account is None:
            _insert_missing(site_id, [customer_id])
            account = db.session.scalar(lock)
    return account


def _insert_missing(site_id: int, customer_ids: list[int]) -> None:
    """Create the accounts (pending, generation 1) of these customers at the site that no one has created yet."""
    table = PtiAccount.__table__
    dialect = db.session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    db.session.execute(
        insert(table).on_conflict_do_nothing(index_elements=[table.c.customer_id, table.c.site_id]),
        [{"customer_id": c, "site_id": site_id, "generation": 1, "synced_generation": 0,
          "state": SyncState.PENDING, "urgent": False, "attempts": 0} for c in customer_ids],
    )


def _rentals_pending(site_id: int, customer_ids: list[int]) -> None:
    """The active rentals of these customers at the site show as pending until their push."""
    db.session.execute(
        Rental.__table__.update()
        .where(Rental.site_id == site_id, Rental.customer_id.in_(customer_ids), Rental.state.in_(ACTIVE_RENTAL_STATES),
               Rental.sync_state.in_(REPUSHABLE_STATES))
        .values(sync_state=SyncState.PENDING)
    )


def mark_dirty(customer: Customer | int, site_id: int, *, urgent: bool = False) -> PtiAccount:
    """Record in the caller's transaction that this customer's PTI access at the site must be pushed again."""
    account = account_for(customer, site_id)
    account.generation = max(account.generation, account.synced_generation) + 1
    account.state = SyncState.PENDING
    account.urgent = account.urgent or urgent
    account.attempts = 0
    account.next_attempt_at = None
    _rentals_pending(site_id, [account.customer_id])
    return account


def mark_site_dirty(site_id: int, customer_ids: set[int]) -> list[int]:
    """`mark_dirty` for many customers of one site, in the caller's transaction; their account ids, by customer."""
    wanted = sorted(customer_ids)
    accounts = PtiAccount.__table__
    chunks = [wanted[start:start + MARK_CHUNK] for start in range(0, len(wanted), MARK_CHUNK)]
    known: set[int] = set()
    for chunk in chunks:
        known.update(db.session.scalars(select(PtiAccount.customer_id).where(
            PtiAccount.site_id == site_id, PtiAccount.customer_id.in_(chunk))))
    new = [c for c in wanted if c not in known]
    if new:  # created as account_for does (a concurrent first mark may create some first), then marked below
        _insert_missing(site_id, new)
    for chunk in chunks:
        db.session.execute(
            accounts.update()
            .where(accounts.c.site_id == site_id, accounts.c.customer_id.in_(chunk))
            .values(generation=case((accounts.c.generation > accounts.c.synced_generation, accounts.c.generation),
                                    else_=accounts.c.synced_generation) + 1,
                    state=SyncState.PENDING, attempts=0, next_attempt_at=None)
        )
        _rentals_pending(site_id, chunk)
    db.session.expire_all()  # the ORM's copies of these rows are stale now
    ids: dict[int, int] = {}
    for chunk in chunks:
        ids.update(db.session.execute(select(PtiAccount.customer_id, PtiAccount.id).where(
            PtiAccount.site_id == site_id, PtiAccount.customer_id.in_(chunk))).all())
    return [ids[c] for c in wanted]


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
            enqueue(RECONCILE, account.id, trigger, queue=queue)
            enqueued += 1
    except redis.RedisError as exc:
        log.warning("could not enqueue reconciles (%s): the relay will pick them up", exc.__class__.__name__)
    return enqueued


def push_site(site: Site, trigger: str) -> int:
    """Mark every customer of the site with an active rental or a PTI user for a push, in bulk batches.

    The same intent as `mark_dirty` for each customer, written with a few set-based statements: one round trip
    per customer made marking 783 customers take longer than pushing them while the workers were busy."""
    customer_ids = set(db.session.scalars(
        select(Rental.customer_id).where(Rental.site_id == site.id, Rental.state.in_(ACTIVE_RENTAL_STATES))
    )) | set(db.session.scalars(
        select(PtiAccount.customer_id).where(PtiAccount.site_id == site.id, PtiAccount.pti_user_id.is_not(None))
    ))
    ids = mark_site_dirty(site.id, customer_ids)
    db.session.commit()
    pipe = get_redis().pipeline()
    for account_id in ids:  # the batches hold these accounts: the relay must not enqueue them one by one
        pipe.set(PENDING_KEY.format(account_id=account_id), BULK, nx=True, ex=PENDING_TTL_S)
    pipe.execute()
    for start in range(0, len(ids), BATCH_SIZE):
        enqueue(RECONCILE_BATCH, ids[start:start + BATCH_SIZE], trigger, queue=BULK, job_timeout=BATCH_JOB_TIMEOUT_S)
    return len(ids)


def relay() -> int:
    """Re-enqueue every account still owed a push whose retry time has come. Returns how many were enqueued."""
    now = utcnow()
    owed = db.session.scalars(
        select(PtiAccount).where(
            PtiAccount.generation > PtiAccount.synced_generation,
            PtiAccount.state != SyncState.FAILED,
            or_(PtiAccount.next_attempt_at.is_(None), PtiAccount.next_attempt_at <= now),
        )
    ).all()
    return request_reconcile(owed, trigger="relay")
