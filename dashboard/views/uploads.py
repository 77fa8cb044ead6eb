"""Uploads: support's CSV pushes (`id,customFields.pti_synced` rows, domain.md behaviour 10).

Support and admins upload; managers read the history. A file is applied all or nothing (dashboard/bulk_push.py);
the result polls its rentals' sync state until none is pending, and each upload's rows can be read and exported.
"""

from __future__ import annotations

import csv
import io

from flask import Blueprint, abort, current_app, make_response, redirect, render_template, request, url_for
from flask_login import current_user
from jinja2_fragments.flask import render_block
from sqlalchemy import select
from sqlalchemy.orm import joinedload
from werkzeug.exceptions import RequestEntityTooLarge

from ..extensions import db, htmx
from ..models import Rental, Role, SyncState, Upload, UploadRow, UploadStatus, count
from ..security import UPLOADERS, roles_required
from ..sync.errors import problem
from ..uploads.apply import apply_csv, progress
from ..uploads.parse import escape_cell
from . import page_or_block

bp = Blueprint("uploads", __name__, url_prefix="/uploads")

READERS = (Role.ADMIN, Role.MANAGER, Role.SUPPORT)
HISTORY_SIZE = 50
PAGE_SIZE = 100
ROW_FILTERS = {"failed": (SyncState.FAILED,), "pending": (SyncState.PENDING, SyncState.SYNCING),
               "in_sync": (SyncState.IN_SYNC,), "not_synced": (SyncState.UNMAPPED, SyncState.DISABLED)}


def _history() -> list[Upload]:
    return db.session.scalars(select(Upload).order_by(Upload.id.desc()).limit(HISTORY_SIZE)).all()


@bp.route("/")
@roles_required(*READERS)
def index():
    context = dict(uploads=_history(), max_mb=_max_mb())
    return page_or_block("uploads/index.html", "history", "upload-history", **context)


@bp.route("/", methods=["POST"])
@roles_required(*UPLOADERS)
def create():
    file = request.files.get("file")
    if file is None or not file.filename:
        return _refused("Choose a CSV file to upload.", 422)
    upload = apply_csv(file.read(), file.filename, current_user._get_current_object())
    if not htmx:
        return redirect(url_for("uploads.show", upload_id=upload.id), 303)
    response = make_response(render_block("uploads/index.html", "result", upload=upload, progress=_progress(upload)),
                             200 if upload.status == UploadStatus.APPLIED else 422)
    response.headers["HX-Trigger"] = "uploadsChanged"
    return response


@bp.route("/<int:upload_id>")
@roles_required(*READERS)
def show(upload_id: int):
    upload = db.session.get(Upload, upload_id) or abort(404)
    state = request.args.get("state") if request.args.get("state") in ROW_FILTERS else None
    page = max(1, request.args.get("page", 1, type=int))
    stmt = _rows(upload, state)
    total = count(stmt)
    rows = db.session.scalars(stmt.limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)).all()
    context = dict(upload=upload, progress=_progress(upload), rows=rows, state=state, page=page, total=total,
                   pages=max(1, -(-total // PAGE_SIZE)), filters=ROW_FILTERS)
    return page_or_block("uploads/show.html", "rows", "upload-rows", **context)


@bp.route("/<int:upload_id>/progress")
@roles_required(*READERS)
def progress_status(upload_id: int):
    """The progress region alone, polled every second; 286 stops the polling once nothing is pending."""
    upload = db.session.get(Upload, upload_id) or abort(404)
    current = _progress(upload)
    body = render_block("uploads/show.html", "progress", upload=upload, progress=current)
    return body, 286 if htmx and (current is None or current.done) else 200


@bp.route("/<int:upload_id>/results.csv")
@roles_required(*READERS)
def export(upload_id: int):
    """Each row's result as CSV for a spreadsheet; cells that could run as a formula are escaped."""
    upload = db.session.get(Upload, upload_id) or abort(404)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    if upload.status == UploadStatus.REJECTED:
        writer.writerow(["line", "error"])
        for error in upload.errors or []:
            writer.writerow([escape_cell(error["line"]), escape_cell(error["message"])])
    else:
        writer.writerow(["line", "id", "unit", "pti_unit_name", "site", "customer", "email", "sync_state",
                         "problem"])
        for row in db.session.scalars(_rows(upload, None)):
            r = row.rental
            writer.writerow([escape_cell(value) for value in (
                row.line, r.sg_id, r.unit.name, r.unit.pti_unit_name, r.site.title, r.customer.name, r.customer.email,
                SyncState(r.sync_state).label, problem(r.last_error).message if r.last_error else "")])
    response = make_response("\ufeff" + out.getvalue())  # the mark makes spreadsheet programs read UTF-8
    response.headers["Content-Type"] = "text/csv; charset=utf-8"
    response.headers["Content-Disposition"] = f'attachment; filename="upload-{upload.id}-results.csv"'
    return response


@bp.errorhandler(RequestEntityTooLarge)
def too_large(exc):
    return _refused(f"The file is too large: an upload takes at most {_max_mb()} MB. Split it into several files "
                    "and upload each.", 413)


def _refused(message: str, status: int):
    """Nothing was recorded: say why, as a fragment for htmx or on the page."""
    if htmx:
        return render_block("uploads/index.html", "refused", message=message), status
    return render_template("uploads/index.html", uploads=_history(), max_mb=_max_mb(), refused=message), status


def _rows(upload: Upload, state: str | None):
    stmt = (select(UploadRow).where(UploadRow.upload_id == upload.id)
            .options(joinedload(UploadRow.rental).joinedload(Rental.unit),
                     joinedload(UploadRow.rental).joinedload(Rental.customer),
                     joinedload(UploadRow.rental).joinedload(Rental.site))
            .order_by(UploadRow.line))
    if state:
        stmt = stmt.join(UploadRow.rental).where(Rental.sync_state.in_(ROW_FILTERS[state]))
    return stmt


def _progress(upload: Upload):
    return progress(upload) if upload.status == UploadStatus.APPLIED else None


def _max_mb() -> str:
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or 0
    return f"{limit / (1024 * 1024):g}"
