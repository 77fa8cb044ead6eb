"""Activity: the sync journal (every push attempt, newest first) and the audit log beneath it.

Staff narrow the journal by site, customer, trigger, outcome and UTC days, page through it 50 at a time, and take
the same rows away as CSV. Each list costs one COUNT and one page query however long the journal grows; the export
reads it in chunks, so a million rows never sit in memory. Filters the page cannot read are said on the page.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from flask import Blueprint, Response, request, stream_with_context
from sqlalchemy import or_, select, tuple_
from sqlalchemy.orm import joinedload

from ..extensions import db
from ..mirror.events import HANDLERS
from ..models import AuditEntry, Customer, PtiAccount, Site, SyncAttempt, count, utcnow
from ..security import EVERYONE, roles_required
from ..uploads.parse import escape_cell
from . import NUMBER, page_or_block

bp = Blueprint("activity", __name__, url_prefix="/activity")

TEMPLATE = "activity/index.html"
RESULTS_TARGET = "activity-results"  # the element htmx swaps on a filter or a page turn: both lists
PAGE_SIZE = 50  # journal rows a page
AUDIT_PAGE_SIZE = 50
EXPORT_CHUNK = 1000  # journal rows read per query while the CSV streams
CUSTOMER_CHARS = 100  # what the customer filter keeps of what was typed
UNREADABLE = 422  # filters the page cannot read; base.html's htmx-config swaps a 422 in, so the message shows
FILTERS = ("site", "customer", "trigger", "outcome", "from", "to")  # the query arguments the journal reads

# What an attempt ended as (the journal's outcome column). "running" is its value until it ends; the engine records
# an attempt once it ended (engine/reconcile.py), so that filter normally finds nothing: offered for completeness.
OUTCOMES = {"ok": "OK", "noop": "No change needed", "retry": "Will retry", "failed": "Failed", "running": "Running"}

# Who asked for a push, as the journal's trigger is written: "staff:<email>" (dashboard/actions.py), "csv:<upload>"
# (uploads/apply.py), a Storeganise event's type (mirror/events.py), "relay" and "bulk" (jobs/reconcile.py), "sweep"
# (engine/sweep.py), "import" or "pull" (mirror/importer.py). The trigger column has no index: these filter anyway.
TRIGGER_KINDS = {
    "staff": ("Staff action", SyncAttempt.trigger.startswith("staff:", autoescape=True)),
    "csv": ("CSV upload", SyncAttempt.trigger.startswith("csv:", autoescape=True)),
    "webhook": ("Webhook event", SyncAttempt.trigger.in_(sorted(HANDLERS))),
    "relay": ("Relay", SyncAttempt.trigger == "relay"),
    "bulk": ("Bulk push", SyncAttempt.trigger == "bulk"),
    "sweep": ("Sweep", SyncAttempt.trigger == "sweep"),
    "import": ("Import or pull", SyncAttempt.trigger.in_(("import", "pull"))),
}

NEWEST_FIRST = (SyncAttempt.started_at.desc(), SyncAttempt.id.desc())  # the id breaks ties of one instant
EXPORT_COLUMNS = ("started_at", "site_code", "customer_sg_id", "customer_name", "trigger", "operations", "outcome",
                  "reason", "duration_ms")
OPERATIONS_SEPARATOR = "; "


@dataclass
class Filters:
    """The journal's filters as read from the query string, with what could not be read in words."""

    raw: dict[str, str]  # as typed, shown back in the form
    site: Site | None = None
    customer: str = ""
    trigger: str = ""
    outcome: str = ""
    since: date | None = None  # the "from" day, UTC
    until: date | None = None  # the "to" day, UTC, included
    problems: list[str] = field(default_factory=list)

    @property
    def given(self) -> dict[str, str]:
        """The filters set, as query arguments: what the export link carries."""
        return {name: value for name, value in self.raw.items() if value}


def read_filters(args) -> Filters:
    """The journal's filters from `args`; a value that cannot be read is noted in `problems`, never raised."""
    raw = {name: args.get(name, "").strip() for name in FILTERS}
    raw["customer"] = raw["customer"][:CUSTOMER_CHARS]
    f = Filters(raw=raw, customer=raw["customer"])
    if raw["site"]:
        if not NUMBER.fullmatch(raw["site"]):
            f.problems.append(f"“{raw['site']}” is not a site: choose one from the list.")
        else:
            f.site = db.session.get(Site, int(raw["site"]))
            if f.site is None:
                f.problems.append(f"There is no site number {raw['site']}: choose one from the list.")
    if raw["trigger"] and raw["trigger"] not in TRIGGER_KINDS:
        f.problems.append(f"“{raw['trigger']}” is not a kind of trigger: choose one of "
                          f"{', '.join(label for label, _ in TRIGGER_KINDS.values())}.")
    else:
        f.trigger = raw["trigger"]
    if raw["outcome"] and raw["outcome"] not in OUTCOMES:
        f.problems.append(f"“{raw['outcome']}” is not an outcome: choose one of {', '.join(OUTCOMES.values())}.")
    else:
        f.outcome = raw["outcome"]
    f.since = _day(raw["from"], "from", f.problems)
    f.until = _day(raw["to"], "to", f.problems)
    if f.since and f.until and f.since > f.until:
        f.problems.append(f"The “from” day ({f.since.isoformat()}) is after the “to” day ({f.until.isoformat()}): "
                          "swap them.")
    return f


def _day(raw: str, name: str, problems: list[str]) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        problems.append(f"The “{name}” day “{raw}” is not a date: give it as YYYY-MM-DD, e.g. 2025-03-31.")
        return None


def _page_arg(name: str, problems: list[str]) -> int:
    raw = request.args.get(name, "1").strip() or "1"
    if not NUMBER.fullmatch(raw) or int(raw) < 1:
        problems.append(f"The page must be a number of 1 or more, not “{raw}”.")
        return 1
    return int(raw)


def _customers(text: str):
    """Our customer id when `text` is a number (the customer page links so), else names, e-mail or Storeganise id."""
    if NUMBER.fullmatch(text):
        return select(Customer.id).where(Customer.id == int(text))
    like = f"%{text}%"
    return select(Customer.id).where(or_(
        Customer.email.ilike(like), Customer.first_name.ilike(like), Customer.last_name.ilike(like),
        (Customer.first_name + " " + Customer.last_name).ilike(like), Customer.sg_id == text))


def journal_query(f: Filters):
    """The journal's rows the filters keep, unordered. Site and customer narrow by account_id, and the days by
    started_at: both indexed. Trigger and outcome have no index of their own and filter the rows those leave."""
    stmt = select(SyncAttempt)
    if f.site is not None or f.customer:
        accounts = select(PtiAccount.id)
        if f.site is not None:
            accounts = accounts.where(PtiAccount.site_id == f.site.id)
        if f.customer:
            accounts = accounts.where(PtiAccount.customer_id.in_(_customers(f.customer)))
        stmt = stmt.where(SyncAttempt.account_id.in_(accounts))
    if f.trigger:
        stmt = stmt.where(TRIGGER_KINDS[f.trigger][1])
    if f.outcome:
        stmt = stmt.where(SyncAttempt.outcome == f.outcome)
    if f.since:
        stmt = stmt.where(SyncAttempt.started_at >= datetime.combine(f.since, time()))
    if f.until and f.until < date.max:
        stmt = stmt.where(SyncAttempt.started_at < datetime.combine(f.until + timedelta(days=1), time()))
    return stmt


def _journal(f: Filters, page: int) -> dict:
    if f.problems:
        return dict(attempts=[], total=0, pages=1)
    stmt = journal_query(f)
    total = count(stmt)
    attempts = db.session.scalars(
        stmt.options(joinedload(SyncAttempt.account).joinedload(PtiAccount.customer),
                     joinedload(SyncAttempt.account).joinedload(PtiAccount.site))
        .order_by(*NEWEST_FIRST).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
    ).all()
    return dict(attempts=attempts, total=total, pages=max(1, -(-total // PAGE_SIZE)))


def _audit(page: int) -> dict:
    total = count(select(AuditEntry))
    audit = db.session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())
                               .limit(AUDIT_PAGE_SIZE).offset((page - 1) * AUDIT_PAGE_SIZE)).all()
    return dict(audit=audit, audit_total=total, audit_pages=max(1, -(-total // AUDIT_PAGE_SIZE)))


def _page(f: Filters):
    """The page (or, for htmx, both lists) with whatever could not be read said where it applies."""
    audit_problems: list[str] = []
    page = _page_arg("page", f.problems)
    audit_page = _page_arg("audit_page", audit_problems)
    context = dict(
        filters=f, problems=f.problems, audit_problems=audit_problems, page=page, audit_page=audit_page,
        sites=db.session.scalars(select(Site).order_by(Site.title)).all(), outcomes=OUTCOMES,
        trigger_kinds={key: label for key, (label, _) in TRIGGER_KINDS.items()},
        **_journal(f, page), **_audit(audit_page))
    body = page_or_block(TEMPLATE, "results", RESULTS_TARGET, **context)
    return body, UNREADABLE if f.problems or audit_problems else 200


@bp.route("/")
@roles_required(*EVERYONE)
def index():
    return _page(read_filters(request.args))


@bp.route("/export.csv")
@roles_required(*EVERYONE)
def export():
    """The filtered journal as CSV for a spreadsheet, newest first, streamed as it is read. No access code is in
    the journal, so none is in the file; cells that could run as a formula are escaped."""
    f = read_filters(request.args)
    if f.problems:
        return _page(f)
    name = f"sync-journal-{utcnow():%Y-%m-%d-%H%M}.csv"
    return Response(stream_with_context(_csv(journal_query(f))), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _csv(stmt) -> Iterator[str]:
    """The rows of `stmt`, EXPORT_CHUNK at a time by keyset on (started_at, id): each chunk is one short query, and
    rows are plain tuples, so nothing accumulates in the session however many there are."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    yield "\ufeff" + out.getvalue()  # the mark makes spreadsheet programs read UTF-8
    rows = (stmt.join(SyncAttempt.account).join(PtiAccount.site).join(PtiAccount.customer)
            .with_only_columns(SyncAttempt.started_at, SyncAttempt.id, Site.code, Customer.sg_id,
                               Customer.first_name, Customer.last_name, Customer.email, SyncAttempt.trigger,
                               SyncAttempt.operations, SyncAttempt.outcome, SyncAttempt.reason,
                               SyncAttempt.duration_ms)
            .order_by(*NEWEST_FIRST).limit(EXPORT_CHUNK))
    after = None
    while True:
        # The plain `started_at <=` lets the started_at index start each chunk where the last one stopped; the row
        # comparison alone would walk past every row exported already.
        chunk = db.session.execute(rows if after is None else rows.where(
            SyncAttempt.started_at <= after[0], tuple_(SyncAttempt.started_at, SyncAttempt.id) < after)).all()
        if not chunk:
            return
        out.seek(0)
        out.truncate()
        for (started, _id, site, sg_id, first, last, email, trigger, operations, outcome, reason,
             duration_ms) in chunk:
            writer.writerow([escape_cell(value) for value in (
                started.isoformat(timespec="seconds") + "Z", site, sg_id, f"{first} {last}".strip() or email,
                trigger, OPERATIONS_SEPARATOR.join(str(op) for op in operations or []), outcome, reason,
                duration_ms)])
        yield out.getvalue()
        after = tuple(chunk[-1][:2])
        db.session.rollback()  # nothing was written: a slow download holds no transaction or connection between chunks
