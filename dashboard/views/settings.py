"""Settings: staff accounts and roles (admins only)."""

from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy import select

from ..extensions import db
from ..models import Role, Site, StaffUser
from ..security import roles_required

bp = Blueprint("settings", __name__, url_prefix="/settings")


@bp.route("/")
@roles_required(Role.ADMIN)
def index():
    users = db.session.scalars(select(StaffUser).order_by(StaffUser.email)).all()
    sites = db.session.scalars(select(Site).order_by(Site.title)).all()
    return render_template("settings/index.html", users=users, sites=sites)
