"""Confirm a checked bulk-push CSV (behaviour 10): mark exactly the previewed rentals for a push, all or nothing.

`confirm` (in the request) moves the upload from ready to applying in one guarded UPDATE, so a double click or two
people confirming apply it once, and enqueues `apply_upload`. The job does the marking with set-based statements
over the upload's stored rows, in one transaction that also flips the upload to applied and writes the audit entry:
killed half-way, it leaves nothing applied and the upload applying (shown as stopped, with Retry, once its job is
gone). A second run finds the upload applied already and does nothing. After the commit, the accounts owing a lock
or unlock are enqueued on the urgent queue, the others in batches per site on the bulk queue, with the trigger
"csv:<upload id>".
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, select, update

from ..audit import record
from ..engine.intent import mark_site_dirty, request_batches, request_reconcile
from ..extensions import db
from ..models import (
    ACTIVE_RENTAL_STATES,
    PtiAccount,
    Rental,
    RowAction,
    StaffUser,
    SyncState,
    Upload,
    UploadRow,
    UploadStatus,
    utcnow,
)
from .check import start_job

MARK_CHUNK = 500  # customer ids per IN (...) when flagging urgent accounts
LOCK_ACTIONS = (RowAction.OVERLOCK, RowAction.UNLOCK)


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


def confirm(upload: Upload, actor: StaffUser) -> bool:
    """Ready → applying, once: True for the call that moved it (and enqueued the marking), False for any other."""
    now = utcnow()
    moved = db.session.execute(
        update(Upload).where(Upload.id == upload.id, Upload.status == UploadStatus.READY)
        .values(status=UploadStatus.APPLYING, confirmed_by=actor.email, confirmed_at=now, progress_at=now)
    ).rowcount
    db.session.commit()
    db.session.refresh(upload)
    if moved:
        start_job(upload)
    return bool(moved)


def apply_upload(upload_id: int, attempt: int | None = None) -> str:
    """Mark the confirmed upload's rentals for a push in one transaction; nothing when it is not applying."""
    try:
        return _apply(upload_id)
    except Exception as exc:
        db.session.rollback()
        db.session.execute(update(Upload).where(Upload.id == upload_id, Upload.status == UploadStatus.APPLYING)
                           .values(problem=f"The marking stopped ({exc.__class__.__name__}); nothing was applied."))
        db.session.commit()
        raise


def _apply(upload_id: int) -> str:
    flipped = db.session.execute(
        update(Upload).where(Upload.id == upload_id, Upload.status == UploadStatus.APPLYING)
        .values(status=UploadStatus.APPLIED, progress_at=utcnow(), problem=None)
    ).rowcount
    if not flipped:  # applied already (a second run), or never confirmed
        db.session.rollback()
        return f"upload {upload_id}: nothing to apply"
    upload = db.session.get(Upload, upload_id)
    rows = UploadRow.__table__
    rentals = Rental.__table__
    mine = rows.c.upload_id == upload_id
    pairs = select(rentals.c.site_id, rentals.c.customer_id).join(rows, rows.c.rental_id == rentals.c.id).where(mine)
    # The lock changes still owed (the mirror may have moved since the preview), read before they are written.
    urgent = set(db.session.execute(pairs.where(
        rows.c.action.in_(LOCK_ACTIONS), rows.c.overlocked.is_not(None), rows.c.overlocked != rentals.c.overlocked,
        rentals.c.state.in_(ACTIVE_RENTAL_STATES))).all())
    owed = set(db.session.execute(pairs).all())
    # Storeganise semantics: editing pti_synced asks for a push; the file's value is kept on the mirror.
    db.session.execute(rentals.update().where(rentals.c.id.in_(
        select(rows.c.rental_id).where(mine, rows.c.pti_synced.is_not(None)))).values(
        pti_synced=select(rows.c.pti_synced).where(mine, rows.c.rental_id == rentals.c.id).scalar_subquery()))
    filed = select(rows.c.overlocked).where(mine, rows.c.rental_id == rentals.c.id).scalar_subquery()
    # A lock the file changes is owed to Storeganise until it accepts it (the push's write-back, or the relay).
    db.session.execute(rentals.update().where(
        rentals.c.state.in_(ACTIVE_RENTAL_STATES),
        rentals.c.id.in_(select(rows.c.rental_id).where(mine, rows.c.action.in_(LOCK_ACTIONS),
                                                        rows.c.overlocked.is_not(None)))).values(
        overlock_owed_at=case((rentals.c.overlocked != filed, utcnow()), else_=rentals.c.overlock_owed_at),
        overlocked=filed))
    by_site: dict[int, set[int]] = {}
    for site_id, customer_id in owed:
        by_site.setdefault(site_id, set()).add(customer_id)
    accounts = {site_id: mark_site_dirty(site_id, customers) for site_id, customers in sorted(by_site.items())}
    urgent_ids = _flag_urgent(urgent)
    marked = sum(len(ids) for ids in accounts.values())
    record("csv confirm", actor=_staff(upload.confirmed_by), target_type="upload", target_id=upload_id,
           outcome="applied", filename=upload.filename, accounts=marked, urgent=len(urgent_ids),
           rows=db.session.scalar(select(func.count()).select_from(rows).where(mine)))
    db.session.commit()
    trigger = f"csv:{upload_id}"
    request_reconcile(urgent_ids, trigger=trigger, bulk=True)
    request_batches([[a for a in ids if a not in urgent_ids] for ids in accounts.values()], trigger=trigger)
    return f"upload {upload_id}: {marked} accounts marked, {len(urgent_ids)} urgent"


def _flag_urgent(pairs: set[tuple[int, int]]) -> set[int]:
    """The accounts that owe a lock or unlock go to the urgent queue (never written False: see mark_dirty)."""
    by_site: dict[int, list[int]] = {}
    for site_id, customer_id in pairs:
        by_site.setdefault(site_id, []).append(customer_id)
    ids: set[int] = set()
    for site_id, customers in by_site.items():
        for start in range(0, len(customers), MARK_CHUNK):
            where = (PtiAccount.site_id == site_id, PtiAccount.customer_id.in_(customers[start:start + MARK_CHUNK]))
            db.session.execute(PtiAccount.__table__.update().where(*where).values(urgent=True))
            ids.update(db.session.scalars(select(PtiAccount.id).where(*where)))
    return ids


def _staff(email: str | None) -> StaffUser | str:
    """The confirming staff user for the audit entry (by e-mail: the job runs outside the request)."""
    found = db.session.scalar(select(StaffUser).where(StaffUser.email == email)) if email else None
    return found or email or "system"


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
