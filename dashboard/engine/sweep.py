"""The drift sweep: per site, read PTI's users and units; for users carrying our marker, compare them with what the
mirror wants and mark the differing accounts for a push. Users without our marker are counted, never touched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from ..extensions import db
from ..models import Customer, PtiAccount, Rental, Site, Unit, utcnow
from ..pti import PtiPermanentError
from ..sync import ActualAccess, PtiUser, plan
from . import pti_lists
from .intent import mark_dirty, request_reconcile
from .reconcile import snapshot

log = logging.getLogger(__name__)


DRIFT_LISTED = 100  # records named per finding in a site's drift report; the counts are always whole


@dataclass
class SweepReport:
    """What one sweep of a site found; kept on the site (`record`) as its drift report, shown on the site's page."""

    site: str
    pti_users: int = 0
    ours: int = 0
    not_ours: int = 0
    drifted: list[int] = field(default_factory=list)  # account ids marked for a push
    orphans: list[PtiUser] = field(default_factory=list)  # PTI users with our marker and no customer we know
    duplicates: dict[str, list[str]] = field(default_factory=dict)  # our marker -> the PTI users carrying it (2+)
    unknown_units: list[str] = field(default_factory=list)  # PTI Unit Names the mirror maps and PTI does not have

    @property
    def lines(self) -> list[str]:
        return [
            f"{self.site}: {self.pti_users} PTI users, {self.ours} ours, {self.not_ours} not created by PTI Sync "
            "(left alone).",
            f"{len(self.drifted)} customers differ from Storeganise and were marked for a push.",
            *([f"{len(self.orphans)} PTI users carry our marker but match no customer: check them in PTI."]
              if self.orphans else []),
            *([f"{len(self.duplicates)} customers have more than one PTI user carrying our marker: merge them in "
               "PTI."] if self.duplicates else []),
            *([f"{len(self.unknown_units)} units are mapped in Storeganise to PTI Unit Names PTI does not have."]
              if self.unknown_units else []),
        ]

    def record(self, at: datetime) -> dict:
        """The drift report as the site keeps it (JSON): counts whole, records named up to DRIFT_LISTED each, never
        an access code."""
        return {
            "at": at.isoformat(), "pti_users": self.pti_users, "ours": self.ours, "not_ours": self.not_ours,
            "drifted": len(self.drifted), "drifted_accounts": self.drifted[:DRIFT_LISTED],
            "orphans": len(self.orphans),
            "orphan_users": [{"id": u.id, "name": " ".join(p for p in (u.first_name, u.last_name) if p),
                              "email": u.email, "units": list(u.units)} for u in self.orphans[:DRIFT_LISTED]],
            "duplicates": len(self.duplicates),
            "duplicate_users": [{"marker": marker, "user_ids": ids}
                                for marker, ids in sorted(self.duplicates.items())[:DRIFT_LISTED]],
            "unknown_units": len(self.unknown_units), "unknown_unit_names": self.unknown_units[:DRIFT_LISTED],
        }


def sweep_site(site: Site, client) -> SweepReport:
    """Compare PTI's users and units with the mirror for users we created; mark drifted accounts dirty. What it
    found is kept on the site as its drift report."""
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
        report.duplicates.setdefault(user.marker, []).append(user.id)
        customer = customers.get(user.marker)
        if customer is None:
            report.orphans.append(user)
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
    report.duplicates = {marker: ids for marker, ids in report.duplicates.items() if len(ids) > 1}
    report.unknown_units = sorted(name for name in db.session.scalars(select(Unit.pti_unit_name).where(
        Unit.site_id == site.id, Unit.pti_unit_name.is_not(None), Unit.pti_switched_off.is_(False)))
        if name not in units)
    site.last_sweep_at = utcnow()
    site.drift_report = report.record(site.last_sweep_at)
    db.session.commit()
    request_reconcile(marked, trigger="sweep")
    return report
