"""The relay and the drift sweep: the two periodic checks that make lost jobs and PTI drift converge anyway.

- relay: accounts whose generation is ahead of what was pushed, and not waiting for a retry, get a job again
  (Redis restarted empty, a worker killed mid-job). Idempotent: the pending key skips ones already queued.
- sweep: per site, read PTI's users and units; for users carrying our marker, compare with what the mirror
  wants and mark the differing accounts for a push. Users without our marker are counted, never touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import case, or_, select

from .extensions import db
from .intent import PENDING_KEY, PENDING_TTL_S, mark_dirty, request_reconcile
from .models import ACTIVE_RENTAL_STATES, Customer, PtiAccount, Rental, Site, SyncState, utcnow
from .queue import BULK, get_queue, get_redis

log = logging.getLogger(__name__)

BATCH_SIZE = 200  # accounts per bulk job: big enough to keep a site's calls in flight, small enough to retry


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


@dataclass
class SweepReport:
    site: str
    pti_users: int = 0
    ours: int = 0
    not_ours: int = 0
    drifted: list[int] = field(default_factory=list)  # account ids marked for a push
    orphans: list[str] = field(default_factory=list)  # PTI users with our marker and no customer we know

    @property
    def lines(self) -> list[str]:
        return [
            f"{self.site}: {self.pti_users} PTI users, {self.ours} ours, {self.not_ours} not created by PTI Sync "
            "(left alone).",
            f"{len(self.drifted)} customers differ from Storeganise and were marked for a push.",
            *([f"{len(self.orphans)} PTI users carry our marker but match no customer: check them in PTI."]
              if self.orphans else []),
        ]


def sweep_site(site: Site, client) -> SweepReport:
    """Compare PTI's users and units with the mirror for users we created; mark drifted accounts dirty."""
    from .reconcile import snapshot
    from .sync import ActualAccess, plan

    report = SweepReport(site.code)
    users = client.list_users()
    units = {u.name: u for u in client.list_units()}
    report.pti_users = len(users)
    customers = {c.sg_id: c for c in db.session.scalars(
        select(Customer).join(Rental, Rental.customer_id == Customer.id).where(Rental.site_id == site.id)
    )}
    marked = []
    for user in users:
        if not user.marker:
            report.not_ours += 1
            continue
        report.ours += 1
        customer = customers.get(user.marker)
        if customer is None:
            report.orphans.append(user.id)
            continue
        account = db.session.scalar(select(PtiAccount).where(PtiAccount.customer_id == customer.id,
                                                             PtiAccount.site_id == site.id))
        if account is None or account.generation > account.synced_generation:
            continue  # a push is already owed: it will read PTI itself
        _, desired = snapshot(account)
        holder_ids = {u.user_id for u in units.values() if u.user_id and u.user_id != user.id}
        markers = {u.id: u.marker for u in users if u.id in holder_ids and u.marker}
        relevant = {n: units[n] for n in set(desired.unit_names) | set(user.units) if n in units}
        if account.pti_user_id != user.id or not plan(desired, ActualAccess(user, relevant, markers)).converged:
            marked.append(mark_dirty(customer, site.id))
            report.drifted.append(account.id)
    site.last_sweep_at = utcnow()
    db.session.commit()
    request_reconcile(marked, trigger="sweep")
    return report


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
    queue = get_queue(BULK)
    pipe = get_redis().pipeline()
    for account_id in ids:  # the batches hold these accounts: the relay must not enqueue them one by one
        pipe.set(PENDING_KEY.format(account_id=account_id), BULK, nx=True, ex=PENDING_TTL_S)
    pipe.execute()
    for start in range(0, len(ids), BATCH_SIZE):
        queue.enqueue("jobs.reconcile.reconcile_batch", ids[start:start + BATCH_SIZE], trigger,
                      job_timeout=3600, result_ttl=600)
    return len(ids)


MARK_CHUNK = 500  # customer ids per IN (...) list


def mark_site_dirty(site_id: int, customer_ids: set[int]) -> list[int]:
    """`mark_dirty` for many customers of one site, in the caller's transaction; their account ids, by customer."""
    wanted = sorted(customer_ids)
    accounts = PtiAccount.__table__
    known: set[int] = set()
    for start in range(0, len(wanted), MARK_CHUNK):
        known.update(db.session.scalars(select(PtiAccount.customer_id).where(
            PtiAccount.site_id == site_id, PtiAccount.customer_id.in_(wanted[start:start + MARK_CHUNK]))))
    new = [c for c in wanted if c not in known]
    if new:  # created as account_for does, then marked like the others below
        db.session.execute(accounts.insert(), [{"customer_id": c, "site_id": site_id, "generation": 1,
                                                "synced_generation": 0, "state": SyncState.PENDING,
                                                "urgent": False, "attempts": 0} for c in new])
    for start in range(0, len(wanted), MARK_CHUNK):
        chunk = wanted[start:start + MARK_CHUNK]
        db.session.execute(
            accounts.update()
            .where(accounts.c.site_id == site_id, accounts.c.customer_id.in_(chunk))
            .values(generation=case((accounts.c.generation > accounts.c.synced_generation, accounts.c.generation),
                                    else_=accounts.c.synced_generation) + 1,
                    state=SyncState.PENDING, attempts=0, next_attempt_at=None)
        )
        db.session.execute(
            Rental.__table__.update()
            .where(Rental.site_id == site_id, Rental.customer_id.in_(chunk), Rental.state.in_(ACTIVE_RENTAL_STATES),
                   Rental.sync_state.in_([SyncState.IN_SYNC, SyncState.FAILED, SyncState.PENDING]))
            .values(sync_state=SyncState.PENDING)
        )
    db.session.expire_all()  # the ORM's copies of these rows are stale now
    ids: dict[int, int] = {}
    for start in range(0, len(wanted), MARK_CHUNK):
        ids.update((customer_id, account_id) for customer_id, account_id in db.session.execute(
            select(PtiAccount.customer_id, PtiAccount.id).where(
                PtiAccount.site_id == site_id, PtiAccount.customer_id.in_(wanted[start:start + MARK_CHUNK]))))
    return [ids[c] for c in wanted]
