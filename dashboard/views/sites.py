"""Sites: their PTI connection (never the secrets) and their rentals' sync health."""

from __future__ import annotations

from zoneinfo import available_timezones

from flask import Blueprint, abort, render_template, request
from flask_login import current_user
from sqlalchemy import select

from .. import actions
from ..engine.problems import problems_of
from ..extensions import db
from ..models import Customer, PtiAccount, Role, Site, Unit
from ..security import ACTORS, ADMINS, EVERYONE, roles_required
from .acting import RecordActions
from .overview import queue_status, site_health

bp = Blueprint("sites", __name__, url_prefix="/sites")
ZONES = sorted(available_timezones())


@bp.route("/")
@roles_required(*EVERYONE)
def index():
    return render_template("sites/index.html", sites=site_health())


@bp.route("/<int:site_id>")
@roles_required(*EVERYONE)
def show(site_id: int):
    site = db.session.get(Site, site_id) or abort(404)
    health = next(h for h in site_health() if h.site.id == site.id)
    redis_ok = queue_status([health])
    unmapped = db.session.scalars(
        select(Unit).where(Unit.site_id == site.id, Unit.pti_unit_name.is_(None),
                     Unit.pti_switched_off.is_(False)).order_by(Unit.name)
    ).all()
    return render_template("sites/show.html", site=site, health=health, unmapped=unmapped,
                           problems=problems_of("site", site.sg_id), redis_ok=redis_ok, drift=_drift(site),
                           zones=ZONES if current_user.role == Role.ADMIN else ())


def _drift(site: Site) -> dict | None:
    """The site's drift report with the customers it names (drifted accounts, duplicated marks) looked up."""
    report = site.drift_report
    if not report:
        return None
    drifted = db.session.scalars(select(Customer).join(PtiAccount, PtiAccount.customer_id == Customer.id)
                                 .where(PtiAccount.id.in_(report.get("drifted_accounts", [])))
                                 .order_by(Customer.last_name, Customer.first_name)).all()
    duplicates = report.get("duplicate_users", [])
    marked = {c.sg_id: (c, user_id) for c, user_id in db.session.execute(
        select(Customer, PtiAccount.pti_user_id).outerjoin(
            PtiAccount, (PtiAccount.customer_id == Customer.id) & (PtiAccount.site_id == site.id))
        .where(Customer.sg_id.in_([d["marker"] for d in duplicates])))}
    return {**report, "drifted_customers": drifted,
            "duplicate_customers": [(*marked.get(d["marker"], (None, None)), d) for d in duplicates]}


@bp.route("/<int:site_id>/time-zone", methods=["POST"])
@roles_required(*ADMINS)
def set_time_zone(site_id: int):
    return ACTIONS.run(site_id, actions.set_time_zone, "Time zone saved: this site's times show in it.",
                       zone=request.form.get("zone", ""))


@bp.route("/<int:site_id>/fix-drift", methods=["POST"])
@roles_required(*ACTORS)
def fix_drift(site_id: int):
    """Remove one stray PTI user of the drift report (an orphan, a duplicate): queued, checked again by the job."""
    return ACTIONS.run(site_id, actions.fix_drift,
                       "Queued: PTI Sync reads PTI again and removes the user only if that is still safe. "
                       "The drift report says the outcome.",
                       kind=request.form.get("kind", ""), pti_user_id=request.form.get("pti_user_id", ""))


ACTIONS = RecordActions(bp, Site, "site_id", "sites.show", lambda site_id: render_template("sites/_done.html"))
ACTIONS.add("resync", actions.resync_site, "Every customer of the site is queued for a push.")
ACTIONS.add("requeue-failed", lambda site, actor: actions.requeue_failed(actor, site=site),
            "Failed customers of the site are queued again.")
