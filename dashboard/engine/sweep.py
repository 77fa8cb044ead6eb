"""The drift sweep: per site, read PTI's users and units; for users carrying our marker, compare them with what the
mirror wants and mark the differing accounts for a push. Users without our marker are counted, never touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import select

from ..extensions import db
from ..models import Customer, PtiAccount, Rental, Site, utcnow
from ..pti import PtiPermanentError
from ..sync import ActualAccess, plan
from . import pti_lists
from .intent import mark_dirty, request_reconcile
from .reconcile import snapshot

log = logging.getLogger(__name__)


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
    report = SweepReport(site.code)
    try:
        pti_lists.store(site, client.list_access_levels(), client.list_time_zones())
    except PtiPermanentError as exc:
        log.warning("PTI's access levels and zones at %s cannot be read (%s)", site.code, exc.reason)
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

