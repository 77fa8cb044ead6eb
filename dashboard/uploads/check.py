"""A bulk-push CSV, received and checked in a job (behaviour 10): the request stores it, the job builds the preview.

`receive` (in the request) stores the file in the database and enqueues `check_upload` on the default queue (a
person is waiting for it; a bulk push on the bulk queue must not delay it), then answers at once. The job reads the
file chunk by chunk (parse.read_chunks), checks each chunk against the mirror, stores its rows with the action
confirming would take (UploadRow.action) in bulk inserts, and writes its progress after every chunk. It ends with the
upload either ready (its preview counted per site) or rejected (every error by line, no row kept). Nothing in the
mirror changes here: only Confirm (apply.py) marks rentals.

The database is the shared store: a worker on another machine reads the file from there, not from this web
server's disk. A job that dies is seen (`stalled`: its heartbeat is old and RQ holds no queued job for it, or it
recorded why it stopped) and `retry` starts it again as a new attempt; an older attempt still running stops at its
next chunk, since every write it makes is guarded by its attempt number.
"""

from __future__ import annotations

import logging
import re
import resource
from datetime import timedelta

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job
from sqlalchemy import Row, String, any_, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from ..audit import record
from ..extensions import db
from ..jobqueue import APPLY_UPLOAD, CHECK_UPLOAD, DEFAULT, enqueue, get_redis
from ..models import (
    ACTIVE_RENTAL_STATES,
    Rental,
    RowAction,
    Site,
    StaffUser,
    SyncState,
    Upload,
    UploadRow,
    UploadStatus,
    utcnow,
)
from . import parse as csvpush

log = logging.getLogger(__name__)

LOOKUP_CHUNK = 500  # ids per IN (...) query on SQLite: well under its parameter limit (PostgreSQL: one array)
FILENAME_CHARS = 255
UNSAFE_FILENAME = re.compile(r"[\x00-\x1f\x7f]")
STALL_AFTER_S = 120  # a working upload whose job gave no sign of life this long, and is not waiting in a queue
UPLOAD_JOB_TIMEOUT_S = 1800  # RQ's limit for one check or apply (100,000 rows take seconds)
WAITING = ("queued", "deferred", "scheduled")  # RQ statuses of a job that has not started yet


def receive(data: bytes, filename: str, actor: StaffUser) -> Upload:
    """Store the file as an upload being checked and enqueue its check; nothing is read or changed yet."""
    upload = Upload(filename=_clean(filename), uploaded_by_id=actor.id, uploaded_by=actor.email,
                    status=UploadStatus.CHECKING, data=data, row_count=_about_rows(data), progress_at=utcnow())
    db.session.add(upload)
    db.session.commit()
    start_job(upload)
    return upload


def job_id(upload: Upload) -> str:
    step = "check" if upload.status == UploadStatus.CHECKING else "apply"
    return f"upload-{upload.id}-{step}-{upload.attempt}"


def start_job(upload: Upload) -> None:
    """Enqueue the job the upload's status owes; when Redis refuses, say so on the upload (Retry shows at once)."""
    job = CHECK_UPLOAD if upload.status == UploadStatus.CHECKING else APPLY_UPLOAD
    try:
        enqueue(job, upload.id, upload.attempt, queue=DEFAULT, job_id=job_id(upload),
                job_timeout=UPLOAD_JOB_TIMEOUT_S)
    except redis.RedisError as exc:
        log.warning("could not enqueue upload %s (%s)", upload.id, exc.__class__.__name__)
        db.session.execute(update(Upload).where(Upload.id == upload.id, Upload.attempt == upload.attempt)
                           .values(problem="The job could not be queued (Redis did not answer)."))
        db.session.commit()
        db.session.refresh(upload)


def stalled(upload: Upload) -> bool:
    """A checking or applying upload whose job is gone: it recorded why, or gave no sign of life for STALL_AFTER_S
    while RQ holds no job for it that is still waiting to start."""
    if not UploadStatus(upload.status).working:
        return False
    if upload.problem:
        return True
    if upload.progress_at and utcnow() - upload.progress_at < timedelta(seconds=STALL_AFTER_S):
        return False
    try:
        return Job.fetch(job_id(upload), connection=get_redis()).get_status() not in WAITING
    except NoSuchJobError:
        return True
    except redis.RedisError:
        return True  # no job can run meanwhile; Retry says so if Redis still does not answer


def retry(upload: Upload) -> bool:
    """Start a stalled upload's job again as a new attempt (a check starts over; an apply is all or nothing, so it
    either committed, and the upload is applied, or left nothing). False when the upload is not stalled."""
    if not stalled(upload):
        return False
    bumped = db.session.execute(
        update(Upload).where(Upload.id == upload.id, Upload.attempt == upload.attempt, Upload.status == upload.status)
        .values(attempt=Upload.attempt + 1, problem=None, progress_at=utcnow())
    ).rowcount
    db.session.commit()
    db.session.refresh(upload)
    if bumped:
        start_job(upload)
    return bool(bumped)


# --- the job ---------------------------------------------------------------------------------------------------


class Superseded(Exception):
    """A newer attempt of the same upload took over: this one stops and keeps nothing."""


def check_upload(upload_id: int, attempt: int) -> str:
    """Read and check the stored file, store its rows with their planned action, build the preview."""
    upload = db.session.get(Upload, upload_id)
    if upload is None or upload.status != UploadStatus.CHECKING or upload.attempt != attempt:
        return f"upload {upload_id}: nothing to check (attempt {attempt})"
    actor = db.session.get(StaffUser, upload.uploaded_by_id) if upload.uploaded_by_id else upload.uploaded_by
    filename = upload.filename
    try:
        result = _check(upload_id, attempt)
    except Superseded:
        db.session.rollback()
        return f"upload {upload_id}: attempt {attempt} superseded"
    except Exception as exc:
        db.session.rollback()
        _beat(upload_id, attempt, problem=f"The check stopped ({exc.__class__.__name__}); nothing was changed.")
        db.session.commit()
        raise
    done = dict(status=UploadStatus.READY if result.ok else UploadStatus.REJECTED, row_count=result.row_count,
                checked=result.row_count, error_count=result.error_count, data=None,
                errors=[{"line": e.line, "message": e.message} for e in result.errors] or None)
    if result.ok:
        done["preview"] = preview(upload_id)
    else:
        db.session.execute(delete(UploadRow).where(UploadRow.upload_id == upload_id))
    _beat(upload_id, attempt, **done)
    totals = done["preview"]["totals"] if result.ok else {}
    record("csv upload", actor=actor, target_type="upload", target_id=upload_id,
           outcome="ready" if result.ok else "rejected", filename=filename, rows=result.row_count,
           errors=result.error_count, **totals)
    db.session.commit()
    return (f"upload {upload_id}: {result.row_count} rows, "
            + ("ready: " + ", ".join(f"{k} {n}" for k, n in totals.items()) if result.ok
               else f"rejected: {result.error_count} errors") + f"; peak RSS {peak_rss_mb():.0f} MB")


def peak_rss_mb() -> float:
    """The peak resident memory of this process (the forked work horse running the job), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _check(upload_id: int, attempt: int) -> csvpush.ParsedCsv:
    data = db.session.scalar(select(Upload.data).where(Upload.id == upload_id)) or b""
    db.session.execute(delete(UploadRow).where(UploadRow.upload_id == upload_id))  # an earlier attempt's rows
    _beat(upload_id, attempt, checked=0)
    db.session.commit()
    result = csvpush.ParsedCsv()
    rows = UploadRow.__table__
    for chunk in csvpush.read_chunks(data, result):
        rentals = _rentals_by_sg_id([row.rental_id for row in chunk])
        for error in (*csvpush.unknown_rental_errors(chunk, set(rentals)), *_lock_errors(chunk, rentals)):
            result.add_error(error.line, error.message)
        if result.ok:  # after the first error rows are only checked: a rejected upload keeps none
            _insert(rows, [(upload_id, row.line, rentals[row.rental_id].id, row.pti_synced, row.overlocked,
                            str(_action(row, rentals[row.rental_id]))) for row in chunk])
        _beat(upload_id, attempt, checked=result.row_count)
        db.session.commit()
    return result


ROW_COLUMNS = ("upload_id", "line", "rental_id", "pti_synced", "overlocked", "action")


def _insert(table, values: list[tuple]) -> None:
    """A chunk's rows, in the job's transaction: PostgreSQL's COPY (one stream, no statement per row), else one
    executemany. On 100,000 rows COPY is several times faster than the pipelined INSERTs it replaces."""
    connection = db.session.connection()
    if connection.dialect.name != "postgresql":
        db.session.execute(table.insert(), [dict(zip(ROW_COLUMNS, row, strict=True)) for row in values])
        return
    with connection.connection.driver_connection.cursor() as cursor:
        with cursor.copy(f"COPY {table.name} ({', '.join(ROW_COLUMNS)}) FROM STDIN") as copy:
            for row in values:
                copy.write_row(row)


def _beat(upload_id: int, attempt: int, **values) -> None:
    """Write the job's progress (and sign of life) unless a newer attempt took the upload over."""
    changed = db.session.execute(
        update(Upload).where(Upload.id == upload_id, Upload.attempt == attempt,
                             Upload.status == UploadStatus.CHECKING)
        .values(progress_at=utcnow(), **values)
    ).rowcount
    if not changed:
        raise Superseded


def _action(row: csvpush.CsvRow, rental: Row) -> str:
    if rental.state not in ACTIVE_RENTAL_STATES:
        return RowAction.ENDED
    if rental.sync_state in (SyncState.UNMAPPED, SyncState.DISABLED):
        return RowAction.UNMAPPED
    if row.overlocked is not None and row.overlocked != rental.overlocked:
        return RowAction.OVERLOCK if row.overlocked else RowAction.UNLOCK
    return RowAction.IN_SYNC if rental.sync_state == SyncState.IN_SYNC else RowAction.PUSH


def preview(upload_id: int) -> dict:
    """What confirming does, counted per site and in all: {"totals": {action: n}, "sites": [{id, title, counts}]}."""
    counts = db.session.execute(
        select(Rental.site_id, UploadRow.action, func.count()).join(Rental, Rental.id == UploadRow.rental_id)
        .where(UploadRow.upload_id == upload_id).group_by(Rental.site_id, UploadRow.action)
    ).all()
    titles = dict(db.session.execute(select(Site.id, Site.title).where(Site.id.in_({c[0] for c in counts}))).all())
    sites: dict[int, dict] = {}
    totals = dict.fromkeys(RowAction, 0)
    for site_id, action, n in counts:
        site = sites.setdefault(site_id, {"id": site_id, "title": titles.get(site_id, str(site_id)),
                                          "counts": dict.fromkeys(RowAction, 0)})
        site["counts"][action] += n
        totals[action] += n
    return {"totals": {str(k): v for k, v in totals.items()},
            "sites": [{**s, "counts": {str(k): v for k, v in s["counts"].items()}}
                      for s in sorted(sites.values(), key=lambda s: s["title"])]}


def _rentals_by_sg_id(sg_ids: list[str]) -> dict[str, Row]:
    """The few columns a check needs, as plain rows (no ORM object per row)."""
    columns = (Rental.id, Rental.sg_id, Rental.customer_id, Rental.site_id, Rental.state, Rental.overlocked,
               Rental.sync_state)
    found: dict[str, Row] = {}
    if db.session.connection().dialect.name == "postgresql":  # one array parameter: one short statement a chunk
        ids = bindparam("ids", sg_ids, type_=ARRAY(String))
        found.update((r.sg_id, r) for r in db.session.execute(select(*columns).where(Rental.sg_id == any_(ids))))
        return found
    for start in range(0, len(sg_ids), LOOKUP_CHUNK):
        chunk = sg_ids[start:start + LOOKUP_CHUNK]
        found.update((r.sg_id, r) for r in db.session.execute(select(*columns).where(Rental.sg_id.in_(chunk))))
    return found


def _lock_errors(rows: list[csvpush.CsvRow], rentals: dict[str, Row]) -> list[csvpush.CsvError]:
    """A lock change on an ended rental cannot be pushed: refuse it like the Suspend button does."""
    return [csvpush.CsvError(row.line, f"rental {row.rental_id} is {rental.state}; only a reserved or occupied "
                                       f"rental can be suspended or unsuspended, so leave "
                                       f"{csvpush.OVERLOCKED_COLUMN} empty or as it is.")
            for row in rows
            if (rental := rentals.get(row.rental_id)) is not None and rental.state not in ACTIVE_RENTAL_STATES
            and row.overlocked is not None and row.overlocked != rental.overlocked]


def _about_rows(data: bytes) -> int:
    """The file's lines less the header: the progress bar's end until the check has counted the rows."""
    lines = data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)
    return max(0, lines - 1)


def _clean(filename: str) -> str:
    name = UNSAFE_FILENAME.sub("", re.split(r"[\\/]", filename or "")[-1]).strip()
    return (name or "upload.csv")[:FILENAME_CHARS]
