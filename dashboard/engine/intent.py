"""Durable intent: "PTI owes this customer a push", recorded in the database first, then hinted to RQ.

Every trigger (webhook, import, staff action, CSV, sweep, site push) ends here. `mark_dirty` bumps the account's
generation in the caller's transaction (`mark_site_dirty` does the same for many customers of a site at once);
`request_reconcile` enqueues the job after the commit. Redis can lose the hint (restart, eviction): the `relay`
finds accounts whose generation is ahead of what was pushed and enqueues them again.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC

import redis
from rq.job import Job, JobStatus
from sqlalchemy import case, func, or_, select, update
from sqlalchemy.orm.attributes import flag_modified

from ..extensions import db, insert_or_skip
from ..jobqueue import BULK, DEFAULT, RECONCILE, RECONCILE_BATCH, URGENT, beating, enqueue, get_redis
from ..models import ACTIVE_RENTAL_STATES, Customer, PtiAccount, Rental, Site, SyncState, utcnow
from .site_guard import GO, OUTAGE_REASONS, PROBE, site_readiness

log = logging.getLogger(__name__)

# "<queue> <RQ job id> <unix time>": the job that holds the account (queued for it, or a batch that has not reached
# it yet). The relay takes the key over when that job is no longer alive, so the TTL is only a backstop.
PENDING_KEY = "pti-sync:pending:{account_id}"
PENDING_TTL_S = 3600
HOLDER_KEY = "pti-sync:holder:{job_id}"  # a running batch's heartbeat
HOLDER_TTL_S = 10  # a killed batch's accounts are free this long after its last beat: the next relay re-drives them
HOLDER_BEAT_S = 3
ENQUEUE_GRACE_S = 5  # a younger key may name a job being enqueued this very moment
RELAY_BATCH = 2000  # owed accounts the relay looks at per pass
RELAY_BUDGET_S = 5.0  # a relay run's further passes start within this long (the relay runs every 15 s)
RELAY_CURSOR_KEY = "pti-sync:relay:cursor"  # the last account id the relay looked at, when it stopped at its limit
CLAIM_CHUNK = 1000  # pending keys per claim script call
WAITING_JOB_STATUSES = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED})
# Accounts per bulk job: a site's whole push, up to a big site's. A batch runs as many threads as its site has PTI
# slots, so one batch keeps its site's PTI busy; two batches of a site only share those slots, while the jobs of
# other sites wait for a worker behind them (with batches of 200, four workers pushed two sites one after the other,
# and twelve pushed ten sites three at a time). One batch a site, and a push of many sites runs them all at once.
# Tried on 2026-12-01 and slower then, when a customer cost 70 ms of a batch's CPU and one process could not keep its
# site's slots busy; at 15-20 ms, 0.64x the wall (docs/benchmarks.md, 2026-12-07, "one batch a site").
BATCH_SIZE = 2000
BATCH_JOB_TIMEOUT_S = 3600  # a batch of BATCH_SIZE accounts at a slow site
BATCH_JOB_PREFIX = "reconcile-batch-"  # the id of every reconcile_batch job begins so (push_site, the relay)
# A site with at least this many non-urgent accounts to re-drive in one relay pass (an outage's backlog, a killed
# batch) gets them as bulk batches, which read the site's PTI once, instead of one job and one look-up each.
RELAY_BATCH_MIN = 20
MARK_CHUNK = 500  # customer ids per IN (...) list
# A rental already pushed (or waiting, or failed) waits for the new push; unmapped and disabled ones keep their state.
REPUSHABLE_STATES = (SyncState.IN_SYNC, SyncState.FAILED, SyncState.PENDING)

# Per key: set it to the new hint when it still holds the expected value ('' = no key); returns the indexes set.
_CLAIM = """
local ttl = tonumber(ARGV[1])
local won = {}
for i, key in ipairs(KEYS) do
  local expected, new = ARGV[2 * i], ARGV[2 * i + 1]
  local current = redis.call('GET', key)
  if (expected == '' and not current) or current == expected then
    redis.call('SET', key, new, 'EX', ttl)
    won[#won + 1] = i
  end
end
return won
"""
# Delete the pending key only when it names this job.
_RELEASE = """
local current = redis.call('GET', KEYS[1])
if current and string.match(current, '^%S+ (%S+)') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def account_for(customer: Customer | int, site_id: int) -> PtiAccount:
    """The customer's PTI account at the site, created (pending, generation 1) when it is the first time."""
    customer_id = customer if isinstance(customer, int) else customer.id
    # Lock the account row before any of the caller's pending rental changes are flushed: every writer takes the
    # account first, then its rentals, so two writers of one customer queue up instead of deadlocking.
    # The first time, the row does not exist and FOR UPDATE locks nothing: two first marks of one customer would
    # both insert. INSERT ... ON CONFLICT DO NOTHING lets one of them create it (the other waits for that insert's
    # transaction, then inserts nothing), and both then lock the one row.
    lock = select(PtiAccount).where(PtiAccount.customer_id == customer_id, PtiAccount.site_id == site_id) \
        .with_for_update()
    with db.session.no_autoflush:
        account = db.session.scalar(lock)
        if account is None:
            _insert_missing(site_id, [customer_id])
            account = db.session.scalar(lock)
    return account


def lock_accounts(owners: Iterable[tuple[int, int]]) -> None:
    """Lock the existing accounts of these (customer id, site id) pairs, in id order, before the caller changes any
    of their rentals: the order every writer of a customer keeps (the account, then its rentals). A handler that
    wrote the rental first deadlocked on PostgreSQL with a push finishing the same customer during a bulk push."""
    pairs = sorted({(c, s) for c, s in owners if c is not None and s is not None})
    if not pairs:
        return
    with db.session.no_autoflush:
        db.session.execute(select(PtiAccount.id).where(or_(*(
            (PtiAccount.customer_id == customer_id) & (PtiAccount.site_id == site_id)
            for customer_id, site_id in pairs))).order_by(PtiAccount.id).with_for_update())


def _insert_missing(site_id: int, customer_ids: list[int]) -> None:
    """Create the accounts (pending, generation 1) of these customers at the site that no one has created yet."""
    db.session.execute(
        insert_or_skip(PtiAccount, "customer_id", "site_id"),
        [{"customer_id": c, "site_id": site_id, "generation": 1, "synced_generation": 0,
          "state": SyncState.PENDING, "urgent": False, "attempts": 0, "owed_since": utcnow()} for c in customer_ids],
    )


def _rentals_pending(site_id: int, customer_ids: list[int]) -> None:
    """The active rentals of these customers at the site show as pending until their push."""
    db.session.execute(
        Rental.__table__.update()
        .where(Rental.site_id == site_id, Rental.customer_id.in_(customer_ids), Rental.state.in_(ACTIVE_RENTAL_STATES),
               Rental.sync_state.in_(REPUSHABLE_STATES))
        .values(sync_state=SyncState.PENDING)
    )


def owed_since(columns):
    """A mark's `owed_since`: unchanged while an older change is still owed, else now (SET clauses read the row as it
    was, so this sees the generations before the mark)."""
    return case((columns.generation > columns.synced_generation, func.coalesce(columns.owed_since, utcnow())),
                else_=utcnow())


def mark_dirty(customer: Customer | int, site_id: int, *, urgent: bool = False) -> PtiAccount:
    """Record in the caller's transaction that this customer's PTI access at the site must be pushed again."""
    account = account_for(customer, site_id)
    # Computed by the database, like mark_site_dirty: on SQLite FOR UPDATE locks nothing, and a value computed here
    # from a stale read could go back below what a reconcile has meanwhile recorded as pushed (a lost update).
    account.generation = case((PtiAccount.generation > PtiAccount.synced_generation, PtiAccount.generation),
                              else_=PtiAccount.synced_generation) + 1
    account.owed_since = owed_since(PtiAccount.__table__.c)
    marks = {"state": SyncState.PENDING, "attempts": 0, "next_attempt_at": None}
    if urgent:  # never written otherwise: a stale False must not undo another writer's urgent mark
        marks["urgent"] = True
    for key, value in marks.items():
        setattr(account, key, value)
        # Always in the UPDATE: FOR UPDATE does not refresh an account the session had loaded before (staff's
        # requeue, a foreign-user decision), and a value equal to that stale copy would be left out, keeping what a
        # push wrote since (not urgent, its retry count, failed).
        flag_modified(account, key)
    _rentals_pending(site_id, [account.customer_id])
    return account


def mark_site_dirty(site_id: int, customer_ids: set[int]) -> list[int]:
    """`mark_dirty` for many customers of one site, in the caller's transaction; their account ids, by customer."""
    wanted = sorted(customer_ids)
    accounts = PtiAccount.__table__
    chunks = [wanted[start:start + MARK_CHUNK] for start in range(0, len(wanted), MARK_CHUNK)]
    known: set[int] = set()
    for chunk in chunks:
        known.update(db.session.scalars(select(PtiAccount.customer_id).where(
            PtiAccount.site_id == site_id, PtiAccount.customer_id.in_(chunk))))
    new = [c for c in wanted if c not in known]
    if new:  # created as account_for does (a concurrent first mark may create some first), then marked below
        _insert_missing(site_id, new)
    for chunk in chunks:
        db.session.execute(
            accounts.update()
            .where(accounts.c.site_id == site_id, accounts.c.customer_id.in_(chunk))
            .values(generation=case((accounts.c.generation > accounts.c.synced_generation, accounts.c.generation),
                                    else_=accounts.c.synced_generation) + 1,
                    owed_since=owed_since(accounts.c), state=SyncState.PENDING, attempts=0, next_attempt_at=None)
        )
        _rentals_pending(site_id, chunk)
    db.session.expire_all()  # the ORM's copies of these rows are stale now
    ids: dict[int, int] = {}
    for chunk in chunks:
        ids.update(db.session.execute(select(PtiAccount.customer_id, PtiAccount.id).where(
            PtiAccount.site_id == site_id, PtiAccount.customer_id.in_(chunk))).all())
    return [ids[c] for c in wanted]


def request_reconcile(accounts: Iterable[PtiAccount | int], *, trigger: str, bulk: bool = False,
                      hold: str | None = None, held: list[int] | None = None) -> int:
    """After the commit: enqueue one reconcile per account unless one is already queued. Returns how many.

    Urgent accounts (a lock or unlock is owed) go to the urgent queue, so no bulk push delays a payment's unlock.
    With `hold` (the id of the running job, a delivery's handler), the urgent accounts are not enqueued: their keys
    name that job, which pushes them itself right away (no second job, no wait for a free worker); their ids are
    appended to `held`. Killed before it does, the job's keys are taken over by the relay like any dead job's.
    A Redis failure is logged, not raised: the intent is already in the database and the relay will deliver it.
    Three Redis round trips however many accounts: read their hints, claim the free ones, enqueue their jobs.
    """
    wanted: list[tuple[int, bool]] = []
    for item in accounts:
        account = item if isinstance(item, PtiAccount) else db.session.get(PtiAccount, item)
        if account is not None:
            wanted.append((account.id, account.urgent))
    if not wanted:
        return 0
    try:
        conn = get_redis()
        current = conn.mget([PENDING_KEY.format(account_id=account_id) for account_id, _ in wanted])
        claims = []
        for (account_id, urgent), raw in zip(wanted, current, strict=True):
            queue = URGENT if urgent else (BULK if bulk else DEFAULT)
            if raw is None:
                claims.append((account_id, queue, None))
            elif queue == URGENT and Hint.parse(raw).queue != URGENT:
                # A queued job will read the newest intent when it runs, unless it waits in a slower queue than
                # a lock or unlock may: then an urgent job goes too (the account lock keeps them apart).
                claims.append((account_id, URGENT, raw))
        return _hint(conn, claims, trigger, hold=hold, held=held)
    except redis.RedisError as exc:
        log.warning("could not enqueue reconciles (%s): the relay will pick them up", exc.__class__.__name__)
        return 0


def request_batches(site_accounts: Iterable[list[int]], *, trigger: str) -> int:
    """After the commit: `request_reconcile` for many accounts that owe no lock or unlock (a confirmed CSV upload),
    each site's list as `reconcile_batch` jobs of BATCH_SIZE on the bulk queue; an account a job already holds is
    left to it. Returns how many were enqueued; a Redis failure is logged (the relay delivers the intent)."""
    batches = [[(account_id, None) for account_id in ids] for ids in site_accounts if ids]
    if not batches:
        return 0
    try:
        return _hint(get_redis(), [], trigger, batches=batches)
    except redis.RedisError as exc:
        log.warning("could not enqueue reconcile batches (%s): the relay will pick them up", exc.__class__.__name__)
        return 0


@dataclass(frozen=True)
class Hint:
    """What a pending key holds: the queue and the RQ job that hold the account, and since when (unix time)."""

    queue: str
    job_id: str
    since: float

    def __str__(self) -> str:
        return f"{self.queue} {self.job_id} {int(self.since)}"

    @classmethod
    def parse(cls, raw: bytes | str) -> Hint:
        text = raw.decode() if isinstance(raw, bytes) else raw
        queue, _, rest = text.partition(" ")
        job_id, _, since = rest.partition(" ")
        try:
            return cls(queue, job_id, float(since))
        except ValueError:  # not ours (a hand-set key): old enough to be checked like a lost job
            return cls(queue, job_id, 0.0)


def _hint(conn: redis.Redis, claims: list[tuple[int, str, bytes | None]], trigger: str,
          batches: list[list[tuple[int, bytes | None]]] = (), hold: str | None = None,
          held: list[int] | None = None) -> int:
    """Claim each account's pending key (when it still holds what the caller read: nothing, or a given hint), then
    enqueue a reconcile for each account claimed, under the job id its key names. `batches` (account id, expected
    key) lists of one site each go as `reconcile_batch` jobs of BATCH_SIZE on the bulk queue, every key of a batch
    naming its job (as `push_site` does). One script call per CLAIM_CHUNK accounts and one pipeline in all. Should
    the enqueue fail, the keys name jobs that do not exist: the relay sees that."""
    now = time.time()
    members = [(account_id, expected,
                Hint(queue, hold if hold and queue == URGENT else f"reconcile-{account_id}-{uuid.uuid4().hex[:16]}",
                     now))
               for account_id, queue, expected in claims]
    for site_accounts in batches:
        for start in range(0, len(site_accounts), BATCH_SIZE):
            hint = Hint(BULK, f"{BATCH_JOB_PREFIX}{uuid.uuid4().hex}", now)
            members += [(account_id, expected, hint)
                        for account_id, expected in site_accounts[start:start + BATCH_SIZE]]
    won: dict[str, tuple[Hint, list[int]]] = {}
    for start in range(0, len(members), CLAIM_CHUNK):
        chunk = members[start:start + CLAIM_CHUNK]
        args: list = [PENDING_TTL_S]
        for _, expected, hint in chunk:
            args += [expected or b"", str(hint)]
        for index in conn.eval(_CLAIM, len(chunk), *[PENDING_KEY.format(account_id=a) for a, _, _ in chunk], *args):
            account_id, _, hint = chunk[int(index) - 1]
            won.setdefault(hint.job_id, (hint, []))[1].append(account_id)
    kept: list[int] = won.pop(hold)[1] if hold and hold in won else []  # the running job pushes these itself
    if held is not None:
        held.extend(kept)
    if won:
        with conn.pipeline() as pipe:
            pipe.multi()  # the jobs, in one transaction (RQ adds its commands to it)
            for job_id, (hint, account_ids) in won.items():
                if job_id.startswith(BATCH_JOB_PREFIX):
                    enqueue(RECONCILE_BATCH, account_ids, trigger, queue=BULK, job_id=job_id,
                            job_timeout=BATCH_JOB_TIMEOUT_S, pipeline=pipe)
                else:
                    enqueue(RECONCILE, account_ids[0], trigger, queue=hint.queue, job_id=job_id, pipeline=pipe)
            pipe.execute()
    return sum(len(ids) for _, ids in won.values()) + len(kept)


def release(conn: redis.Redis, account_id: int, job_id: str | None) -> None:
    """The job has the account in hand: from now on newer intent needs a new job. Only the job the key names
    releases it (an urgent job that took over the key keeps it until it runs)."""
    key = PENDING_KEY.format(account_id=account_id)
    if job_id is None:
        conn.delete(key)
    else:
        conn.eval(_RELEASE, 1, key, job_id)


@contextmanager
def holding(conn: redis.Redis, job_id: str | None):
    """While a batch runs, a heartbeat key says its job is alive; killed, the key expires within HOLDER_TTL_S and
    the relay re-drives the accounts the batch had not reached yet."""
    if job_id is None:
        yield
        return
    key = HOLDER_KEY.format(job_id=job_id)

    def beat() -> None:
        try:
            conn.set(key, 1, ex=HOLDER_TTL_S)
        except redis.RedisError as exc:
            log.warning("batch heartbeat failed (%s)", exc.__class__.__name__)

    beat()
    try:
        with beating(HOLDER_BEAT_S, beat, "batch-heartbeat"):
            yield
    finally:
        try:
            conn.delete(key)
        except redis.RedisError:
            pass  # it expires by itself


def push_site(site: Site, trigger: str) -> int:
    """Mark every customer of the site with an active rental or a PTI user for a push, in bulk batches.

    The same intent as `mark_dirty` for each customer, written with a few set-based statements: one round trip
    per customer made marking 783 customers take longer than pushing them while the workers were busy.
    Each account's pending key names its batch's job, written in one transaction with the jobs themselves."""
    customer_ids = set(db.session.scalars(
        select(Rental.customer_id).where(Rental.site_id == site.id, Rental.state.in_(ACTIVE_RENTAL_STATES))
    )) | set(db.session.scalars(
        select(PtiAccount.customer_id).where(PtiAccount.site_id == site.id, PtiAccount.pti_user_id.is_not(None))
    ))
    ids = mark_site_dirty(site.id, customer_ids)
    db.session.commit()
    now = time.time()
    try:
        with get_redis().pipeline() as pipe:
            pipe.multi()  # one transaction: the keys and the jobs they name (RQ adds its commands to it)
            for start in range(0, len(ids), BATCH_SIZE):
                batch = ids[start:start + BATCH_SIZE]
                hint = Hint(BULK, f"{BATCH_JOB_PREFIX}{uuid.uuid4().hex}", now)
                for account_id in batch:  # the batch holds these accounts: the relay must not enqueue them one by one
                    pipe.set(PENDING_KEY.format(account_id=account_id), str(hint), nx=True, ex=PENDING_TTL_S)
                enqueue(RECONCILE_BATCH, batch, trigger, queue=BULK, job_id=hint.job_id,
                        job_timeout=BATCH_JOB_TIMEOUT_S, pipeline=pipe)
            pipe.execute()
    except redis.RedisError as exc:
        log.warning("could not enqueue the push of %s (%s: %s): the relay will pick it up", site.code,
                    exc.__class__.__name__, exc)
    return len(ids)


def relay(limit: int = RELAY_BATCH, budget_s: float = RELAY_BUDGET_S) -> int:
    """Re-enqueue accounts still owed a push whose retry time has come and that no live job holds; how many.

    Set-based and bounded: passes over at most `limit` owed accounts each (a cursor in Redis walks past them to the
    next ones, so a big backlog held by queued jobs never hides an account further on), each a fixed number of Redis
    round trips: read their pending keys, look up the jobs those name and their heartbeats, claim and enqueue. A key
    naming a job that is gone, finished, failed, or started without a heartbeat (a killed batch) is taken over.
    Passes go on while they find a full `limit` and `budget_s` lasts: 10,000 accounts a Redis restart left owed are
    re-driven in one run, not one 15-second period per 2,000."""
    conn = get_redis()
    started = time.monotonic()
    enqueued, full = _relay_pass(conn, limit)
    while full and time.monotonic() - started < budget_s:
        more, full = _relay_pass(conn, limit)
        enqueued += more
    return enqueued


def _relay_pass(conn: redis.Redis, limit: int) -> tuple[int, bool]:
    """One pass of the relay: how many it enqueued, and whether it stopped at its limit (more may be owed)."""
    due = (PtiAccount.generation > PtiAccount.synced_generation, PtiAccount.state != SyncState.FAILED,
           or_(PtiAccount.next_attempt_at.is_(None), PtiAccount.next_attempt_at <= utcnow()))
    # Paced per site: nothing goes to a site PTI paused or whose breaker is open, one account probes a half-open
    # site, and its backlog follows once the probe got through (the site guard then asks for a relay at once).
    readiness, recovered = site_readiness(conn, list(db.session.scalars(select(Site.id))))
    if recovered:  # PTI is back: the outage's retries wait no longer for their backoff
        db.session.execute(update(PtiAccount).where(
            PtiAccount.site_id.in_(recovered), PtiAccount.state == SyncState.PENDING,
            PtiAccount.last_error.in_(OUTAGE_REASONS), PtiAccount.next_attempt_at.is_not(None))
            .values(next_attempt_at=None).execution_options(synchronize_session=False))
        db.session.commit()
    held_back = [site_id for site_id, state in readiness.items() if state != GO]
    owed = (*due, PtiAccount.site_id.not_in(held_back)) if held_back else due
    cursor = int(conn.get(RELAY_CURSOR_KEY) or 0)

    def ids_from(*where, count: int) -> list:
        return db.session.execute(select(PtiAccount.id, PtiAccount.urgent, PtiAccount.site_id).where(*owed, *where)
                                  .order_by(PtiAccount.id).limit(count)).all()

    rows = ids_from(PtiAccount.id > cursor, count=limit)
    if len(rows) < limit and cursor:
        rows += ids_from(PtiAccount.id <= cursor, count=limit - len(rows))
    full = len(rows) == limit
    conn.set(RELAY_CURSOR_KEY, rows[-1].id if full else 0)
    for site_id in (site_id for site_id, state in readiness.items() if state == PROBE):
        rows += db.session.execute(select(PtiAccount.id, PtiAccount.urgent, PtiAccount.site_id)
                                   .where(*due, PtiAccount.site_id == site_id)
                                   .order_by(PtiAccount.urgent.desc(), PtiAccount.id).limit(1)).all()
    db.session.rollback()  # ids only: no snapshot or lock kept while Redis answers
    if not rows:
        return 0, False

    now = time.time()
    held = {row.id: raw for row, raw in zip(rows, conn.mget([PENDING_KEY.format(account_id=r.id) for r in rows]),
                                             strict=True) if raw is not None}
    found, alive, scheduled = _holders(conn, {Hint.parse(raw).job_id for raw in held.values()}, now)
    claims = []
    for row in rows:
        raw = held.get(row.id)
        if raw is None:
            claims.append((row.id, URGENT if row.urgent else DEFAULT, None))
            continue
        hint = Hint.parse(raw)
        if row.urgent and hint.queue != URGENT:
            claims.append((row.id, URGENT, raw))  # as request_reconcile does
        elif row.site_id in recovered and hint.job_id in scheduled:  # a retry still waiting out its backoff: now
            claims.append((row.id, URGENT if row.urgent else DEFAULT, raw))
        elif hint.job_id not in alive and (hint.job_id in found or now - hint.since >= ENQUEUE_GRACE_S):
            claims.append((row.id, URGENT if row.urgent else (BULK if hint.queue == BULK else DEFAULT), raw))
    site_of = {row.id: row.site_id for row in rows}
    backlog: dict[int, list[tuple[int, bytes | None]]] = {}
    for account_id, queue, raw in claims:
        if queue != URGENT:
            backlog.setdefault(site_of[account_id], []).append((account_id, raw))
    batches = [site_accounts for site_accounts in backlog.values() if len(site_accounts) >= RELAY_BATCH_MIN]
    batched = {account_id for site_accounts in batches for account_id, _ in site_accounts}
    enqueued = _hint(conn, [claim for claim in claims if claim[0] not in batched], "relay", batches=batches)
    taken_over = sum(1 for _, _, raw in claims if raw is not None)
    if taken_over:
        log.info("relay: %d accounts were held by jobs no longer alive (killed, lost or failed)", taken_over)
    return enqueued, full


def _holders(conn: redis.Redis, job_ids: set[str], now: float) -> tuple[set[str], set[str], set[str]]:
    """Which of these jobs RQ still has, which are alive (queued, scheduled, deferred, or running with a heartbeat),
    and which of those are scheduled (a retry waiting out its backoff). Two round trips. (A job RQ does not have may
    be being enqueued: the caller gives it a grace.)"""
    if not job_ids:
        return set(), set(), set()
    ordered = sorted(job_ids)
    jobs = Job.fetch_many(ordered, connection=conn)
    beats = conn.mget([HOLDER_KEY.format(job_id=job_id) for job_id in ordered])
    found = {job_id for job_id, job in zip(ordered, jobs, strict=True) if job is not None}
    alive, scheduled = set(), set()
    for job_id, job, beat in zip(ordered, jobs, beats, strict=True):
        if beat is not None:
            alive.add(job_id)
            continue
        status = job.get_status(refresh=False) if job is not None else None
        if status in WAITING_JOB_STATUSES:
            alive.add(job_id)
            if status == JobStatus.SCHEDULED:
                scheduled.add(job_id)
        elif status == JobStatus.STARTED and job.started_at is not None:
            started = job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=UTC)
            if now - started.timestamp() < HOLDER_TTL_S:
                alive.add(job_id)  # its heartbeat is about to start
    return found, alive, scheduled
