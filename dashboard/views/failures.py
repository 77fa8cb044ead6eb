"""Failures: every failed rental and parked customer of every site, grouped by cause, with the catalogue's fix and
a retry of a whole cause once it is fixed (the operations console, part 1)."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import Blueprint, abort, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.orm import joinedload

from .. import actions
from ..extensions import db
from ..models import ACTIVE_RENTAL_STATES, Customer, PtiAccount, Rental, Site, SyncState, Unit, count
from ..security import ACTORS, EVERYONE, roles_required
from ..sync.errors import CATALOGUE, Problem, problem
from . import NUMBER, page_or_block
from .acting import act

bp = Blueprint("failures", __name__, url_prefix="/failures")

PAGE_SIZE = 50  # rentals listed per page of one cause (`?cause=`)
GLANCE = 10  # rentals listed per cause on the page of every cause, each linking to its own pages
NO_ACTION = "Nothing to do"  # how the catalogue's fix begins for a warning that counts as success

# The three kinds of cause, in the order the page shows them.
BLOCKING, RETRIED, WARNING = "blocking", "retried", "warning"


def kind_of(entry: Problem) -> str:
    """Blocking needs a person; retried passes on its own (the product retries before it parks anyone); a warning
    needs no action at all (the catalogue says "Nothing to do")."""
    if entry.retryable:
        return RETRIED
    if entry.fix.startswith(NO_ACTION):
        return WARNING
    return BLOCKING


@dataclass
class Group:
    cause: str
    entry: Problem
    count: int = 0  # active rentals failed with this cause: what the Overview and the site page count
    customers: int = 0  # accounts a retry of the cause puts back in line
    by_site: dict[int, int] = field(default_factory=dict)  # site id -> failed rentals
    rentless: int = 0  # customers parked with this cause and no active rental failed with it (e.g. a move-out)

    @property
    def kind(self) -> str:
        return kind_of(self.entry)


def _failed_rentals(site: Site | None, cause: str | None = None):
    stmt = select(Rental).where(Rental.state.in_(ACTIVE_RENTAL_STATES), Rental.sync_state == SyncState.FAILED)
    if site is not None:
        stmt = stmt.where(Rental.site_id == site.id)
    if cause is not None:
        stmt = stmt.where(Rental.last_error == cause)
    return stmt


def _rentless(site: Site | None, cause: str | None = None):
    """Parked accounts with no active rental failed by their cause: they hold no rental the Overview counts."""
    shown = select(Rental.id).where(Rental.customer_id == PtiAccount.customer_id, Rental.site_id == PtiAccount.site_id,
                                    Rental.state.in_(ACTIVE_RENTAL_STATES), Rental.sync_state == SyncState.FAILED,
                                    Rental.last_error == PtiAccount.last_error)
    stmt = select(PtiAccount).where(PtiAccount.state == SyncState.FAILED, ~shown.exists())
    if site is not None:
        stmt = stmt.where(PtiAccount.site_id == site.id)
    if cause is not None:
        stmt = stmt.where(PtiAccount.last_error == cause)
    return stmt


def failure_groups(site: Site | None = None, cause: str | None = None) -> list[Group]:
    """Two grouped queries, whatever the number of failures: rentals, then the parked customers without one."""
    groups: dict[str, Group] = {}

    def group(reason: str) -> Group:
        return groups.setdefault(reason, Group(reason, problem(reason)))

    failed = _failed_rentals(site, cause).subquery()
    for reason, site_id, rentals, customers in db.session.execute(
            select(failed.c.last_error, failed.c.site_id, func.count(), func.count(func.distinct(failed.c.customer_id)))
            .group_by(failed.c.last_error, failed.c.site_id)):
        g = group(reason)
        g.count += rentals
        g.customers += customers
        g.by_site[site_id] = g.by_site.get(site_id, 0) + rentals
    parked = _rentless(site, cause).subquery()
    for reason, site_id, n in db.session.execute(select(parked.c.last_error, parked.c.site_id, func.count())
                                                 .group_by(parked.c.last_error, parked.c.site_id)):
        g = group(reason)
        g.rentless += n
        g.customers += n
    order = {BLOCKING: 0, RETRIED: 1, WARNING: 2}
    return sorted(groups.values(), key=lambda g: (order[g.kind], -g.count, -g.rentless, g.cause))


def _first_rentals(site: Site | None, cause: str | None, page: int) -> dict[str, list[Rental]]:
    """Each cause's page of failed rentals (by site, then unit), in one query whatever the number of causes: each
    failed rental is ranked within its cause, and only the ranks of the page are read. The page of every cause shows
    a glance at each (GLANCE rentals); one cause's page shows PAGE_SIZE a page."""
    order = (Site.title, Unit.name, Rental.id)
    ranked = (_failed_rentals(site, cause).join(Rental.unit).join(Rental.site)
              .with_only_columns(Rental.id, func.row_number().over(partition_by=Rental.last_error,
                                                                    order_by=order).label("rank"))
              .subquery())
    size = PAGE_SIZE if cause else GLANCE
    first = (page - 1) * size
    rentals = db.session.scalars(
        select(Rental).join(ranked, ranked.c.id == Rental.id).join(Rental.unit).join(Rental.site)
        .where(ranked.c.rank > first, ranked.c.rank <= first + size)
        .options(joinedload(Rental.unit), joinedload(Rental.customer), joinedload(Rental.site))
        .order_by(*order)).all()
    items: dict[str, list[Rental]] = {}
    for rental in rentals:
        items.setdefault(rental.last_error, []).append(rental)
    return items


def retrying() -> list[tuple[Problem, int]]:
    """Customers waiting for the product's own next attempt (pending, with the last attempt's cause): no one acts."""
    rows = db.session.execute(
        select(PtiAccount.last_error, func.count()).where(
            PtiAccount.state == SyncState.PENDING, PtiAccount.last_error.is_not(None),
            PtiAccount.next_attempt_at.is_not(None))
        .group_by(PtiAccount.last_error).order_by(func.count().desc(), PtiAccount.last_error))
    return [(problem(reason), n) for reason, n in rows]


def _site_arg(values) -> Site | None:
    raw = values.get("site", "")
    if not raw:
        return None
    if not NUMBER.fullmatch(raw):
        abort(400, description="The site must be a site's number.")
    return db.session.get(Site, int(raw)) or abort(404)


def _cause_arg(values, site: Site | None, *, required: bool) -> str | None:
    cause = values.get("cause", "")
    if not cause:
        if required:
            abort(400, description="Say which cause to retry.")
        return None
    if cause not in CATALOGUE and not count(_failed_rentals(site, cause)) and not count(_rentless(site, cause)):
        abort(404)
    return cause


def _page_arg() -> int:
    raw = request.args.get("page", "1")
    if not NUMBER.fullmatch(raw) or int(raw) < 1:
        abort(400, description="The page must be a number of 1 or more.")
    return int(raw)


@bp.route("/")
@roles_required(*EVERYONE)
def index():
    site = _site_arg(request.args)
    cause = _cause_arg(request.args, site, required=False)
    page = _page_arg() if cause else 1
    groups = failure_groups(site, cause)
    if cause and not groups:  # a known cause with nothing failed now: say so rather than show every cause
        groups = [Group(cause, problem(cause))]
    items = _first_rentals(site, cause, page)
    rentless = {}
    if any(g.rentless for g in groups):
        rentless = {g.cause: db.session.scalars(
            _rentless(site, g.cause).join(PtiAccount.customer)
            .options(joinedload(PtiAccount.customer), joinedload(PtiAccount.site))
            .order_by(Customer.last_name, Customer.first_name, PtiAccount.id).limit(PAGE_SIZE)).all()
            for g in groups if g.rentless}
    context = dict(
        groups=groups, items=items, rentless=rentless, site=site, cause=cause, page=page, page_size=PAGE_SIZE,
        sites={s.id: s for s in db.session.scalars(select(Site).order_by(Site.title))},
        retrying=retrying() if not cause else [], can_act=current_user.role in ACTORS,
        BLOCKING=BLOCKING, RETRIED=RETRIED, WARNING=WARNING)
    return page_or_block("failures/index.html", "groups", "failure-groups", **context)


@bp.route("/retry", methods=["POST"])
@roles_required(*ACTORS)
def retry():
    """Retry all of one cause (at one site if the form names it): every account of the group goes back in line."""
    site = _site_arg(request.form)
    cause = _cause_arg(request.form, site, required=True)
    customers = count(actions.failed_accounts(site, cause))

    def requeue(actor):
        if not customers:
            raise actions.ActionError("Nothing to retry: nothing has failed with this cause any more.")
        return actions.requeue_failed(actor, site=site, cause=cause)

    where = f" at {site.title}" if site else ""
    done = (f"{customers} customer{'s' if customers != 1 else ''}{where} queued again: "
            f"“{problem(cause).message}” They show as pending until PTI has them.")
    return act(requeue, done=done, back=url_for("failures.index", site=site.id if site else None),
               fragment=lambda: render_template("sites/_done.html"))
