"""The register of standing problems: opened where they are found, closed once fixed, each raised once in Storeganise.

The engine opens a unit's problem when PTI refuses the unit (or the unit has no PTI name while rented), an account's
when it parks, a site's when its connection fails; the mirror keeps a value's (`BAD_VALUE`) rows itself
(`mirror/records.Effects.note_problems`) while a field Storeganise sends cannot be read. A row per cause is the
durable fact: `writeback.report_problems` turns the unreported ones into Storeganise tasks (the relay re-drives it),
and the row is deleted when the problem is gone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import and_, delete, or_, select

from ..clients import addon_id
from ..extensions import db, insert_or_skip
from ..jobqueue import REPORT_PROBLEMS, hint
from ..models import ACTIVE_RENTAL_STATES, OpenProblem, PtiAccount, Rental, Site, Unit, utcnow

# Problems with one unit (shown on the unit) and problems with the whole site's connection (shown to the add-on).
UNIT_REASONS = frozenset({"unit_unmapped", "invalid_unit_name", "unit_not_found", "unit_rented_to_other"})
SITE_REASONS = frozenset({"invalid_credentials", "site_not_configured", "credentials_unreadable",
                          "site_access_level_unknown", "site_zone_unknown"})
BAD_VALUE = "bad_value"
REPORT_JOB_ID = "pti-sync-report-problems"  # one report job queued at a time


@dataclass(frozen=True)
class Found:
    """A problem as found, before it is recorded."""

    cause: str
    reason: str
    entity: str  # whose page shows it: site, unit, customer, rental or account
    record_sg_id: str
    target_type: str  # the Storeganise task's target
    target_id: str
    subject: str
    detail: str | None = None
    site_id: int | None = None
    account_id: int | None = None


def settings_target(site: Site) -> tuple[str, str]:
    """Where a settings problem is shown in Storeganise: the PTI add-on when the business has it, else the site."""
    known = addon_id()
    return ("addon", known) if known else ("site", site.sg_id)


def site_problem(site: Site, reason: str, detail: str | None = None) -> Found:
    target_type, target_id = settings_target(site)
    return Found(f"site:{site.sg_id}:{reason}", reason, "site", site.sg_id, target_type, target_id,
                 f"site {site.title}", detail, site_id=site.id)


def unit_problem(unit: Unit, site: Site, reason: str, account_id: int | None = None) -> Found:
    return Found(f"unit:{unit.sg_id}:{reason}", reason, "unit", unit.sg_id, "unit", unit.sg_id,
                 f"unit {unit.name} at {site.title}", site_id=site.id, account_id=account_id)


def account_problem(account: PtiAccount, reason: str, detail: str | None = None) -> Found:
    site, customer = account.site, account.customer
    return Found(f"user:{customer.sg_id}:{site.sg_id}:{reason}", reason, "account", customer.sg_id, "user",
                 customer.sg_id, f"customer {customer.name} ({customer.email}) at {site.title}", detail,
                 site_id=site.id, account_id=account.id)


# A rental's pti_overlocked Storeganise refused (writeback.write_owed_overlocks): overlock:<rental>:<reason>.
OVERLOCK_CAUSE = "overlock:"


def refused_overlocks():
    """The Storeganise ids of the rentals whose pti_overlocked stands refused, as a subquery."""
    return select(OpenProblem.record_sg_id).where(OpenProblem.entity == "rental",
                                                  OpenProblem.cause.like(f"{OVERLOCK_CAUSE}%"))


def close_refused_overlocks(rental_sg_ids: list[str]) -> None:
    """Storeganise accepted these rentals' pti_overlocked: a refusal standing on them is over. One statement by the
    indexed record id, cheap when none stands."""
    if rental_sg_ids:
        db.session.execute(delete(OpenProblem).where(
            OpenProblem.record_sg_id.in_(rental_sg_ids), OpenProblem.entity == "rental",
            OpenProblem.cause.like(f"{OVERLOCK_CAUSE}%")).execution_options(synchronize_session=False))


def open_problem(found: Found) -> bool:
    """Record the problem in the caller's transaction, unless it stands already (then its detail is refreshed).
    True when it is new, so owed to Storeganise."""
    row = db.session.scalar(select(OpenProblem).where(OpenProblem.cause == found.cause))
    if row is not None:
        row.detail = found.detail
        return False
    # Another worker may record the same cause at the same moment (two accounts of a site meeting its refused
    # credentials): the first row stands, the caller's transaction goes on, and only the first says "new".
    added = db.session.scalar(insert_or_skip(OpenProblem, "cause").returning(OpenProblem.id).values(
        cause=found.cause, reason=found.reason, entity=found.entity, record_sg_id=found.record_sg_id,
        target_type=found.target_type, target_id=found.target_id, subject=found.subject, detail=found.detail,
        site_id=found.site_id, account_id=found.account_id, opened_at=utcnow()))
    return added is not None


def close_causes(*patterns: str) -> None:
    """Delete the problems whose cause matches any of these (exact, or a prefix ending in '%')."""
    clauses = [OpenProblem.cause.like(p) if p.endswith("%") else OpenProblem.cause == p for p in patterns]
    if clauses:
        db.session.execute(delete(OpenProblem).where(or_(*clauses)).execution_options(synchronize_session=False))


def account_synced(account: PtiAccount, unit_reasons: dict[int, str],
                   units: Iterable[tuple[int, str]] | None = None) -> int:
    """The account's push ended: its own problems and its site's connection problems are over, and its rentals'
    units stand as `unit_reasons` says (unit id → reason; a unit not named there has no problem). `units`: the
    (id, Storeganise id) of the units of the account's active rentals, when the caller has them (read otherwise).
    Returns how many problems are new.

    One look at what stands first: a push that ends well with nothing standing (nearly every push) costs one read
    (two without `units`), not a delete per cause."""
    if units is None:
        units = db.session.execute(select(Unit.id, Unit.sg_id).join(Rental, Rental.unit_id == Unit.id).where(
            Rental.customer_id == account.customer_id, Rental.site_id == account.site_id,
            Rental.state.in_(ACTIVE_RENTAL_STATES)).distinct()).all()
    units = sorted(set(units))
    standing = _standing([account.id], [account.site.sg_id], [sg_id for _, sg_id in units])
    wanted = {f"unit:{sg_id}:{unit_reasons[unit_id]}" for unit_id, sg_id in units if unit_id in unit_reasons}
    _close(standing - wanted)
    if not wanted - standing:
        return 0
    new = 0
    for unit in db.session.scalars(select(Unit).where(Unit.id.in_([u for u, _ in units if u in unit_reasons]))):
        if f"unit:{unit.sg_id}:{unit_reasons[unit.id]}" not in standing:
            new += open_problem(unit_problem(unit, account.site, unit_reasons[unit.id], account.id))
    return new


def accounts_synced_cleanly(account_ids: list[int], site_sg_ids: Iterable[str], unit_sg_ids: Iterable[str]) -> None:
    """Several accounts' pushes ended with every rental in sync (a bulk batch's finish, engine/finishes.py): what
    stood against them, their sites' connections or their units is over. One read for them all, and one delete when
    anything stood."""
    _close(_standing(account_ids, site_sg_ids, unit_sg_ids))


def _standing(account_ids: list[int], site_sg_ids: Iterable[str], unit_sg_ids: Iterable[str]) -> set[str]:
    """The causes standing against these accounts, these sites' connections, or these units."""
    return set(db.session.scalars(select(OpenProblem.cause).where(or_(
        and_(OpenProblem.account_id.in_(account_ids), OpenProblem.entity == "account"),
        *(OpenProblem.cause.like(f"site:{sg_id}:%") for sg_id in sorted(set(site_sg_ids))),
        OpenProblem.cause.in_([f"unit:{sg_id}:{reason}" for sg_id in unit_sg_ids for reason in UNIT_REASONS])))))


def _close(causes: set[str]) -> None:
    if causes:
        db.session.execute(delete(OpenProblem).where(OpenProblem.cause.in_(causes))
                           .execution_options(synchronize_session=False))


def account_parked(account: PtiAccount, reason: str, detail: str | None, units: list[Unit]) -> int:
    """The account parked for `reason`: record it where staff can fix it (the site, the units, or the customer).
    Returns how many problems are new."""
    if reason in SITE_REASONS:
        return int(open_problem(site_problem(account.site, reason, detail)))
    if reason in UNIT_REASONS and units:
        return sum(open_problem(unit_problem(unit, account.site, reason, account.id)) for unit in units)
    return int(open_problem(account_problem(account, reason, detail)))


def request_reports() -> bool:
    """Ask for a report job while any problem is owed to Storeganise (after a commit, and from the relay). True when
    one was asked; a Redis failure is logged, never raised: the problems are in the database for the next relay."""
    if not unreported(1):
        return False
    return hint(REPORT_PROBLEMS, job_id=REPORT_JOB_ID)


def unreported(limit: int) -> list[int]:
    """Ids of problems not raised in Storeganise yet, oldest first."""
    return list(db.session.scalars(select(OpenProblem.id).where(OpenProblem.reported_at.is_(None))
                                   .order_by(OpenProblem.id).limit(limit)))


def problems_of(entity: str, *record_sg_ids: str) -> list[OpenProblem]:
    """The standing problems a page shows for these records."""
    return list(db.session.scalars(select(OpenProblem).where(
        OpenProblem.entity == entity, OpenProblem.record_sg_id.in_(record_sg_ids)).order_by(OpenProblem.id)))
