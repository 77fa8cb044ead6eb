"""Staff actions: change the desired state (the mirror, written back to Storeganise) and ask for a push.

Called by the CLI and the dashboard alike. Each action records an audit entry in the same transaction as the
change, commits, then enqueues the reconcile; none of them calls PTI itself.
"""

from __future__ import annotations

from zoneinfo import available_timezones

import redis
from sqlalchemy import and_, or_, select, true, update

from .audit import record
from .engine import drift_fix, problems, pti_lists
from .engine.intent import mark_dirty, push_site, request_reconcile
from .engine.reconcile import choose_code, codes_held
from .extensions import db
from .jobqueue import FIX_DRIFT, WRITE_BACK_OVERRIDES, enqueue, hint
from .models import ACTIVE_RENTAL_STATES, Customer, PtiAccount, Rental, Site, StaffUser, SyncState, utcnow
from .sync import NoFreeCode


class ActionError(ValueError):
    """The action cannot be done as asked; the message says why in the operator's words."""


def _sites_of(customer: Customer) -> set[int]:
    active = {r.site_id for r in customer.rentals if r.state in ACTIVE_RENTAL_STATES}
    held = set(db.session.scalars(select(PtiAccount.site_id).where(PtiAccount.customer_id == customer.id,
                                                                   PtiAccount.pti_user_id.is_not(None))))
    return active | held


def resync_rental(rental: Rental, actor: StaffUser | str) -> int:
    account = mark_dirty(rental.customer_id, rental.site_id, urgent=rental.overlocked)
    _owe_refused_overlocks(Rental.id == rental.id)
    record("resync rental", actor=actor, target_type="rental", target_id=rental.sg_id)
    db.session.commit()
    return request_reconcile([account], trigger=f"staff:{_who(actor)}")


def resync_customer(customer: Customer, actor: StaffUser | str) -> int:
    accounts = [mark_dirty(customer, site_id) for site_id in sorted(_sites_of(customer))]
    _owe_refused_overlocks(Rental.customer_id == customer.id)
    record("resync customer", actor=actor, target_type="customer", target_id=customer.sg_id)
    db.session.commit()
    return request_reconcile(accounts, trigger=f"staff:{_who(actor)}")


def resync_site(site: Site, actor: StaffUser | str) -> int:
    record("resync site", actor=actor, target_type="site", target_id=site.sg_id)
    return push_site(site, f"staff:{_who(actor)}")


def _owe_refused_overlocks(which) -> None:
    """Staff fixed what made Storeganise refuse a rental's pti_overlocked (a problem standing on the rental) and
    resync: the value is owed again, so the push's write-back sends it, and Storeganise's acceptance closes the
    problem (writeback._settle)."""
    db.session.execute(update(Rental).where(which, Rental.sg_id.in_(problems.refused_overlocks()),
                                            Rental.overlock_owed_at.is_(None))
                       .values(overlock_owed_at=utcnow()).execution_options(synchronize_session=False))


def set_suspended(rental: Rental, suspended: bool, actor: StaffUser | str) -> int:
    """Manual suspend / unsuspend (behaviour 6): recorded in pti_overlocked, so a later resync keeps it."""
    if not rental.active:
        raise ActionError("Only a reserved or occupied rental can be suspended or unsuspended.")
    if rental.overlocked != suspended:
        rental.overlocked = suspended
        rental.overlock_owed_at = utcnow()  # owed to Storeganise until it accepts it (the write-back, or the relay)
    account = mark_dirty(rental.customer_id, rental.site_id, urgent=True)
    record("suspend" if suspended else "unsuspend", actor=actor, target_type="rental", target_id=rental.sg_id)
    db.session.commit()
    return request_reconcile([account], trigger=f"staff:{_who(actor)}")


def regenerate_code(customer: Customer, actor: StaffUser | str) -> int:
    """A new access code for every site of the customer (behaviour 8); the old one stops working on the push."""
    site_ids = sorted(_sites_of(customer))
    if not site_ids:
        raise ActionError("This customer has no active rental, so has no access code to replace.")
    accounts = [mark_dirty(customer, site_id) for site_id in site_ids]
    old = {a.access_code for a in accounts}
    try:
        code = choose_code(accounts[0], exclude=old | codes_held(site_ids))
    except NoFreeCode as exc:
        raise ActionError("No free access code is left at this length: lengthen the site's codes.") from exc
    for account in accounts:
        account.access_code = code
    record("regenerate code", actor=actor, target_type="customer", target_id=customer.sg_id)
    db.session.commit()
    return request_reconcile(accounts, trigger=f"staff:{_who(actor)}")


def set_access(customer: Customer, actor: StaffUser | str, *, level: int | None, zone: int | None) -> int:
    """Override (or, with None, clear) the customer's access level and PTI zone (behaviour 9)."""
    for name, value in (("access level", level), ("PTI zone", zone)):
        if value is not None and value < 1:
            raise ActionError(f"The {name} must be a PTI number of 1 or more.")
    sites = [db.session.get(Site, site_id) for site_id in sorted(_sites_of(customer))]
    lists = pti_lists.choices(sites)
    if lists is not None:
        for name, value, known in (("access level", level, lists[0]), ("PTI zone", zone, lists[1])):
            if value is not None and value not in {ident for ident, _ in known}:
                raise ActionError(f"PTI has no {name} {value} at this customer's sites; it has "
                                  + (", ".join(f"{ident} ({label})" for ident, label in known) or "none") + ".")
    customer.access_level_override, customer.zone_override = level, zone
    # Owed to Storeganise until it accepts them (the relay re-drives it). Written as SQL, so always in the UPDATE: the
    # page may have read True (the previous override still owed) and its write-back cleared it since.
    customer.overrides_owed = true()
    accounts = [mark_dirty(customer, site_id) for site_id in sorted(_sites_of(customer))]
    record("set access", actor=actor, target_type="customer", target_id=customer.sg_id, level=level, zone=zone)
    db.session.commit()
    hint(WRITE_BACK_OVERRIDES, customer.id)
    return request_reconcile(accounts, trigger=f"staff:{_who(actor)}")


def adopt_pti_user(account: PtiAccount, actor: StaffUser | str, *, pti_user_id: str) -> int:
    """Staff chose one of the PTI users PTI Sync did not create as the customer's at the account's site: the next
    push writes our marker onto it and makes it match Storeganise (code, level, zone, units)."""
    choices = _foreign_choices(account)
    if pti_user_id not in choices:
        raise ActionError("Choose one of the PTI users shown to adopt.")
    account.adopt_pti_user_id, account.separate_from_foreign = pti_user_id, False
    return _decided(account, actor, "adopt pti user", pti_user_id=pti_user_id)


def separate_pti_user(account: PtiAccount, actor: StaffUser | str) -> int:
    """Staff decided the PTI users PTI Sync did not create are someone else: the next push creates the customer's
    own PTI user beside them (PTI allows the same e-mail twice) and leaves them untouched."""
    choices = _foreign_choices(account)
    account.adopt_pti_user_id, account.separate_from_foreign = None, True
    return _decided(account, actor, "create separate pti user", pti_user_ids=sorted(choices))


def _foreign_choices(account: PtiAccount) -> set[str]:
    if account.last_error != "foreign_pti_user" or not account.foreign_pti_users:
        raise ActionError("There is no PTI user to decide about for this customer at this site.")
    return {u["id"] for u in account.foreign_pti_users}


def _decided(account: PtiAccount, actor: StaffUser | str, action: str, **detail) -> int:
    mark_dirty(account.customer_id, account.site_id)
    record(action, actor=actor, target_type="customer", target_id=account.customer.sg_id, site=account.site.code,
           **detail)
    db.session.commit()
    return request_reconcile([account], trigger=f"staff:{_who(actor)}")


def set_time_zone(site: Site, actor: StaffUser | str, *, zone: str) -> None:
    """The site's local time zone for its pages (IANA name); empty goes back to the business's TIME_ZONE."""
    zone = zone.strip()
    if zone and zone not in available_timezones():
        raise ActionError(f"{zone!r} is not a time zone: choose one from the list (e.g. Europe/London).")
    site.time_zone = zone or None
    record("set site time zone", actor=actor, target_type="site", target_id=site.sg_id, zone=site.time_zone)
    db.session.commit()


def fix_drift(site: Site, actor: StaffUser | str, *, kind: str, pti_user_id: str) -> None:
    """Queue the removal of a stray PTI user the site's drift report lists (engine/drift_fix.py): an orphan, or a
    customer's duplicate. The job checks PTI and the mirror again before removing anything."""
    if kind not in drift_fix.KINDS or not drift_fix.offered(site, kind, pti_user_id):
        raise ActionError("That PTI user is not in this site's drift report any more: reload the page.")
    try:
        enqueue(FIX_DRIFT, site.id, kind, pti_user_id, _who(actor))
    except redis.RedisError as exc:
        raise ActionError("The job queue cannot be reached: nothing was removed. Try again shortly.") from exc
    record(f"remove {kind} PTI user requested", actor=actor, target_type="site", target_id=site.sg_id,
           pti_user_id=pti_user_id)
    db.session.commit()


def failed_accounts(site: Site | None = None, cause: str | None = None):
    """The select of the accounts a retry of failures puts back in line: those parked as failed, and those with an
    active rental that failed (a unit PTI refused fails the rental, not its customer), by site and cause if given;
    the same rentals the Overview, the site page and the Failures page count as failed."""
    parked = PtiAccount.state == SyncState.FAILED
    rental_failed = select(Rental.id).where(
        Rental.customer_id == PtiAccount.customer_id, Rental.site_id == PtiAccount.site_id,
        Rental.state.in_(ACTIVE_RENTAL_STATES), Rental.sync_state == SyncState.FAILED)
    if cause is not None:
        parked = and_(parked, PtiAccount.last_error == cause)
        rental_failed = rental_failed.where(Rental.last_error == cause)
    stmt = select(PtiAccount).where(or_(parked, rental_failed.exists()))
    if site is not None:
        stmt = stmt.where(PtiAccount.site_id == site.id)
    return stmt.order_by(PtiAccount.id)


def requeue_failed(actor: StaffUser | str, site: Site | None = None, cause: str | None = None) -> int:
    """Put every failed account back in line (at one site, of one cause), e.g. after fixing a site's PTI password."""
    accounts = [mark_dirty(a.customer_id, a.site_id, urgent=a.urgent)
                for a in db.session.scalars(failed_accounts(site, cause)).all()]
    detail = {"count": len(accounts)} | ({"cause": cause} if cause else {})
    record("requeue failed", actor=actor, target_type="site" if site else None,
           target_id=site.sg_id if site else None, **detail)
    db.session.commit()
    return request_reconcile(accounts, trigger=f"staff:{_who(actor)}")


def _who(actor: StaffUser | str) -> str:
    return actor.email if isinstance(actor, StaffUser) else actor
