"""Uploads: support's CSV pushes (`id,customFields.pti_synced` rows, domain.md behaviour 10).

Support and admins upload and confirm; managers read the history. The request only stores the file and enqueues its
check (dashboard/uploads/check.py): the page polls the upload's state region every second while a job works on it
(checking → ready with its preview, or rejected with every error by line), Confirm moves a ready upload to applying
once (apply.py), and then the region follows its rentals' sync state until none is pending. No request reads the
whole file: each answers in well under a second whatever its size. Each upload's rows can be read and exported.
"""

from __future__ import annotations

import csv
import io

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user
from jinja2_fragments.flask import render_block
from sqlalchemy import select
from sqlalchemy.orm import joinedload
from werkzeug.exceptions import RequestEntityTooLarge

from ..extensions import db, htmx
from ..models import Customer, Rental, Role, RowAction, Site, SyncState, Unit, Upload, UploadRow, UploadStatus, count
from ..security import UPLOADERS, roles_required
from ..sync.errors import problem
from ..uploads.apply import confirm as confirm_upload
from ..uploads.apply import progress
from ..uploads.check import receive, stalled
from ..uploads.check import retry as retry_upload
from ..uploads.parse import MAX_ROWS, escape_cell
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
    context = dict(uploads=_history(), max_mb=_max_mb(), max_rows=f"{MAX_ROWS:,}")
    return page_or_block("uploads/index.html", "history", "upload-history", **context)


@bp.route("/", methods=["POST"])
@roles_required(*UPLOADERS)
def create():
    """Store the file and enqueue its check; the answer is the upload's state region, polling its progress."""
    file = request.files.get("file")
    if file is None or not file.filename:
        return _refused("Choose a CSV file to upload.", 422)
    upload = receive(file.read(), file.filename, current_user._get_current_object())
    if not htmx:
        return redirect(url_for("uploads.show", upload_id=upload.id), 303)
    response = make_response(render_block("uploads/index.html", "result", **_state(upload)), 202)
    response.headers["HX-Trigger"] = "uploadsChanged"
    return response


@bp.route("/<int:upload_id>")
@roles_required(*READERS)
def show(upload_id: int):
    upload = db.session.get(Upload, upload_id) or abort(404)
    state = request.args.get("state") if request.args.get("state") in ROW_FILTERS else None
    action = request.args.get("action") if request.args.get("action") in set(RowAction) else None
    page = max(1, request.args.get("page", 1, type=int))
    stmt = _rows(upload, state, action)
    total = count(stmt)
    rows = db.session.scalars(stmt.limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)).all()
    context = dict(rows=rows, state=state, action=action, page=page, total=total, actions=list(RowAction),
                   pages=max(1, -(-total // PAGE_SIZE)), filters=ROW_FILTERS, **_state(upload))
    return page_or_block("uploads/show.html", "rows", "upload-rows", **context)


@bp.route("/<int:upload_id>/progress")
@roles_required(*READERS)
def progress_status(upload_id: int):
    """The state region alone, polled every second; 286 stops the polling once nothing more will change by itself.
    When the status differs from the one the page last saw (`seen`), the history refreshes too."""
    upload = db.session.get(Upload, upload_id) or abort(404)
    context = _state(upload)
    response = make_response(render_block("uploads/show.html", "state", **context),
                             286 if htmx and not context["polling"] else 200)
    if request.args.get("seen") not in (None, upload.status):
        response.headers["HX-Trigger"] = "uploadsChanged"
    return response


@bp.route("/<int:upload_id>/confirm", methods=["POST"])
@roles_required(*UPLOADERS)
def confirm(upload_id: int):
    """Ready → applying, once (a double click or a second person finds it confirmed already); the marking is a job."""
    upload = db.session.get(Upload, upload_id) or abort(404)
    moved = confirm_upload(upload, current_user._get_current_object())
    return _after_action(upload, "Confirmed: the rentals are being marked for a push." if moved else
                         f"Upload {upload.id} is {UploadStatus(upload.status).label.lower()}: nothing to confirm.")


@bp.route("/<int:upload_id>/retry", methods=["POST"])
@roles_required(*UPLOADERS)
def retry(upload_id: int):
    """Start a stopped check or marking again (nothing of the stopped one was kept or applied)."""
    upload = db.session.get(Upload, upload_id) or abort(404)
    restarted = retry_upload(upload)
    return _after_action(upload, "Started again." if restarted else
                         f"Upload {upload.id} is {UploadStatus(upload.status).label.lower()}: nothing to retry.")


def _after_action(upload: Upload, message: str):
    if htmx:
        response = make_response(render_block("uploads/show.html", "state", **_state(upload)))
        response.headers["HX-Trigger"] = "uploadsChanged"
        return response
    flash(message, "info")
    return redirect(url_for("uploads.show", upload_id=upload.id), 303)


@bp.route("/<int:upload_id>/results.csv")
@roles_required(*READERS)
def export(upload_id: int):
    """Each row's planned action and result as CSV for a spreadsheet, streamed a page of rows at a time (100,000
    rows start at once); cells that could run as a formula are escaped."""
    upload = db.session.get(Upload, upload_id) or abort(404)
    lines = _error_lines(upload) if upload.status == UploadStatus.REJECTED else _result_lines(upload.id)
    response = Response(stream_with_context(lines), content_type="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="upload-{upload.id}-results.csv"'
    return response


EXPORT_HEADER = ["line", "id", "unit", "pti_unit_name", "site", "customer", "email", "action", "sync_state", "problem"]
EXPORT_PAGE = 2000


def _csv_line(values) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow([escape_cell(value) for value in values])
    return out.getvalue()


def _error_lines(upload: Upload):
    yield "\ufeff" + _csv_line(["line", "error"])  # the mark makes spreadsheet programs read UTF-8
    for error in upload.errors or []:
        yield _csv_line([error["line"], error["message"]])


def _result_lines(upload_id: int):
    yield "\ufeff" + _csv_line(EXPORT_HEADER)
    columns = (UploadRow.line, Rental.sg_id, Unit.name, Unit.pti_unit_name, Site.title, Customer.first_name,
               Customer.last_name, Customer.email, UploadRow.action, Rental.sync_state, Rental.last_error)
    stmt = (select(*columns).join(Rental, Rental.id == UploadRow.rental_id).join(Unit, Unit.id == Rental.unit_id)
            .join(Site, Site.id == Rental.site_id).join(Customer, Customer.id == Rental.customer_id)
            .where(UploadRow.upload_id == upload_id).order_by(UploadRow.line).limit(EXPORT_PAGE))
    after = 0
    while True:
        page = db.session.execute(stmt.where(UploadRow.line > after)).all()
        if not page:
            return
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        for (line, sg_id, unit, pti_unit, site, first, last, email, action, sync_state, error) in page:
            writer.writerow([escape_cell(value) for value in (
                line, sg_id, unit, pti_unit, site, f"{first} {last}".strip() or email, email,
                RowAction(action).label if action else "", SyncState(sync_state).label,
                problem(error).message if error else "")])
        yield out.getvalue()
        after = page[-1][0]


@bp.errorhandler(RequestEntityTooLarge)
def too_large(exc):
    return _refused(f"The file is too large: an upload takes at most {_max_mb()} MB. Split it into several files "
                    "and upload each.", 413)


def _refused(message: str, status: int):
    """Nothing was recorded: say why, as a fragment for htmx or on the page."""
    if htmx:
        return render_block("uploads/index.html", "refused", message=message), status
    return render_template("uploads/index.html", uploads=_history(), max_mb=_max_mb(), max_rows=f"{MAX_ROWS:,}",
                           refused=message), status


def _rows(upload: Upload, state: str | None, action: str | None = None):
    stmt = (select(UploadRow).where(UploadRow.upload_id == upload.id)
            .options(joinedload(UploadRow.rental).joinedload(Rental.unit),
                     joinedload(UploadRow.rental).joinedload(Rental.customer),
                     joinedload(UploadRow.rental).joinedload(Rental.site))
            .order_by(UploadRow.line))
    if state:
        stmt = stmt.join(UploadRow.rental).where(Rental.sync_state.in_(ROW_FILTERS[state]))
    if action:
        stmt = stmt.where(UploadRow.action == action)
    return stmt


def _state(upload: Upload) -> dict:
    """What the state region shows: the upload, its rentals' progress once applied, whether its job stopped, and
    whether the region goes on polling."""
    current = progress(upload) if upload.status == UploadStatus.APPLIED else None
    stopped = stalled(upload)
    polling = (UploadStatus(upload.status).working and not stopped) or (current is not None and not current.done)
    return dict(upload=upload, progress=current, stalled=stopped, polling=polling,
                can_act=current_user.role in UPLOADERS)


def _max_mb() -> str:
    limit = current_app.config.get("MAX_CONTENT_LENGTH") or 0
    return f"{limit / (1024 * 1024):g}"
