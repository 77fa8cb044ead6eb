"""The database: a mirror of the parts of Storeganise that matter to PTI, plus sync state, staff and audit.

Storeganise ids are kept as `sg_id`; our own integer ids are for joins. Per customer and site a `PtiAccount`
holds the desired PTI identity (access code, PTI user id), a generation counter and the sync status.
"""

from __future__ import annotations

import enum
import hashlib
from datetime import UTC, datetime

from flask_login import UserMixin
from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    func,
    select,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from .extensions import db


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def to_ms(moment: datetime | None) -> datetime | None:
    """Milliseconds, as Storeganise stores timestamps: what we keep must equal what comes back (no echo loop)."""
    return None if moment is None else moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class Role(enum.StrEnum):
    ADMIN = "admin"  # sites, users, roles
    MANAGER = "manager"  # reads everything
    STAFF = "staff"  # acts on rentals and customers
    SUPPORT = "support"  # CSV uploads and acts on rentals and customers


class SyncState(enum.StrEnum):
    IN_SYNC = "in_sync"
    PENDING = "pending"
    SYNCING = "syncing"
    FAILED = "failed"
    UNMAPPED = "unmapped"  # the unit has no (valid) PTI Unit Name: never pushed
    DISABLED = "disabled"  # the rental is not active, or its site is not synced

    @property
    def label(self) -> str:
        return {
            "in_sync": "In sync", "pending": "Pending", "syncing": "Syncing", "failed": "Failed",
            "unmapped": "Not mapped", "disabled": "Not synced",
        }[self.value]


ACTIVE_RENTAL_STATES = ("reserved", "occupied")


class Site(db.Model):
    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    sg_id: Mapped[str] = mapped_column(String(64), unique=True)
    code: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    pti_base_url: Mapped[str | None] = mapped_column(String(500))
    pti_site_code: Mapped[str | None] = mapped_column(String(64))
    # Site key, username and password, encrypted together and bound to this site (dashboard/crypto.py).
    pti_credentials: Mapped[str | None] = mapped_column(Text)
    default_access_level: Mapped[int | None]
    default_zone: Mapped[int | None]
    code_length: Mapped[int] = mapped_column(default=6)
    sync_enabled: Mapped[bool] = mapped_column(default=True)
    # The site's local time zone (IANA, e.g. Europe/London), set by an admin on the site's page; the pages show the
    # site's records in it. None: the business's TIME_ZONE.
    time_zone: Mapped[str | None] = mapped_column(String(64))
    # PTI's own lists at this site, [{"id", "name"}], read before the first push and refreshed by the drift sweep.
    pti_access_levels: Mapped[list | None] = mapped_column(JSON)
    pti_time_zones: Mapped[list | None] = mapped_column(JSON)
    pti_lists_read_at: Mapped[datetime | None]
    last_import_at: Mapped[datetime | None]
    last_sweep_at: Mapped[datetime | None]
    # What the last drift sweep found (engine/sweep.py, SweepReport.record): shown on the site's page.
    drift_report: Mapped[dict | None] = mapped_column(JSON)

    units: Mapped[list[Unit]] = relationship(back_populates="site")

    def __repr__(self) -> str:  # never shows credentials
        return f"<Site {self.code}>"


class Unit(db.Model):
    __tablename__ = "units"

    id: Mapped[int] = mapped_column(primary_key=True)
    sg_id: Mapped[str] = mapped_column(String(64), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(32), default="available")
    pti_unit_name: Mapped[str | None] = mapped_column(String(100))  # None: not synced (see pti_switched_off)
    pti_switched_off: Mapped[bool] = mapped_column(default=False)  # staff set the PTI Unit Name to NONE

    site: Mapped[Site] = relationship(back_populates="units")


class Customer(db.Model):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    sg_id: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    overdue: Mapped[bool] = mapped_column(default=False)
    # Storeganise custom fields (domain.md): overrides set by staff, results written back by us.
    access_level_override: Mapped[int | None]
    zone_override: Mapped[int | None]
    pti_access_code: Mapped[int | None] = mapped_column(BigInteger)
    pti_user_id: Mapped[str | None] = mapped_column(String(64))
    # Staff set the overrides above in the dashboard and Storeganise does not hold them yet: set with the change,
    # cleared only once Storeganise accepted them (writeback.write_back_overrides); the relay re-drives it.
    overrides_owed: Mapped[bool] = mapped_column(default=False, server_default=false(), index=True)
    # Storeganise refused them (not "unreachable": a 4xx): how often in a row, and not retried before this time.
    overrides_refusals: Mapped[int] = mapped_column(default=0, server_default="0")
    overrides_retry_at: Mapped[datetime | None]

    # In id order (the order Storeganise's rentals were first mirrored in): without it PostgreSQL returns them in the
    # order their rows were last written, and pages and pushes would see a customer's rentals in a shifting order.
    rentals: Mapped[list[Rental]] = relationship(back_populates="customer", order_by="Rental.id")

    @property
    def name(self) -> str:
        return f"{self.first_name} {self.last_name}".strip() or self.email


class Rental(db.Model):
    __tablename__ = "rentals"
    __table_args__ = (
        # The Overview's and the sites' health (views/overview.site_health): one grouped pass over this index alone,
        # never the table's rows.
        Index("ix_rentals_site_health", "site_id", "sync_state", "state", "overlocked", "pti_synced"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sg_id: Mapped[str] = mapped_column(String(64), unique=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"), index=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    state: Mapped[str] = mapped_column(String(32))
    overdue: Mapped[bool] = mapped_column(default=False)
    overlocked: Mapped[bool] = mapped_column(default=False)  # pti_overlocked
    # Since when the mirror's `overlocked` is owed to Storeganise (a flip of the overdue flag, a suspend by staff or a
    # file): set in the change's own transaction, cleared once Storeganise accepted a PUT of that value. Until then a
    # copy of the rental carrying the other value predates our write, and the relay writes what a killed job did not
    # (engine/writeback.py, `write_owed_overlocks`). NULL: Storeganise holds what the mirror holds.
    overlock_owed_at: Mapped[datetime | None] = mapped_column(index=True)
    pti_synced: Mapped[datetime | None]  # time of the last successful push
    sg_updated: Mapped[datetime | None]  # Storeganise's `updated`
    sync_state: Mapped[str] = mapped_column(String(16), default=SyncState.PENDING, index=True)
    last_error: Mapped[str | None] = mapped_column(String(64))  # a reason key of dashboard/sync/errors.py

    site: Mapped[Site] = relationship()
    unit: Mapped[Unit] = relationship()
    customer: Mapped[Customer] = relationship(back_populates="rentals")

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_RENTAL_STATES


class PtiAccount(db.Model):
    """A customer's PTI identity at one site, and where its sync stands.

    `generation` counts changes of intent; a reconcile records the generation it pushed in `synced_generation`,
    so a stale job can never mark newer intent as done, and anything with generation > synced_generation is
    still owed to PTI (the relay re-enqueues it if Redis lost the job). `write_back_owed` does the same for the
    push's results owed to Storeganise.
    """

    __tablename__ = "pti_accounts"
    __table_args__ = (
        UniqueConstraint("customer_id", "site_id"),
        UniqueConstraint("site_id", "access_code", name="uq_pti_accounts_site_code"),
        Index("ix_pti_accounts_owed", "generation", "synced_generation"),
        Index("ix_pti_accounts_state_error", "state", "last_error"),  # the Failures page's groups and retries
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("sites.id"), index=True)
    access_code: Mapped[int | None] = mapped_column(BigInteger)
    pti_user_id: Mapped[str | None] = mapped_column(String(64))
    generation: Mapped[int] = mapped_column(default=1)
    synced_generation: Mapped[int] = mapped_column(default=0)
    state: Mapped[str] = mapped_column(String(16), default=SyncState.PENDING, index=True)
    urgent: Mapped[bool] = mapped_column(default=False)  # a lock or unlock is owed: jump the bulk queue
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(64))
    last_error_detail: Mapped[str | None] = mapped_column(Text)
    last_attempt_at: Mapped[datetime | None]
    last_synced_at: Mapped[datetime | None]
    # When the oldest change still owed to PTI was marked (None once PTI has it): how far sync is behind
    # (engine/lag.py). A mark on an account already owed keeps the older time.
    owed_since: Mapped[datetime | None] = mapped_column(index=True)
    # PTI users without our marker that matched the customer when the account parked as foreign_pti_user, as staff
    # compare them on the customer's page: [{"id", "first_name", "last_name", "email", "code" (masked, •••456),
    # "access_level", "time_zone", "units", "matched_by"}]. Never a full access code. Cleared on the next push.
    foreign_pti_users: Mapped[list | None] = mapped_column(JSON)
    # What PTI holds for the account as its last successful push left it (engine/pti_reads.PushRecord):
    # {"user": {"id", "email", "first_name", "last_name", "access_code", "access_level", "time_zone"},
    #  "units": {name: locked}}. A lock or unlock is planned from it and costs one PTI call; None (never pushed,
    # or the last push failed or left a unit in doubt) means the next push reads PTI.
    pushed: Mapped[dict | None] = mapped_column(JSON)
    # Staff's decision about them: adopt this PTI user (our marker is written onto it), or create a separate one.
    adopt_pti_user_id: Mapped[str | None] = mapped_column(String(64))
    separate_from_foreign: Mapped[bool] = mapped_column(default=False, server_default=false())
    # A push's results are owed to Storeganise (pti_* custom fields): set in the push's own transaction, cleared
    # only once Storeganise accepted them (writeback.write_back); the relay re-drives it when the job was lost.
    write_back_owed: Mapped[bool] = mapped_column(default=False, server_default=false(), index=True)
    # Storeganise refused them (not "unreachable": a 4xx): how often in a row, and not retried before this time.
    write_back_refusals: Mapped[int] = mapped_column(default=0, server_default="0")
    write_back_retry_at: Mapped[datetime | None]

    customer: Mapped[Customer] = relationship()
    site: Mapped[Site] = relationship()


class StaffUser(UserMixin, db.Model):
    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(16), default=Role.STAFF)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Moves on when the account is disabled: the sessions opened before stay ended once it is enabled again.
    session_generation: Mapped[int] = mapped_column(default=0, server_default="0")

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def get_id(self) -> str:
        """What a session keeps: the id and a digest of the password hash and the session generation, so a new
        password or a disabling ends the sessions opened before (staff.session_user)."""
        digest = hashlib.sha256(f"{self.session_generation}:{self.password_hash}".encode()).hexdigest()[:16]
        return f"{self.id}:{digest}"

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive users
        return self.active

    def has_role(self, *roles: str) -> bool:
        return self.role in roles


class AuditEntry(db.Model):
    """Append-only: who did what to which rental, customer or site, when, and the outcome."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    actor: Mapped[str] = mapped_column(String(320))  # e-mail, or "system", "storeganise", "csv"
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str | None] = mapped_column(String(32))
    target_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(32), default="ok")
    detail: Mapped[dict | None] = mapped_column(JSON)


class WebhookDelivery(db.Model):
    """Each Storeganise delivery, by its id: a replay finds its row and does nothing."""

    __tablename__ = "webhook_deliveries"
    # The oldest delivery still queued (the stale banner on every page, the Work page): a seek, not a scan.
    __table_args__ = (Index("ix_webhook_deliveries_status_received", "status", "received_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")  # queued, processed, ignored, failed
    payload: Mapped[dict] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    # The rental the event is about (its unitRentalId, a transfer's new rental), for the rental page's journey; and
    # when the worker finished handling it (the mirror updated, the push asked for).
    rental_sg_id: Mapped[str | None] = mapped_column(String(64), index=True)
    handled_at: Mapped[datetime | None]


class SyncAttempt(db.Model):
    """The journal: one row per reconcile attempt of a PTI account."""

    __tablename__ = "sync_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("pti_accounts.id"), index=True)
    trigger: Mapped[str] = mapped_column(String(64))  # event type, "staff:<email>", "csv:<upload>", "sweep"...
    rq_job_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    duration_ms: Mapped[int | None]
    generation: Mapped[int]
    operations: Mapped[list | None] = mapped_column(JSON)  # op names and targets; never access codes
    outcome: Mapped[str] = mapped_column(String(16))  # ok, noop, retry, failed
    reason: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    # Event to gate: for a push PTI took (outcome ok), the time from when the oldest change it carried was marked
    # owed (the account's owed_since) to PTI's confirmation. None for every other attempt. Fed to `SyncTrend`.
    gate_ms: Mapped[int | None] = mapped_column(BigInteger)

    account: Mapped[PtiAccount] = relationship()


class SyncTrend(db.Model):
    """The Trends page's rollup of the journal: per site (0: every site) and hour or day, how many attempts ended
    each way and a histogram of their event-to-gate latencies (dashboard/trends.py feeds it past a cursor).

    The page reads only these rows (at most 30 per chart), never the journal; they outlive the journal's pruning.
    """

    __tablename__ = "sync_trends"

    site_id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)  # 0: every site together
    span: Mapped[str] = mapped_column(String(8), primary_key=True)  # "hour" or "day"
    start: Mapped[datetime] = mapped_column(primary_key=True)  # the hour's or the day's first moment (UTC)
    ok: Mapped[int] = mapped_column(default=0)  # pushes PTI took
    noop: Mapped[int] = mapped_column(default=0)  # pushes that found PTI already right
    retried: Mapped[int] = mapped_column(default=0)  # attempts that failed and were retried later
    failed: Mapped[int] = mapped_column(default=0)  # attempts that parked their customer as failed
    # Event-to-gate latencies, counted per fixed log-scale bucket (trends.BUCKETS): {"bucket index": count}.
    gate_counts: Mapped[dict | None] = mapped_column(JSON)


class OpenProblem(db.Model):
    """A problem that stands now, shown on its record's page and raised once as a task inside Storeganise.

    `cause` says what makes two reports the same ("unit:<sg id>:<reason>", "value:rental:<sg id>:<field>"...). The
    row exists while the problem does: fixed, it is deleted, so one that comes back later is reported again. A row
    not yet reported (`reported_at` empty) is owed to Storeganise: the relay re-drives it until a task exists.
    """

    __tablename__ = "problems"

    id: Mapped[int] = mapped_column(primary_key=True)
    cause: Mapped[str] = mapped_column(String(200), unique=True)
    reason: Mapped[str] = mapped_column(String(64))  # a key of dashboard/sync/errors.py
    entity: Mapped[str] = mapped_column(String(16))  # site, unit, customer, rental or account: whose page shows it
    record_sg_id: Mapped[str] = mapped_column(String(64), index=True)  # that record's Storeganise id
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"), index=True)
    account_id: Mapped[int | None] = mapped_column(ForeignKey("pti_accounts.id"), index=True)
    target_type: Mapped[str] = mapped_column(String(16))  # the Storeganise task's target: unit, user, addon, site
    target_id: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(300))  # how staff recognise it ("unit A12 at Northgate")
    detail: Mapped[str | None] = mapped_column(Text)  # e.g. the field and the value that cannot be read
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    reported_at: Mapped[datetime | None] = mapped_column(index=True)
    sg_task_id: Mapped[str | None] = mapped_column(String(64))  # the Storeganise task job


class ProductSetting(db.Model):
    """A fact the product learned about the business, by name (e.g. the PTI add-on's id, from webhook bodies)."""

    __tablename__ = "product_settings"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(200))


class SyncCursor(db.Model):
    """How far an incremental pull from Storeganise has read (Storeganise's own clock), by name."""

    __tablename__ = "sync_cursors"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    at: Mapped[datetime]


class UploadStatus(enum.StrEnum):
    CHECKING = "checking"  # stored; a job reads and checks every row and builds the preview
    READY = "ready"  # every row valid: the preview waits for someone to confirm it
    REJECTED = "rejected"  # at least one error: nothing was changed
    APPLYING = "applying"  # confirmed: a job marks the previewed rentals for a push, all in one transaction
    APPLIED = "applied"  # the rentals were marked for a push

    @property
    def working(self) -> bool:
        """A job owes this upload its next step (and writes `progress_at` while it works)."""
        return self in (UploadStatus.CHECKING, UploadStatus.APPLYING)

    @property
    def label(self) -> str:
        return {"checking": "Being checked", "ready": "Ready to confirm", "rejected": "Rejected",
                "applying": "Being applied", "applied": "Applied"}[self.value]


class RowAction(enum.StrEnum):
    """What confirming an upload does for one of its rows' rentals (the preview counts them per site)."""

    PUSH = "push"  # active, at a mapped unit, not in sync: pushed
    IN_SYNC = "in_sync"  # active, mapped and already in sync: pushed again, expected to change nothing
    OVERLOCK = "overlock"  # the file suspends it (pti_overlocked true): an urgent push locks the unit
    UNLOCK = "unlock"  # the file unsuspends it: an urgent push opens the unit again
    ENDED = "ended"  # not reserved or occupied: nothing to open for it
    UNMAPPED = "unmapped"  # at a unit without a PTI Unit Name, or a site not synced: nothing goes to PTI

    @property
    def label(self) -> str:
        return {"push": "To push", "in_sync": "Already in sync", "overlock": "To overlock", "unlock": "To unlock",
                "ended": "Ended", "unmapped": "At unmapped units"}[self.value]


class Upload(db.Model):
    """A bulk-push CSV (behaviour 10): who sent it, where its check or its marking stands, its preview or errors.

    The file itself is kept in the database (`data`, read by the check job only, then dropped): the database is the
    store every worker shares, wherever it runs; a file under one machine's instance folder is not.
    """

    __tablename__ = "uploads"

    id: Mapped[int] = mapped_column(primary_key=True)
    filename: Mapped[str] = mapped_column(String(255))
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"))
    uploaded_by: Mapped[str] = mapped_column(String(320))
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    row_count: Mapped[int] = mapped_column(default=0)  # while checking: the file's lines less the header (about)
    status: Mapped[str] = mapped_column(String(16))
    error_count: Mapped[int] = mapped_column(default=0)
    errors: Mapped[list | None] = mapped_column(JSON)  # [{"line": int | None, "message": str}], the first few hundred
    data: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)  # the file, until it is checked
    checked: Mapped[int] = mapped_column(default=0, server_default="0")  # rows the check job has read so far
    attempt: Mapped[int] = mapped_column(default=1, server_default="1")  # a retry starts a new one; an old job stops
    progress_at: Mapped[datetime | None]  # the working job's last sign of life
    problem: Mapped[str | None] = mapped_column(String(255))  # why the job stopped, when it failed
    preview: Mapped[dict | None] = mapped_column(JSON)  # {"totals": {action: n}, "sites": [{"id", "title", "counts"}]}
    confirmed_by: Mapped[str | None] = mapped_column(String(320))
    confirmed_at: Mapped[datetime | None]


class UploadRow(db.Model):
    """One row of a checked upload: the rental, what the file sets, and what confirming does for it."""

    __tablename__ = "upload_rows"
    # Confirm's set-based updates look a rental's row up by both: without it, each of 100,000 rentals scanned them all.
    __table_args__ = (Index("ix_upload_rows_upload_rental", "upload_id", "rental_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    upload_id: Mapped[int] = mapped_column(ForeignKey("uploads.id"), index=True)
    line: Mapped[int]
    rental_id: Mapped[int] = mapped_column(ForeignKey("rentals.id"), index=True)
    pti_synced: Mapped[datetime | None]  # the value the file set, if any
    overlocked: Mapped[bool | None]  # the value the file set, if any
    action: Mapped[str | None] = mapped_column(String(16))  # a RowAction; none on rows older than the preview

    rental: Mapped[Rental] = relationship()


def count(stmt) -> int:
    """Number of rows a select would return."""
    return db.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
