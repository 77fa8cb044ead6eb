"""Customers: who rents what, their PTI user and (masked) access code per site."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request
from jinja2_fragments.flask import render_block
from sqlalchemy import or_, select
from sqlalchemy.orm import joinedload, selectinload

from ..extensions import db, htmx
from ..models import Customer, PtiAccount, Rental, SyncState, count
from ..security import EVERYONE, roles_required

bp = Blueprint("customers", __name__, url_prefix="/customers")

PAGE_SIZE = 50


@bp.route("/")
@roles_required(*EVERYONE)
def index():
    q = request.args.get("q", "")[:100]
    page = max(1, request.args.get("page", 1, type=int))
    stmt = select(Customer)
    if q:
        like = f"%{q.strip()}%"
        stmt = stmt.where(or_(Customer.email.ilike(like), Customer.first_name.ilike(like),
                              Customer.last_name.ilike(like)))
    total = count(stmt)
    customers = db.session.scalars(
        stmt.options(selectinload(Customer.rentals)).order_by(Customer.last_name, Customer.first_name)
        .limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
    ).all()
    context = dict(customers=customers, q=q, page=page, total=total, pages=max(1, -(-total // PAGE_SIZE)))
    if htmx and htmx.target == "customer-results":
        return render_block("customers/index.html", "results", **context)
    return render_template("customers/index.html", **context)


@bp.route("/<int:customer_id>")
@roles_required(*EVERYONE)
def show(customer_id: int):
    customer = db.session.get(Customer, customer_id) or abort(404)
    rentals = db.session.scalars(
        select(Rental).where(Rental.customer_id == customer.id)
        .options(joinedload(Rental.unit), joinedload(Rental.site)).order_by(Rental.state)
    ).all()
    accounts = db.session.scalars(
        select(PtiAccount).where(PtiAccount.customer_id == customer.id).options(joinedload(PtiAccount.site))
    ).all()
    return render_template("customers/show.html", customer=customer, rentals=rentals, accounts=accounts,
                           SyncState=SyncState)
