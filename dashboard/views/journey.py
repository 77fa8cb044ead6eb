"""Every change's journey, for the rental page: each Storeganise event about the rental and each staff action on it
(on its customer, or on its whole site), followed to PTI: received → handled → sent to PTI → confirmed, with the time
it took.

PTI Sync pushes a customer's whole state at a site, not one change at a time, so the push that carried a change is
the first one of that customer at that site that began after it: it read the mirror with the change in it. One push
may carry several changes; a change that needed nothing in PTI shows the push that found PTI already agreeing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select

from ..extensions import db
from ..mirror.deliveries import ECHO
from ..models import AuditEntry, PtiAccount, Rental, SyncAttempt, WebhookDelivery
from ..storeganise import webhooks as sg

SHOWN = 10  # changes on the page, newest first
CONFIRMED = ("ok", "noop")  # the outcomes of a push PTI confirmed (noop: PTI already held it)
EVENT_WORDS = {
    sg.MARK_OVERDUE: "Marked overdue in Storeganise",
    sg.UNMARK_OVERDUE: "Paid: overdue cleared in Storeganise",
    sg.MOVE_IN_COMPLETED: "Move-in completed in Storeganise",
    sg.MOVE_OUT_COMPLETED: "Move-out completed in Storeganise",
    sg.TRANSFER_COMPLETED: "Transfer completed in Storeganise",
    sg.UNIT_RENTAL_UPDATED: "Rental edited in Storeganise",
}


@dataclass(frozen=True)
class Step:
    label: str
    at: datetime
    after_ms: int  # since the change was received


@dataclass(frozen=True)
class Journey:
    what: str
    received_at: datetime
    steps: tuple[Step, ...]
    # confirmed; retrying (the pushes since did not reach PTI yet) or parked (the last one gave up: see its reason);
    # waiting (no push has begun since); not_handled (the event itself failed: `detail` says why)
    state: str
    detail: str | None = None  # a failed handling's or push's reason

    @property
    def total_ms(self) -> int | None:
        """From receipt to PTI's confirmation, when PTI confirmed."""
        return self.steps[-1].after_ms if self.state == "confirmed" else None


def journeys(rental: Rental) -> list[Journey]:
    """The rental's latest changes (SHOWN), newest first, each followed to PTI."""
    events = db.session.scalars(select(WebhookDelivery).where(
        WebhookDelivery.rental_sg_id == rental.sg_id, WebhookDelivery.status != ECHO)
        .order_by(WebhookDelivery.received_at.desc()).limit(SHOWN)).all()
    actions = db.session.scalars(select(AuditEntry).where(or_(
        and_(AuditEntry.target_type == "rental", AuditEntry.target_id == rental.sg_id),
        and_(AuditEntry.target_type == "customer", AuditEntry.target_id == rental.customer.sg_id),
        and_(AuditEntry.target_type == "site", AuditEntry.target_id == rental.site.sg_id)),
        AuditEntry.action != "reveal code").order_by(AuditEntry.at.desc()).limit(SHOWN)).all()
    changes = sorted([*((e.received_at, e) for e in events), *((a.at, a) for a in actions)],
                     key=lambda pair: pair[0], reverse=True)[:SHOWN]
    if not changes:
        return []
    account_id = db.session.scalar(select(PtiAccount.id).where(PtiAccount.customer_id == rental.customer_id,
                                                               PtiAccount.site_id == rental.site_id))
    pushes = [] if account_id is None else db.session.scalars(select(SyncAttempt).where(
        SyncAttempt.account_id == account_id, SyncAttempt.started_at >= changes[-1][0],
        SyncAttempt.outcome != "running").order_by(SyncAttempt.started_at, SyncAttempt.id)).all()
    return [_follow(change, at, pushes) for at, change in changes]


def _follow(change: WebhookDelivery | AuditEntry, at: datetime, pushes: list[SyncAttempt]) -> Journey:
    if isinstance(change, WebhookDelivery):
        what = EVENT_WORDS.get(change.type, f"Storeganise event {change.type}")
        steps = [Step("Received from Storeganise", at, 0)]
        if change.status == "failed":
            return Journey(what, at, tuple(steps), "not_handled", change.error)
        if change.handled_at is None:
            return Journey(what, at, tuple(steps), "waiting")
        steps.append(_step("Handled: the mirror updated, the push asked for", change.handled_at, at))
    else:
        what = f"{change.action.capitalize()} by {change.actor}"
        steps = [Step("Asked for on the dashboard", at, 0)]
    after = [p for p in pushes if p.started_at >= at]
    if not after:
        return Journey(what, at, tuple(steps), "waiting")
    steps.append(_step("Sent to PTI", after[0].started_at, at))
    done = next((p for p in after if p.outcome in CONFIRMED), None)
    if done is None:
        return Journey(what, at, tuple(steps), "parked" if after[-1].outcome == "failed" else "retrying",
                       after[-1].reason)
    if done is not after[0]:
        steps.append(_step(f"Sent again ({_tries(after, done)} tries)", done.started_at, at))
    confirmed = "Confirmed by PTI" if done.outcome == "ok" else "Confirmed: PTI already had it"
    steps.append(_step(confirmed, done.started_at + timedelta(milliseconds=done.duration_ms or 0), at))
    return Journey(what, at, tuple(steps), "confirmed")


def _step(label: str, when: datetime, since: datetime) -> Step:
    return Step(label, when, max(0, round((when - since).total_seconds() * 1000)))


def _tries(after: list[SyncAttempt], done: SyncAttempt) -> int:
    return after.index(done) + 1
