"""Fixing what the drift sweep found, where a fix is safe: removing a PTI user that carries PTI Sync's mark and that
nobody should hold any more.

Two findings of a site's drift report have such a fix, pressed by staff on the site's page and run as a job:
- an **orphan**: a PTI user with our mark whose customer has no rental and no PTI account at the site. Its code still
  opens the gate for somebody Storeganise does not know here (domain.md: "a tenant who left still opens the gate").
- a **duplicate**: a second PTI user with our mark for a customer whose PTI account holds another one. Removing the
  extra leaves the customer with the user PTI Sync pushes to; their account is pushed at once, so any unit PTI
  vacated with the extra user is rented to the kept one again.

Nothing is taken on the report's word: the job reads the user from PTI again (through the site guard) and the mirror
again, under the customer's account lock when there is an account, and removes the user only when both still say
so. Otherwise it removes nothing and says why. Either way the outcome is audited and kept on the report's row.
Every other finding (drifted customers, unknown PTI Unit Names) is fixed by a push or in Storeganise, not here.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm.attributes import flag_modified

from ..audit import record
from ..clients import connection_problem, pti_client, pti_connection
from ..extensions import db
from ..jobqueue import get_redis
from ..models import ACTIVE_RENTAL_STATES, Customer, PtiAccount, Rental, Site
from ..pti import PtiError
from .intent import mark_dirty, request_reconcile
from .reconcile import LOCK_TTL_S, LOCK_WAIT_S, Caller, Retry, lock_key, site_guard

log = logging.getLogger(__name__)

ORPHAN = "orphan"
DUPLICATE = "duplicate"
KINDS = (ORPHAN, DUPLICATE)


class FixRefused(Exception):
    """The fix is not safe (any more): the message says why, in staff's words."""


@dataclass(frozen=True)
class Fixed:
    removed: bool
    message: str


def offered(site: Site, kind: str, pti_user_id: str) -> bool:
    """Whether the site's drift report lists this PTI user under this finding (what the page offered to fix)."""
    report = site.drift_report or {}
    if kind == ORPHAN:
        return any(u.get("id") == pti_user_id for u in report.get("orphan_users", []))
    if kind == DUPLICATE:
        return any(pti_user_id in d.get("user_ids", []) for d in report.get("duplicate_users", []))
    return False


def remove_stray(site_id: int, kind: str, pti_user_id: str, actor: str) -> Fixed:
    """Remove the PTI user the drift report found, if it is still safe to; keep the outcome on the report's row."""
    site = db.session.get(Site, site_id)
    if site is None:
        return Fixed(False, "The site is gone.")
    try:
        outcome = Fixed(True, _remove(site, kind, pti_user_id))
    except FixRefused as exc:
        db.session.rollback()
        outcome = Fixed(False, str(exc))
    except (PtiError, Retry) as exc:
        db.session.rollback()
        outcome = Fixed(False, f"PTI could not be reached or refused ({exc.reason}): nothing was removed; try again.")
    site = db.session.get(Site, site_id)
    _note(site, kind, pti_user_id, outcome)
    record(f"remove {kind} PTI user", actor=actor, target_type="site", target_id=site.sg_id,
           outcome="ok" if outcome.removed else "refused", pti_user_id=pti_user_id, said=outcome.message)
    db.session.commit()
    log.info("drift fix at %s (%s %s): %s", site.code, kind, pti_user_id, outcome.message)
    return outcome


def _remove(site: Site, kind: str, pti_user_id: str) -> str:
    connection = pti_connection(site)
    if connection is None:
        raise FixRefused(f"PTI cannot be reached for this site ({connection_problem(site)}): nothing was removed.")
    client = pti_client(site, connection)
    call = Caller(client, site_guard(site))
    user = call("get_user", client.get_user, pti_user_id)
    if user is None:
        return f"PTI no longer has user {pti_user_id}: nothing left to remove."
    if not user.marker:
        raise FixRefused(f"PTI user {pti_user_id} no longer carries PTI Sync's mark: PTI Sync leaves it alone.")
    customer = db.session.scalar(select(Customer).where(Customer.sg_id == user.marker))
    account = None if customer is None else db.session.scalar(
        select(PtiAccount).where(PtiAccount.customer_id == customer.id, PtiAccount.site_id == site.id))
    lock = None if account is None else get_redis().lock(lock_key(account.id), timeout=LOCK_TTL_S,
                                                         blocking_timeout=LOCK_WAIT_S, thread_local=False)
    if lock is not None and not lock.acquire():
        raise FixRefused("A push for this customer is running: nothing was removed; try again in a minute.")
    with lock or nullcontext():
        if kind == ORPHAN:
            _check_orphan(site, customer, account, pti_user_id)
        else:
            kept = _check_duplicate(call, client, account, user.marker, pti_user_id)
        call("remove_user", client.remove_user, pti_user_id)
    if kind == DUPLICATE:
        account = mark_dirty(account.customer_id, site.id)
        db.session.commit()
        request_reconcile([account], trigger="drift fix")
        return f"PTI user {pti_user_id} removed. The customer keeps PTI user {kept} and is pushed again."
    return f"PTI user {pti_user_id} removed: its code no longer opens the gate."


def _check_orphan(site: Site, customer: Customer | None, account: PtiAccount | None, pti_user_id: str) -> None:
    if account is not None:
        raise FixRefused(f"PTI user {pti_user_id} belongs to a customer PTI Sync now manages at this site: "
                         "press Resync on the customer instead.")
    if customer is not None and db.session.scalar(select(Rental.id).where(
            Rental.customer_id == customer.id, Rental.site_id == site.id,
            Rental.state.in_(ACTIVE_RENTAL_STATES)).limit(1)) is not None:
        raise FixRefused(f"PTI user {pti_user_id}'s customer rents here now: press Resync on the customer instead.")


def _check_duplicate(call: Caller, client, account: PtiAccount | None, marker: str, pti_user_id: str) -> str:
    if account is None or not account.pti_user_id:
        raise FixRefused("PTI Sync holds no PTI user for this customer at this site: it cannot tell which one to "
                         "keep. Merge them in PTI.")
    if account.pti_user_id == pti_user_id:
        raise FixRefused(f"PTI user {pti_user_id} is the one PTI Sync pushes to for this customer: remove the other.")
    kept = call("get_user", client.get_user, account.pti_user_id)
    if kept is None or kept.marker != marker:
        raise FixRefused(f"The PTI user PTI Sync pushes to ({account.pti_user_id}) is not in PTI with the customer's "
                         "mark: nothing was removed. Press Resync on the customer first.")
    return account.pti_user_id


def _note(site: Site, kind: str, pti_user_id: str, outcome: Fixed) -> None:
    """Keep the outcome on the report's row: a removed user is struck from the report (its count too), a refused
    fix stays listed with the reason."""
    report = dict(site.drift_report or {})
    if kind == ORPHAN:
        rows = report.get("orphan_users", [])
        if outcome.removed:
            report["orphan_users"] = [u for u in rows if u.get("id") != pti_user_id]
            report["orphans"] = max(0, report.get("orphans", 0) - (len(rows) - len(report["orphan_users"])))
        else:
            report["orphan_users"] = [{**u, "fix": outcome.message} if u.get("id") == pti_user_id else u for u in rows]
    else:
        rows = report.get("duplicate_users", [])
        kept = []
        for row in rows:
            ids = [i for i in row.get("user_ids", []) if not (outcome.removed and i == pti_user_id)]
            if pti_user_id in row.get("user_ids", []) and not outcome.removed:
                row = {**row, "fix": outcome.message}
            if len(ids) > 1:
                kept.append({**row, "user_ids": ids})
        report["duplicate_users"] = kept
        report["duplicates"] = max(0, report.get("duplicates", 0) - (len(rows) - len(kept)))
    report["last_fix"] = {"kind": kind, "pti_user_id": pti_user_id, "removed": outcome.removed,
                          "message": outcome.message}
    site.drift_report = report
    flag_modified(site, "drift_report")
