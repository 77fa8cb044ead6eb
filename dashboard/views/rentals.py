"""Rentals: search and filter every rental, see its PTI sync state and last error in plain words."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request, url_for
from jinja2_fragments.flask import render_block
from sqlalchemy import or_, select
from sqlalchemy.orm import joinedload

from .. import actions
from ..engine.problems import problems_of
from ..extensions import db, htmx
from ..models import Customer, Rental, Site, SyncAttempt, SyncState, Unit, count
from ..security import ACTORS, EVERYONE, roles_required
from . import page_or_block
from .acting import act_on

bp = Blueprint("rentals", __name__, url_prefix="/rentals")

PAGE_SIZE = 50


def rental_query(q: str, site_id: int | None, state: str | None):
    stmt = select(Rental).join(Rental.unit).join(Rental.customer)
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
    total = count(stmt)
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
    return dict(rental=rental, attempts=attempts, SyncState=SyncState, problems=standing)


@bp.route("/<int:rental_id>")
@roles_required(*EVERYONE)
def show(rental_id: int):
    return render_template("rentals/show.html", **_page(rental_id))


@bp.route("/<int:rental_id>/sync")
@roles_required(*EVERYONE)
def sync_status(rental_id: int):
    """The sync region alone, polled while a push is pending; 286 stops the polling once it settled."""
    context = _page(rental_id)
    settled = context["rental"].sync_state not in (SyncState.PENDING, SyncState.SYNCING)
    return render_block("rentals/show.html", "sync", **context), 286 if settled and htmx else 200


def _rental_action(rental_id: int, action, done: str, **kwargs):
    return act_on(Rental, rental_id, action, done=done, back=url_for("rentals.show", rental_id=rental_id),
                  fragment=lambda: render_block("rentals/show.html", "sync", **_page(rental_id)), **kwargs)


@bp.route("/<int:rental_id>/resync", methods=["POST"])
@roles_required(*ACTORS)
def resync(rental_id: int):
    return _rental_action(rental_id, actions.resync_rental, "Push to PTI queued.")


@bp.route("/<int:rental_id>/suspend", methods=["POST"])
@roles_required(*ACTORS)
def suspend(rental_id: int):
    return _rental_action(rental_id, actions.set_suspended, "Suspension queued: the keypad will refuse the code.",
                          suspended=True)


@bp.route("/<int:rental_id>/unsuspend", methods=["POST"])
@roles_required(*ACTORS)
def unsuspend(rental_id: int):
    return _rental_action(rental_id, actions.set_suspended, "Unsuspension queued: the code will open again.",
                          suspended=False)
