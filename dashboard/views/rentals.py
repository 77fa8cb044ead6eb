"""Rentals: search and filter every rental, see its PTI sync state and last error in plain words."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request
from jinja2_fragments.flask import render_block
from sqlalchemy import or_, select
from sqlalchemy.orm import joinedload

from ..extensions import db, htmx
from ..models import Customer, Rental, Site, SyncAttempt, SyncState, Unit, count
from ..security import EVERYONE, roles_required

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
    if htmx and htmx.target == "rental-results":
        return render_block("rentals/index.html", "results", **context)
    return render_template("rentals/index.html", **context)


@bp.route("/<int:rental_id>")
@roles_required(*EVERYONE)
def show(rental_id: int):
    rental = db.session.get(Rental, rental_id, options=[joinedload(Rental.unit), joinedload(Rental.customer),
                                                        joinedload(Rental.site)]) or abort(404)
    attempts = db.session.scalars(
        select(SyncAttempt).join(SyncAttempt.account)
        .where(SyncAttempt.account.has(customer_id=rental.customer_id, site_id=rental.site_id))
        .order_by(SyncAttempt.started_at.desc()).limit(20)
    ).all()
    return render_template("rentals/show.html", rental=rental, attempts=attempts, SyncState=SyncState)
