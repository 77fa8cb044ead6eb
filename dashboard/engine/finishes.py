"""A bulk batch's finishes, several accounts at a time: what their pushes left recorded with a few statements.

A single push ends in `reconcile._finish`, through the session's unit of work: its account, its rentals and its
journal row flushed one by one and committed, nearly a third of a bulk push's CPU. In a bulk batch most pushes end
the same plain way (every rental in sync, nothing to report), so the batch hands those to its finishing thread
(jobs/reconcile.py), which records the pushes handed over within a moment of each other together: the accounts
read FOR UPDATE in one statement (in id order, as every writer of several accounts locks them), then one UPDATE
of the accounts, one of the rentals and one INSERT of the journal rows, each sent with all their rows at once,
the problems that stood against them closed with one read, and one commit.

What each row gets is what `_finish` gives it; the generation's checks are the same SQL (a newer intent that
landed meanwhile keeps the account pending and urgent). A push that ends any other way (a unit refused or unmapped,
a site not synced, a new problem to report) is finished by `_finish` in its own thread, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import and_, bindparam, case, func, insert, null, select, true, update

from ..extensions import db
from ..models import PtiAccount, Rental, SyncAttempt, SyncState, to_ms, utcnow
from . import problems


@dataclass
class Pushed:
    """A push that applied its whole plan and left every rental as wanted, handed over to be recorded."""

    account_id: int
    site_sg_id: str
    generation: int  # the intent the push carried
    trigger: str
    job_id: str | None
    outcome: str  # ok (PTI changed) or noop
    operations: list[str]
    duration_ms: int
    pti_user_id: str
    pushed: dict  # what PTI now holds (pti_reads.push_record)
    rentals: list[tuple[int, str, bool]]  # (rental id, sync state, whether pushed now: pti_synced stamped)
    unit_sg_ids: list[str]  # the units of the account's active rentals (their problems are over)
    lock: object = field(default=None, repr=False)  # the account's Redis lock, let go once this is recorded


def finish_many(pushes: list[Pushed]) -> list[Pushed]:
    """Record these pushes in one transaction and commit it; the ones recorded (an account deleted meanwhile has
    nothing to record). Raises what the database raises, with the transaction rolled back."""
    accounts, rentals, journal = PtiAccount.__table__, Rental.__table__, SyncAttempt.__table__
    by_id = {p.account_id: p for p in pushes}
    try:
        owed_since = dict(db.session.execute(
            select(accounts.c.id, accounts.c.owed_since).where(accounts.c.id.in_(by_id))
            .order_by(accounts.c.id).with_for_update()).all())
        done = [by_id[account_id] for account_id in sorted(owed_since)]
        if not done:
            db.session.rollback()
            return []
        now = utcnow()
        generation = bindparam("b_generation")
        newer = accounts.c.generation > generation
        db.session.execute(update(accounts).where(accounts.c.id == bindparam("b_id")).values(
            synced_generation=case((accounts.c.synced_generation > generation, accounts.c.synced_generation),
                                   else_=generation),
            state=case((newer, SyncState.PENDING), else_=SyncState.IN_SYNC),
            urgent=and_(accounts.c.urgent, newer),  # see _finish: still urgent only if a newer intent is owed
            owed_since=case((newer, accounts.c.owed_since), else_=null()),
            attempts=0, next_attempt_at=null(), last_error=null(), last_error_detail=null(),
            foreign_pti_users=null(), last_attempt_at=now, last_synced_at=now,
            pti_user_id=bindparam("b_user"), pushed=bindparam("b_pushed", type_=accounts.c.pushed.type),
            write_back_owed=true()),
            [{"b_id": p.account_id, "b_generation": p.generation, "b_user": p.pti_user_id, "b_pushed": p.pushed}
             for p in done])
        stamp = to_ms(now)
        rows = [{"b_id": rental_id, "b_state": state, "b_synced": stamp if pushed_now else None}
                for p in done for rental_id, state, pushed_now in p.rentals]
        if rows:
            db.session.execute(update(rentals).where(rentals.c.id == bindparam("b_id")).values(
                sync_state=bindparam("b_state"), last_error=null(),
                pti_synced=func.coalesce(bindparam("b_synced", type_=rentals.c.pti_synced.type),
                                         rentals.c.pti_synced)), rows)
        db.session.execute(insert(journal), [
            {"account_id": p.account_id, "trigger": p.trigger, "rq_job_id": p.job_id, "generation": p.generation,
             "operations": p.operations, "outcome": p.outcome, "duration_ms": p.duration_ms,
             "gate_ms": _gate_ms(p, owed_since[p.account_id], now)} for p in done])
        problems.accounts_synced_cleanly([p.account_id for p in done], {p.site_sg_id for p in done},
                                         [sg_id for p in done for sg_id in p.unit_sg_ids])
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return done


def _gate_ms(push: Pushed, owed_since, now) -> int | None:
    """Event to gate, as `_finish` journals it: for a push PTI took, from the oldest change's mark to now."""
    if push.outcome != "ok" or owed_since is None:
        return None
    return max(0, int((now - owed_since).total_seconds() * 1000))
