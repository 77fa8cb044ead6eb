"""Rentals: search and filter every rental, see its PTI sync state and last error in plain words."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request
from sqlalchemy import or_, select
from sqlalchemy.orm import joinedload

from .. import actions
from ..engine import pti_view
from ..engine.problems import problems_of
from ..extensions import db, htmx
from ..models import Customer, PtiAccount, Rental, Site, SyncAttempt, SyncState, Unit, count
from ..security import EVERYONE, roles_required
from . import page_or_block
from .acting import RecordActions, record_page
from .journey import journeys

bp = Blueprint("rentals", __name__, url_prefix="/rentals")

PAGE_SIZE = 50


def rental_query(q: str, site_id: int | None, state: str | None, *, joined: bool = True):
    """The rentals matching the filters. `joined=False` (for counting them) joins the unit and customer only when the
    search needs them: each rental has exactly one of each, so the count is the same without a pass over two more
    tables."""
    stmt = select(Rental)
    if joined or q:
        stmt = stmt.join(Rental.unit).join(Rental.customer)
    if q:
        like = f"%{q.strip()}%"
        stmt = stmt.where(or_(Unit.name.ilike(like), Unit.pti_unit_name.ilike(like), Customer.email.ilike(like),
                              Customer.first_name.ilike(like), Customer.last_name.ilike(like),
                              Rental.sg_id == q.strip()))
    if site_id:
        stmt = stmt.where(Rental.site_id == site_id)
    if state == "overlocked":
        stmt = stmt.where(Rental.overlocked.is_(True))
    elif state:
        stmt = stmt.where(Rental.sync_state == state)
    return stmt


@bp.route("/")
@roles_required(*EVERYONE)
def index():
    q = request.args.get("q", "")[:100]
    site_id = request.args.get("site", type=int)
    state = request.args.get("state") or None
    page = max(1, request.args.get("page", 1, type=int))
    stmt = rental_query(q, site_id, state)
    total = count(rental_query(q, site_id, state, joined=False))
    rentals = db.session.scalars(
        stmt.options(joinedload(Rental.unit), joinedload(Rental.customer), joinedload(Rental.site))
        .order_by(Rental.site_id, Unit.name).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
    ).all()
    context = dict(rentals=rentals, q=q, site_id=site_id, state=state, page=page, total=total,
                   pages=max(1, -(-total // PAGE_SIZE)), sites=db.session.scalars(select(Site)).all(),
                   SyncState=SyncState)
    return page_or_block("rentals/index.html", "results", "rental-results", **context)


def _page(rental_id: int) -> dict:
    rental = db.session.get(Rental, rental_id, options=[joinedload(Rental.unit), joinedload(Rental.customer),
                                                        joinedload(Rental.site)]) or abort(404)
    attempts = db.session.scalars(
        select(SyncAttempt).join(SyncAttempt.account)
        .where(SyncAttempt.account.has(customer_id=rental.customer_id, site_id=rental.site_id))
        .order_by(SyncAttempt.id.desc()).limit(20)
    ).all()
    standing = [*problems_of("rental", rental.sg_id), *problems_of("unit", rental.unit.sg_id),
                *(p for p in problems_of("account", rental.customer.sg_id) if p.site_id == rental.site_id)]
    # Called by the page itself, not by the polled sync region (render_block renders that block alone).
    return dict(rental=rental, attempts=attempts, SyncState=SyncState, problems=standing,
                journeys=lambda: journeys(rental))


sync_region = record_page(bp, "rental_id", "rentals/show.html", "sync", ("sync_status", "sync"), _page,
                          lambda context: context["rental"].sync_state not in (SyncState.PENDING, SyncState.SYNCING))
ACTIONS = RecordActions(bp, Rental, "rental_id", "rentals.show", sync_region)
ACTIONS.add("resync", actions.resync_rental, "Push to PTI queued.")
ACTIONS.add("suspend", actions.set_suspended, "Suspension queued: the keypad will refuse the code.", suspended=True)
ACTIONS.add("unsuspend", actions.set_suspended, "Unsuspension queued: the code will open again.", suspended=False)


@bp.route("/<int:rental_id>/check-pti", methods=["POST"])
@roles_required(*EVERYONE)
def check_pti(rental_id: int):
    """Read PTI now for the rental's customer at its site and show it beside what PTI Sync wants (writes nothing)."""
    rental = db.session.get(Rental, rental_id) or abort(404)
    account = db.session.scalar(select(PtiAccount).where(PtiAccount.customer_id == rental.customer_id,
                                                         PtiAccount.site_id == rental.site_id))
    check = pti_view.check(account) if account is not None else None
    if htmx:
        return render_template("pti/_check.html", check=check)
    return render_template("rentals/show.html", **_page(rental_id), check=check, checked=True)
