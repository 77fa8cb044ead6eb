"""Uploads: support's CSV pushes (`id,customFields.pti_synced` rows, domain.md behaviour 10)."""

from __future__ import annotations

from flask import Blueprint, render_template

from ..models import Role
from ..security import roles_required

bp = Blueprint("uploads", __name__, url_prefix="/uploads")


@bp.route("/")
@roles_required(Role.ADMIN, Role.MANAGER, Role.SUPPORT)
def index():
    return render_template("uploads/index.html")
