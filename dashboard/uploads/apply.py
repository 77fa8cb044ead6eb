"""Apply a bulk-push CSV (behaviour 10): all or nothing, in one transaction, recorded as an Upload and audited.

Every row is checked first (dashboard/csvpush.py, then against the mirror); one error and nothing changes.
A valid file updates the mirror, marks each affected customer's PTI account dirty, commits, then enqueues the
reconciles on the bulk queue (urgent when a row changes a lock), with the trigger "csv:<upload id>".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import Row, func, select, update

from ..audit import record
from ..engine.intent import mark_dirty, request_reconcile
from ..extensions import db
from ..models import ACTIVE_RENTAL_STATES, Rental, StaffUser, SyncState, Upload, UploadRow, UploadStatus
from . import parse as csvpush

LOOKUP_CHUNK = 500  # ids per IN (...) query: well under every database's parameter limit
FILENAME_CHARS = 255
UNSAFE_FILENAME = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Progress:
    """Where the rentals of an applied upload stand now, read from their sync state."""

    total: int
    in_sync: int
    pending: int  # pending or syncing
    failed: int
    not_synced: int  # not mapped, or not active: nothing to push

    @property
    def done(self) -> bool:
        return self.pending == 0


def apply_csv(data: bytes, filename: str, actor: StaffUser | str) -> Upload:
    """Check the file; apply it only if every row is valid. Returns the recorded Upload (applied or rejected)."""
    rentals: dict[str, Row] = {}

    def against_the_mirror(rows: list[csvpush.CsvRow]) -> list[csvpush.CsvError]:
        rentals.update(_rentals_by_sg_id([row.rental_id for row in rows]))
        return [*csvpush.unknown_rental_errors(rows, set(rentals)), *_lock_errors(rows, rentals)]

    parsed = csvpush.parse(data, check=against_the_mirror)
    upload = Upload(filename=_clean(filename), uploaded_by_id=actor.id if isinstance(actor, StaffUser) else None,
                    uploaded_by=actor.email if isinstance(actor, StaffUser) else actor,
                    row_count=parsed.row_count, error_count=parsed.error_count,
                    status=UploadStatus.APPLIED if parsed.ok else UploadStatus.REJECTED,
                    errors=[{"line": e.line, "message": e.message} for e in parsed.errors] or None)
    db.session.add(upload)
    db.session.flush()
    if not parsed.ok:
        record("csv upload", actor=actor, target_type="upload", target_id=upload.id, outcome="rejected",
               filename=upload.filename, rows=parsed.row_count, errors=parsed.error_count)
        db.session.commit()
        return upload

    owed: dict[tuple[int, int], bool] = {}  # (customer, site) → a lock or unlock is owed
    synced, locks = [], []
    for row in parsed.rows:
        rental = rentals[row.rental_id]
        lock_changes = row.overlocked is not None and row.overlocked != rental.overlocked
        if row.pti_synced is not None:  # Storeganise semantics: editing pti_synced asks for a push
            synced.append({"id": rental.id, "pti_synced": row.pti_synced})
        if lock_changes:  # a manual suspend or unsuspend (behaviour 6)
            locks.append({"id": rental.id, "overlocked": row.overlocked})
        key = (rental.customer_id, rental.site_id)
        owed[key] = owed.get(key, False) or lock_changes
    # Bulk updates by primary key, so no Rental object sits in the session: mark_dirty's update stays cheap.
    for changes in (synced, locks):
        if changes:
            db.session.execute(update(Rental), changes)
    with db.session.no_autoflush:  # the accounts are written in one batch at the commit, not one by one
        accounts = [mark_dirty(c, s, urgent=urgent) for (c, s), urgent in owed.items()]
    db.session.execute(UploadRow.__table__.insert(), [
        {"upload_id": upload.id, "line": row.line, "rental_id": rentals[row.rental_id].id,
         "pti_synced": row.pti_synced, "overlocked": row.overlocked} for row in parsed.rows])
    record("csv upload", actor=actor, target_type="upload", target_id=upload.id, outcome="applied",
           filename=upload.filename, rows=len(parsed.rows), accounts=len(accounts),
           urgent=sum(1 for urgent in owed.values() if urgent))
    db.session.commit()
    request_reconcile(accounts, trigger=f"csv:{upload.id}", bulk=True)
    return upload


def progress(upload: Upload) -> Progress:
    counts = dict(db.session.execute(
        select(Rental.sync_state, func.count()).join(UploadRow, UploadRow.rental_id == Rental.id)
        .where(UploadRow.upload_id == upload.id).group_by(Rental.sync_state)
    ).all())
    return Progress(
        total=sum(counts.values()),
        in_sync=counts.get(SyncState.IN_SYNC, 0),
        pending=counts.get(SyncState.PENDING, 0) + counts.get(SyncState.SYNCING, 0),
        failed=counts.get(SyncState.FAILED, 0),
        not_synced=counts.get(SyncState.UNMAPPED, 0) + counts.get(SyncState.DISABLED, 0),
    )


def _rentals_by_sg_id(sg_ids: list[str]) -> dict[str, Row]:
    """The few columns a push needs, as plain rows (a 20,000-row file must not fill the session with objects)."""
    columns = (Rental.id, Rental.sg_id, Rental.customer_id, Rental.site_id, Rental.state, Rental.overlocked)
    found: dict[str, Row] = {}
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


def _clean(filename: str) -> str:
    name = UNSAFE_FILENAME.sub("", re.split(r"[\\/]", filename or "")[-1]).strip()
    return (name or "upload.csv")[:FILENAME_CHARS]
