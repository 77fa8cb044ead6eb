"""Customers: who rents what, their PTI user and (masked) access code per site."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_wtf import FlaskForm
from sqlalchemy import or_, select
from sqlalchemy.orm import joinedload, selectinload
from wtforms import IntegerField, SelectField
from wtforms.validators import NumberRange, Optional

from .. import actions
from ..audit import record
from ..engine import pti_lists, pti_view
from ..engine.problems import problems_of
from ..extensions import db, htmx
from ..models import Customer, PtiAccount, Rental, Site, SyncState, count
from ..security import ACTORS, EVERYONE, roles_required
from . import page_or_block
from .acting import RecordActions, act, record_page

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
    return page_or_block("customers/index.html", "results", "customer-results", **context)


class AccessForm(FlaskForm):
    """Typed numbers while PTI's lists of the customer's sites are unknown (see `access_form`)."""

    level = IntegerField("Access level", validators=[Optional(), NumberRange(min=1)])
    zone = IntegerField("PTI zone", validators=[Optional(), NumberRange(min=1)])


def _number_or_none(value) -> int | None:
    return None if value in (None, "", "None") else int(value)


class AccessChoiceForm(FlaskForm):
    """PTI's own lists as choices; the action checks the choice against them again."""

    level = SelectField("Access level", coerce=_number_or_none, validate_choice=False)
    zone = SelectField("PTI zone", coerce=_number_or_none, validate_choice=False)


def access_form(customer: Customer, sites: list[Site], **kwargs) -> FlaskForm:
    """The override form: PTI's access levels and zones (those every site of the customer lists) when known."""
    lists = pti_lists.choices(sites)
    if lists is None:
        return AccessForm(**kwargs)
    form = AccessChoiceForm(**kwargs)
    for field, items in ((form.level, lists[0]), (form.zone, lists[1])):
        field.choices = [("", "The site's default"), *((ident, f"{ident} · {label}") for ident, label in items)]
    return form


def customer_accounts(customer: Customer) -> list[PtiAccount]:
    return list(db.session.scalars(
        select(PtiAccount).where(PtiAccount.customer_id == customer.id).options(joinedload(PtiAccount.site))))


def _page(customer_id: int) -> dict:
    customer = db.session.get(Customer, customer_id) or abort(404)
    rentals = db.session.scalars(
        select(Rental).where(Rental.customer_id == customer.id)
        .options(joinedload(Rental.unit), joinedload(Rental.site)).order_by(Rental.state)
    ).all()
    accounts = customer_accounts(customer)
    form = access_form(customer, [a.site for a in accounts],
                       data={"level": customer.access_level_override, "zone": customer.zone_override})
    standing = [*problems_of("customer", customer.sg_id), *problems_of("account", customer.sg_id)]
    return dict(customer=customer, rentals=rentals, accounts=accounts, SyncState=SyncState, form=form,
                problems=standing,
                busy=any(a.state in (SyncState.PENDING, SyncState.SYNCING) for a in accounts))


access_region = record_page(bp, "customer_id", "customers/show.html", "access", ("access", "access"), _page,
                            lambda context: not context["busy"])
ACTIONS = RecordActions(bp, Customer, "customer_id", "customers.show", access_region)
ACTIONS.add("resync", actions.resync_customer, "Push to PTI queued for every site.")
ACTIONS.add("regenerate-code", actions.regenerate_code,
            "New access code queued: the old code stops working once PTI has it.")


@bp.route("/<int:customer_id>/access", methods=["POST"])
@roles_required(*ACTORS)
def set_access(customer_id: int):
    customer = db.session.get(Customer, customer_id) or abort(404)
    form = access_form(customer, [a.site for a in customer_accounts(customer)])
    if not form.validate_on_submit():
        errors = "; ".join(f"{form[name].label.text}: {' '.join(e)}" for name, e in form.errors.items())
        flash(errors or "The form was not valid.", "error")
        if htmx:
            return access_region(customer_id), 422
        return redirect(url_for("customers.show", customer_id=customer_id))
    return ACTIONS.run(customer_id, actions.set_access, "Access level and zone saved; push queued.",
                       level=form.level.data, zone=form.zone.data)


def _account_of(customer_id: int, account_id: int) -> PtiAccount:
    account = db.session.get(PtiAccount, account_id)
    if account is None or account.customer_id != customer_id:
        abort(404)
    return account


def _account_action(customer_id: int, account_id: int, action, done: str, **kwargs):
    return act(action, _account_of(customer_id, account_id), done=done,
               back=url_for("customers.show", customer_id=customer_id),
               fragment=lambda: access_region(customer_id), **kwargs)


@bp.route("/<int:customer_id>/accounts/<int:account_id>/adopt", methods=["POST"])
@roles_required(*ACTORS)
def adopt_pti_user(customer_id: int, account_id: int):
    """Adopt the PTI user staff chose among those PTI Sync did not create (a foreign_pti_user conflict)."""
    return _account_action(customer_id, account_id, actions.adopt_pti_user,
                           "Adoption queued: PTI Sync marks that PTI user as this customer's on the next push.",
                           pti_user_id=request.form.get("pti_user_id", "")[:64])


@bp.route("/<int:customer_id>/accounts/<int:account_id>/separate", methods=["POST"])
@roles_required(*ACTORS)
def separate_pti_user(customer_id: int, account_id: int):
    """Create the customer's own PTI user beside those PTI Sync did not create (a foreign_pti_user conflict)."""
    return _account_action(customer_id, account_id, actions.separate_pti_user,
                           "Separate PTI user queued: the other PTI users stay as they are.")


@bp.route("/<int:customer_id>/reveal-code/<int:account_id>", methods=["POST"])
@roles_required(*ACTORS)
def reveal_code(customer_id: int, account_id: int):
    """Show one access code in full, once, to a role allowed to; the audit log records who saw it."""
    account = _account_of(customer_id, account_id)
    record("reveal code", target_type="customer", target_id=account.customer.sg_id, site=account.site.code)
    db.session.commit()
    return render_template("customers/code.html", account=account)


@bp.route("/<int:customer_id>/accounts/<int:account_id>/check-pti", methods=["POST"])
@roles_required(*EVERYONE)
def check_pti(customer_id: int, account_id: int):
    """Read PTI now for one of the customer's sites and show it beside what PTI Sync wants (writes nothing)."""
    check = pti_view.check(_account_of(customer_id, account_id))
    if htmx:
        return render_template("pti/_check.html", check=check)
    return render_template("customers/show.html", **_page(customer_id), checks={account_id: check})
