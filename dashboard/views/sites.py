"""Sites: their PTI connection (never the secrets) and their rentals' sync health."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, url_for
from sqlalchemy import select

from .. import actions
from ..engine.problems import problems_of
from ..extensions import db
from ..models import Site, Unit
from ..security import ACTORS, EVERYONE, roles_required
from .acting import act_on
from .overview import queue_status, site_health

bp = Blueprint("sites", __name__, url_prefix="/sites")


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
                           problems=problems_of("site", site.sg_id), redis_ok=redis_ok)


def _site_action(site_id: int, action, done: str, **kwargs):
    return act_on(Site, site_id, action, done=done, back=url_for("sites.show", site_id=site_id),
                  fragment=lambda: render_template("sites/_done.html"), **kwargs)


@bp.route("/<int:site_id>/resync", methods=["POST"])
@roles_required(*ACTORS)
def resync(site_id: int):
    return _site_action(site_id, actions.resync_site, "Every customer of the site is queued for a push.")


@bp.route("/<int:site_id>/requeue-failed", methods=["POST"])
@roles_required(*ACTORS)
def requeue_failed(site_id: int):
    return _site_action(site_id, lambda site, actor: actions.requeue_failed(actor, site=site),
                        "Failed customers of the site are queued again.")
