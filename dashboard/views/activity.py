"""Activity: the audit log and the sync journal, newest first."""

from __future__ import annotations

from flask import Blueprint, render_template
from sqlalchemy import select
from sqlalchemy.orm import joinedload

from ..extensions import db
from ..models import AuditEntry, PtiAccount, SyncAttempt
from ..security import EVERYONE, roles_required

bp = Blueprint("activity", __name__, url_prefix="/activity")

SHOWN = 100


@bp.route("/")
@roles_required(*EVERYONE)
def index():
    audit = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(SHOWN)).all()
    attempts = db.session.scalars(
        select(SyncAttempt).options(joinedload(SyncAttempt.account).joinedload(PtiAccount.customer),
                                    joinedload(SyncAttempt.account).joinedload(PtiAccount.site))
        .order_by(SyncAttempt.id.desc()).limit(SHOWN)
    ).all()
    return render_template("activity/index.html", audit=audit, attempts=attempts)
