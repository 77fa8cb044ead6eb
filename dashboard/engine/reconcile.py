"""Reconcile one customer's PTI access at one site: read the mirror and PTI, plan with the core, apply, record.

The adapter around the pure core (dashboard/sync): it builds the snapshots from the database, looks the
customer up in PTI, asks `plan` for the operations, applies them through the PTI client under the site's
guard (concurrency limit, Retry-After, circuit breaker), and records the outcome per account and rental.
At most one reconcile per account runs at a time (a Redis lock); the account's generation tells whether newer
intent arrived meanwhile.
"""

from __future__ import annotations

import logging
import random
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from flask import current_app
from redis.exceptions import LockError
from rq import get_current_job
from sqlalchemy import and_, bindparam, case, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.attributes import set_committed_value

from ..clients import connection_problem, pti_client, pti_connection
from ..extensions import commit_keeping_loaded, db
from ..jobqueue import DEFAULT, RECONCILE, REPORT_PROBLEMS, URGENT, WRITE_BACK, beating, get_queue, get_redis, hint
from ..models import ACTIVE_RENTAL_STATES, Customer, PtiAccount, Rental, Site, SyncAttempt, SyncState, to_ms, utcnow
from ..pti import PtiClient, PtiError, PtiPermanentError, PtiRetryableError
from ..sync import (
    ActualAccess,
    CreateUser,
    CustomerSnapshot,
    Decision,
    DesiredAccess,
    Identity,
    LockUnit,
    NoFreeCode,
    Operation,
    Outcome,
    Plan,
    PtiUnit,
    PtiUser,
    RemoveUser,
    RentalSnapshot,
    RentalStatus,
    RentUnit,
    SiteSettings,
    UnlockUnit,
    UpdateUser,
    VacateUnit,
    derive_desired,
    generate_code,
    mask,
    plan,
    resolve,
)
from . import problems, pti_lists
from .finishes import Pushed
from .pti_reads import BatchReads, LiveReads, PushRecord, SiteListing, push_record, touch
from .site_guard import SiteGuard

log = logging.getLogger(__name__)

MAX_CALL_ATTEMPTS = 4  # tries of one PTI call inside an attempt (timeouts, 5xx, short 429s)
CALL_BACKOFF_BASE_S = 0.1
CALL_BACKOFF_CAP_S = 2.0
MAX_INLINE_WAIT_S = 5.0  # a longer Retry-After or breaker pause ends the attempt; the job is rescheduled
MAX_ATTEMPTS = 5  # attempts of a whole reconcile before the account is parked as failed
ATTEMPT_BACKOFF_BASE_S = 5.0
ATTEMPT_BACKOFF_CAP_S = 300.0
# The account lock lives LOCK_TTL_S and is kept alive every LOCK_BEAT_S by a thread while the push runs (and checked
# before every PTI call): a job that was killed (or froze) lets it lapse within LOCK_TTL_S, so the relay's job gets
# the account within two relay periods, not after a long time-out during which every job for it waits and comes back.
LOCK_TTL_S = 15
LOCK_BEAT_S = 3
LOCK_WAIT_S = 30
TRIGGER_CHARS = 64  # the journal's trigger column
LOOKED_UP_DRAWS = 3  # codes drawn and looked up one by one before a push reads every code of its site
TOUCHED_UNKNOWN = 2**62  # when an account was last pushed could not be read: read it live
# What a plan from a batch's listing reports that only a live read can confirm (another customer of the batch may
# have moved in since the listing was read).
LISTING_DOUBTS = {"unit_not_found", "unit_rented_to_other"}

# Problems the core reports for the customer as a whole: no rental can be pushed until they are fixed.
ACCOUNT_REASONS = {"no_access_level", "no_zone", "no_access_code"}
UNIT_STATUS_REASONS = {RentalStatus.UNIT_UNMAPPED: "unit_unmapped", RentalStatus.INVALID_UNIT_NAME: "invalid_unit_name"}


class Retry(Exception):
    """This attempt ends without harm; try again later (after `retry_after` seconds when PTI said so)."""

    def __init__(self, reason: str, retry_after: float | None = None, counts: bool = True,
                 detail: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retry_after, self.counts, self.detail = reason, retry_after, counts, detail


class Park(Exception):
    """A person must act: the account is parked as failed with this reason until its intent changes.

    `foreign` is what staff compare on the customer's page for a foreign_pti_user conflict (see `foreign_users`)."""

    def __init__(self, reason: str, detail: str | None = None, foreign: list[dict] | None = None) -> None:
        super().__init__(reason)
        self.reason, self.detail, self.foreign = reason, detail, foreign


@dataclass
class Result:
    outcome: str  # ok, noop, retry, failed, busy
    reason: str | None = None
    operations: list[str] = field(default_factory=list)
    retry_in: float | None = None
    handed: bool = False  # the push's finish was handed to a batch's finishing thread, with the account's lock


def describe(op: Operation) -> str:
    """The journal's words for an operation: units and fields, never an access code."""
    match op:
        case CreateUser():
            return "create user"
        case UpdateUser():
            return "update user (" + ", ".join(name.replace("_", " ") for name, _ in op.changes) + ")"
        case RemoveUser():
            return "remove user"
        case RentUnit():
            return f"rent {op.unit_name}"
        case VacateUnit():
            return f"vacate {op.unit_name}"
        case LockUnit():
            return f"lock {op.unit_name}"
        case UnlockUnit():
            return f"unlock {op.unit_name}"
    return type(op).__name__


def site_guard(site: Site, urgent: bool = False) -> SiteGuard:
    return SiteGuard(get_redis(), site.id, limit=current_app.config["PTI_SITE_CONCURRENCY"], urgent=urgent)


class Caller:
    """Runs PTI calls under the site guard, retrying retryable failures a few times with capped backoff.

    With the account's `lock`, each call first extends it (back to its full time-out); a lock this job no longer
    holds (expired, taken by another job) or cannot confirm (Redis not answering) ends the attempt before the call,
    so no PTI write ever happens outside the lock."""

    def __init__(self, client: PtiClient, guard: SiteGuard, sleep=time.sleep, lock=None) -> None:
        self.client, self.guard, self.sleep, self.lock = client, guard, sleep, lock
        self.calls = 0

    def keep_lock(self) -> None:
        if self.lock is None:
            return
        try:
            self.lock.reacquire()
        except (LockError, redis.RedisError) as exc:
            raise Retry("lock_lost", detail=f"the account's lock could not be extended ({exc.__class__.__name__})"
                        ) from exc

    def __call__(self, operation: str, fn, *args, **kwargs):
        for attempt in range(1, MAX_CALL_ATTEMPTS + 1):
            self.keep_lock()
            self.calls += 1
            try:
                return self.guard.call(operation, fn, *args, **kwargs)
            except PtiRetryableError as exc:
                if exc.uncertain and operation == "create_user":
                    raise  # create_user() looks the user up before creating again
                wait = backoff(attempt, CALL_BACKOFF_BASE_S, CALL_BACKOFF_CAP_S, exc.retry_after)
                if attempt == MAX_CALL_ATTEMPTS or wait > MAX_INLINE_WAIT_S:
                    raise Retry(exc.reason, exc.retry_after, counts=exc.reason != "circuit_open") from exc
                self.sleep(wait)
        raise AssertionError("unreachable")


def backoff(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Capped exponential backoff with full jitter, never shorter than PTI's Retry-After."""
    wait = random.uniform(0, min(cap, base * 2 ** (attempt - 1)))
    return max(wait, retry_after or 0.0)


# --- reading the mirror ---------------------------------------------------------------------------------------


def snapshot(account: PtiAccount, rentals: list[Rental] | None = None) -> tuple[list[Rental], DesiredAccess]:
    """The account's rentals (read unless given: the same push's, after it chose a code) and the access they
    want."""
    site, customer = account.site, account.customer
    if rentals is None:
        rentals = db.session.scalars(
            select(Rental).where(Rental.customer_id == customer.id, Rental.site_id == site.id)
            .options(joinedload(Rental.unit))
        ).all()
    desired = derive_desired(
        SiteSettings(site.sg_id, site.default_access_level, site.default_zone, site.code_length),
        CustomerSnapshot(customer.sg_id, customer.email, customer.first_name, customer.last_name,
                         account.access_code, account.pti_user_id, customer.access_level_override,
                         customer.zone_override),
        [RentalSnapshot(r.sg_id, r.unit.pti_unit_name, r.state, r.overlocked, r.unit.pti_switched_off)
         for r in rentals],
    )
    return list(rentals), desired


def choose_code(account: PtiAccount, exclude: set[int] = frozenset()) -> int:
    """A new access code for the account, unique at its site; stored (committed) before any PTI call uses it.

    The customer's code at another site is reused when free here, so one customer keeps one code. Otherwise a code
    is drawn and the site asked whether it holds it: a site's codes are few beside the code space (a thousand of
    some nine hundred thousand 6-digit codes), so one look at one code nearly always settles it, and a push does
    not read every code of its site (a thousand rows a customer, a million for a site's first push). After a few
    taken draws (a crowded code space) the site's codes are read once and the draw made against them; NoFreeCode
    when the site's code length has no free code left. The site's unique index on its codes is the last word: two
    pushes drawing the same code at once, the second's commit fails and its push is tried again.
    """
    length = account.site.code_length
    tried = set(exclude)
    preferred = account.customer.pti_access_code
    if _reusable(preferred, length, tried):
        if not codes_held([account.site_id], [preferred]):
            return preferred
        tried.add(preferred)
    for _ in range(LOOKED_UP_DRAWS):
        code = generate_code(length, tried)
        if not codes_held([account.site_id], [code]):
            return code
        tried.add(code)
    return generate_code(length, tried | codes_held([account.site_id]))


def _reusable(preferred: int | None, length: int, taken: set[int]) -> bool:
    """Whether the customer's code from another site may be theirs here too, as far as `taken` tells: it fits the
    site's code length and is not among the codes taken (or tried)."""
    return bool(preferred) and preferred not in taken and len(str(preferred)) == length


def give_codes(account_ids: list[int]) -> int:
    """Choose and store the access codes of a batch's accounts that need one (a site's first push: every customer
    new to PTI) before their pushes run, with a few statements for the whole batch: the accounts with no code, their
    rentals, the codes their site holds, one UPDATE and one commit. Each push then finds its code stored and does not
    look one up, store it and commit on its own. The same choice as `choose_code` (the customer's code at another site
    when free here, else a fresh draw), made only where a push would make it (the site syncs and has its PTI
    connection, the customer wants a PTI user) and stored only where the account still has no code (a push elsewhere
    may have chosen one meanwhile). Returns how many codes it chose. Should the site's unique index refuse one (a
    push drew the same code at the same moment), none is stored and each push chooses its own, as before."""
    accounts = _accounts_site_and_customer(PtiAccount.id.in_(account_ids), PtiAccount.access_code.is_(None),
                                           Site.sync_enabled)  # in id order: the order rows are locked in
    sites = {account.site_id: account.site for account in accounts}
    sites = {site_id: site for site_id, site in sites.items() if pti_connection(site) is not None}
    accounts = [account for account in accounts if account.site_id in sites]
    if not accounts:
        db.session.rollback()
        return 0
    rentals: dict[tuple[int, int], list[Rental]] = {}
    for rental in db.session.scalars(select(Rental).where(
            Rental.customer_id.in_({account.customer_id for account in accounts}),
            Rental.site_id.in_(sites)).options(joinedload(Rental.unit))):
        rentals.setdefault((rental.customer_id, rental.site_id), []).append(rental)
    taken = {site_id: codes_held([site_id]) for site_id in sites}
    chosen: list[dict[str, int]] = []
    try:
        for account in accounts:
            _, desired = snapshot(account, rentals.get((account.customer_id, account.site_id), []))
            if not desired.needs_access_code:
                continue
            held, preferred, length = taken[account.site_id], account.customer.pti_access_code, account.site.code_length
            code = preferred if _reusable(preferred, length, held) else generate_code(length, held)
            held.add(code)
            chosen.append({"account": account.id, "code": code})
    except NoFreeCode:
        pass  # the site's code space is full: the pushes left without a code park themselves, as before
    if not chosen:
        db.session.rollback()
        return 0
    accounts = PtiAccount.__table__
    try:
        db.session.execute(update(accounts).where(accounts.c.id == bindparam("account"),
                                                  accounts.c.access_code.is_(None))
                           .values(access_code=bindparam("code")), chosen)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        log.info("a code chosen for a batch of %d accounts was taken meanwhile: each push chooses its own", len(chosen))
        return 0
    return len(chosen)


def codes_held(site_ids: list[int], codes: list[int] | None = None) -> set[int]:
    """Which of these codes accounts at these sites hold (every code they hold, without `codes`)."""
    query = select(PtiAccount.access_code).where(PtiAccount.site_id.in_(site_ids),
                                                 PtiAccount.access_code.is_not(None))
    if codes is not None:
        query = query.where(PtiAccount.access_code.in_(codes))
    return set(db.session.scalars(query))


# --- reading PTI ----------------------------------------------------------------------------------------------


def observe(reads: LiveReads | SiteListing, desired: DesiredAccess, account: PtiAccount) -> tuple[Identity,
                                                                                                ActualAccess]:
    """Look the customer up in PTI (stored id; every e-mail match and the code when needed; the user staff chose
    to adopt) and read the units that matter."""
    by_id = reads.user(account.pti_user_id) if account.pti_user_id else None
    marker = desired.customer_id
    if by_id is not None and by_id.marker == marker and (account.access_code in (None, by_id.access_code)):
        identity = Identity(Outcome.FOUND, by_id)  # known user, our code: no need for the other lookups
    else:
        email = desired.user.email if desired.user else account.customer.email
        by_email = reads.users_by_email(email) if email else []
        code = account.access_code
        by_code = reads.user_by_code(code) if code else None
        identity = resolve(marker, by_id, by_email, by_code, decision=decision(reads, account, by_email),
                           code_chosen_here=code is not None and code != account.customer.pti_access_code)
    user = identity.user
    names = set(desired.unit_names) | set(user.units if user else ())
    units: dict[str, PtiUnit] = {}
    for name in sorted(names):
        unit = reads.unit(name)
        if unit is not None:
            units[name] = unit
    holders = {u.user_id for u in units.values() if u.user_id and (user is None or u.user_id != user.id)}
    holder_markers = {}
    for holder_id in sorted(holders):
        holder = reads.user(holder_id)
        holder_markers[holder_id] = holder.marker if holder else None
    return identity, ActualAccess(user, units, {k: v for k, v in holder_markers.items() if v is not None})


def decision(reads: LiveReads | SiteListing, account: PtiAccount, by_email: list[PtiUser]) -> Decision:
    """Staff's decision about strangers matching the customer, with the user to adopt as PTI holds it now."""
    adopt_id = account.adopt_pti_user_id
    if adopt_id is None or adopt_id == account.pti_user_id:
        return Decision(separate=account.separate_from_foreign)
    adopt = next((u for u in by_email if u.id == adopt_id), None) or reads.user(adopt_id)
    return Decision(adopt=adopt, separate=account.separate_from_foreign)


def foreign_users(users: tuple[PtiUser, ...], account: PtiAccount) -> list[dict]:
    """What staff compare on the customer's page: the strangers as PTI holds them, their codes masked."""
    email = (account.customer.email or "").strip().casefold()
    return [{
        "id": u.id, "first_name": u.first_name, "last_name": u.last_name, "email": u.email,
        "code": mask(u.access_code) if u.access_code is not None else None,
        "access_level": u.access_level, "time_zone": u.time_zone, "units": list(u.units),
        "matched_by": [how for how, hit in (("e-mail", bool(email) and (u.email or "").strip().casefold() == email),
                                            ("access code", u.access_code is not None
                                             and u.access_code == account.access_code)) if hit],
    } for u in users]


def stop_on_conflict(identity: Identity, account: PtiAccount) -> None:
    """Park when staff must decide: two users of ours (merge them), or strangers matching the customer."""
    if identity.outcome is Outcome.DUPLICATE:
        raise Park("duplicate_pti_users", ", ".join(u.id for u in identity.others))
    if identity.outcome is Outcome.FOREIGN:
        ids = ", ".join(u.id for u in identity.others)
        raise Park("foreign_pti_user", f"PTI user(s) {ids} at {account.site.title}, not created by PTI Sync",
                   foreign_users(identity.others, account))


# --- applying -------------------------------------------------------------------------------------------------


def create_user(call: Caller, client: PtiClient, op: CreateUser, marker: str) -> PtiUser:
    """Create the user. After an uncertain failure (PTI may have created it before the answer was lost) the create
    is sent once more without a look-up: PTI keeps access codes unique within a site (domain.md), so had the first
    one been applied, PTI refuses the second with -5, and the user is looked up by its (stored) code. After a second
    uncertain failure the user is looked up before every further create. A -5 for a user that is not ours is a
    stranger holding the code (apply_plan draws another)."""
    for attempt in range(MAX_CALL_ATTEMPTS):
        if attempt >= 2:
            found = call("find_user_by_access_code", client.find_user_by_access_code, op.access_code)
            if found is not None and found.marker == marker:
                return found
        try:
            return call("create_user", client.apply, op)
        except PtiRetryableError:
            continue
        except PtiPermanentError as exc:
            if exc.reason != "duplicate_access_code":
                raise
            found = call("find_user_by_access_code", client.find_user_by_access_code, op.access_code)
            if found is not None and found.marker == marker:
                return found
            raise
    raise Retry("pti_unreachable")


def apply_plan(call: Caller, client: PtiClient, account: PtiAccount, ops, marker: str,
               record: PushRecord | None = None) -> tuple[list[str], dict[str, str]]:
    """Apply the operations in order. Returns what was done and the unit problems met (unit name → reason).

    A unit PTI refuses (-3, -404) fails that unit's rentals and the rest goes on; anything else stops. A plan from
    the last push's `record` also counts as a problem ("unit_not_held") a lock or unlock whose answer does not show
    the unit rented to the customer's user, locked as asked: the record was wrong, and the caller reads PTI live.
    """
    done: list[str] = []
    unit_problems: dict[str, str] = {}
    new_user_id = None
    taking = {op.unit_name for op in ops if isinstance(op, RentUnit)}
    for op in ops:
        unit = getattr(op, "unit_name", None)
        if unit in unit_problems:
            continue
        try:
            if isinstance(op, VacateUnit) and unit not in taking and not held_by(call, client, unit,
                                                                              account.pti_user_id):
                continue  # another customer's push took it meanwhile: vacating now would lock them out
            if isinstance(op, CreateUser):
                user = create_user(call, client, op, marker)
                new_user_id = user.id
                store(account, pti_user_id=user.id)  # the PTI user id is never lost to a crash later in the plan
            else:
                answer = call(op.__class__.__name__, client.apply, op, new_user_id=new_user_id)
                if isinstance(op, RemoveUser):
                    account.pti_user_id = None
                elif record is not None and not record.holds(answer, isinstance(op, LockUnit)):
                    unit_problems[unit] = "unit_not_held"
                    continue
        except PtiPermanentError as exc:
            if isinstance(op, RemoveUser) and exc.reason == "user_not_found":
                account.pti_user_id = None  # already gone (a retry after PTI applied it)
            elif unit and exc.reason in ("unit_not_found", "invalid_unit_name", "unit_rented_to_other"):
                unit_problems[unit] = exc.reason
                continue
            elif exc.reason == "duplicate_access_code":
                raise Retry("duplicate_access_code") from exc
            else:
                raise Park(exc.reason, str(exc)) from exc
        done.append(describe(op))
    return done, unit_problems


def held_by(call: Caller, client: PtiClient, unit_name: str, user_id: str | None) -> bool:
    """Whether PTI has the unit rented to this user right now: read just before a unit the customer gives up is
    vacated, because the customer moving in may have been pushed (by another job or thread) since it was read."""
    try:
        unit = call("get_unit", client.get_unit, unit_name)
    except PtiPermanentError as exc:
        if exc.reason in ("unit_not_found", "invalid_unit_name"):
            return False
        raise
    return user_id is not None and unit.user_id == user_id


# --- one attempt ------------------------------------------------------------------------------------------------


def reconcile(account_id: int, trigger: str, job_id: str | None = None,
              write_back: Callable[[int], None] | None = None, batch: BatchReads | None = None,
              finished_by: Callable[[Pushed], None] | None = None) -> Result:
    """Make PTI match Storeganise for one account; never raises for PTI trouble (it is recorded instead).

    After a push the account's write-back to Storeganise is enqueued as its own job, or handed to `write_back`
    (a bulk batch writes back in its own process instead of forking a job per account). A bulk batch passes its
    `batch` listing of the site's PTI users and units (see pti_reads), and `finished_by`: a push that ends plainly
    is handed there to be recorded with others (engine/finishes.py), the account's lock with it."""
    # Not thread-local: the heartbeat thread extends the token this thread took.
    lock = get_redis().lock(lock_key(account_id), timeout=LOCK_TTL_S, blocking_timeout=LOCK_WAIT_S,
                            thread_local=False)
    if not lock.acquire():
        _come_back(account_id, trigger)  # another job holds it for long: come back after it
        return Result("busy")
    handed = False
    try:
        last_touched = _touch(account_id, pushing=True)
        with kept_alive(lock):
            db.session.expire_all()
            account = _account_site_and_customer(account_id)
            if account is None:
                return Result("noop", "account_gone")
            result = _attempt(account, trigger, job_id, write_back, lock, batch, last_touched, finished_by)
            handed = result.handed
            return result
    finally:
        if not handed:  # else the finishing thread lets go once the push is recorded
            let_go(account_id, lock)


def let_go(account_id: int, lock) -> None:
    """The push of the account is over and recorded: stamp it and release its lock."""
    _touch(account_id)  # a listing read before now no longer speaks for this account
    try:
        lock.release()
    except Exception:  # noqa: BLE001 - an expired lock is not an error of this attempt
        log.warning("reconcile lock of account %s expired before release", account_id)


def store(account: PtiAccount, **values) -> None:
    """Make one fact of the account durable now, while its push goes on (the access code it chose, the PTI user it
    created): one UPDATE of those columns and a commit that keeps what the session has loaded
    (`commit_keeping_loaded`). Written as a statement, not through the session's unit of work, whose flush cost a
    bulk push a tenth of its CPU for these one-column changes; the account is told the values as committed."""
    accounts = PtiAccount.__table__
    db.session.execute(update(accounts).where(accounts.c.id == account.id).values(**values))
    for key, value in values.items():
        set_committed_value(account, key, value)
    commit_keeping_loaded()


def _account_site_and_customer(account_id: int) -> PtiAccount | None:
    """The account, read fresh with its site and its customer in one statement, and set as `account.site` and
    `account.customer` (the session holds loaded objects weakly: left alone, the two would be forgotten and read
    again). Read as three entities, not with joinedload, which the account would keep for every later refresh: a
    refresh FOR UPDATE over an outer join fails on PostgreSQL."""
    found = _accounts_site_and_customer(PtiAccount.id == account_id, fresh=True)
    return found[0] if found else None


def _accounts_site_and_customer(*where, fresh: bool = False) -> list[PtiAccount]:
    """The accounts matching `where`, in id order, each read with its site and customer in one statement and those
    set as `account.site` and `account.customer` (see `_account_site_and_customer`); `fresh`: what the session holds
    of them is overwritten."""
    query = (select(PtiAccount, Site, Customer).join(Site, Site.id == PtiAccount.site_id)
             .join(Customer, Customer.id == PtiAccount.customer_id).where(*where).order_by(PtiAccount.id))
    if fresh:
        query = query.execution_options(populate_existing=True)
    accounts = []
    for account, site, customer in db.session.execute(query):
        set_committed_value(account, "site", site)
        set_committed_value(account, "customer", customer)
        accounts.append(account)
    return accounts


def _touch(account_id: int, pushing: bool = False) -> int:
    """Mark the account as being pushed, or stamp it as pushed now (pti_reads.touch); the stamp it held before. A
    Redis that cannot answer means "pushed just now", so no batch trusts its listing for this account."""
    try:
        return touch(account_id, pushing) or 0
    except redis.RedisError as exc:
        log.warning("account %s could not be stamped in Redis (%s)", account_id, exc.__class__.__name__)
        return TOUCHED_UNKNOWN


@contextmanager
def kept_alive(lock):
    """Extend the account lock every LOCK_BEAT_S while the push runs, in a thread, so the lock can be short: a long
    PTI call or slot wait never lets it lapse, a dead job's lapses soon. A failed extension stops the beat; the
    check before the next PTI call then ends the attempt (lock_lost)."""
    def beat() -> bool:
        try:
            lock.reacquire()
        except (LockError, redis.RedisError) as exc:
            log.warning("account lock could not be extended (%s)", exc.__class__.__name__)
            return False
        return True

    with beating(LOCK_BEAT_S, beat, "account-lock"):
        yield


def extend_locks(locks: list) -> list[bool]:
    """Extend these account locks to LOCK_TTL_S again, in one round trip to Redis: whether each is still held. A
    Redis that cannot answer holds them all, as a failed heartbeat does (the push goes on)."""
    if not locks:
        return []
    try:
        pipe = get_redis().pipeline(transaction=False)
        for lock in locks:
            lock.lua_reacquire(keys=[lock.name], args=[lock.local.token, int(lock.timeout * 1000)], client=pipe)
        return [bool(kept) for kept in pipe.execute()]
    except redis.RedisError as exc:
        log.warning("account locks could not be extended (%s)", exc.__class__.__name__)
        return [True] * len(locks)


def lock_key(account_id: int) -> str:
    return f"pti-sync:lock:account:{account_id}"


def _come_back(account_id: int, trigger: str) -> None:
    """Re-enqueue a reconcile that found the account busy, in the queue it came from: an urgent account (a lock or
    unlock owed) never drops behind the default queue. A Redis failure leaves it to the relay (still owed)."""
    urgent = db.session.scalar(select(PtiAccount.urgent).where(PtiAccount.id == account_id))
    job = get_current_job()
    queue = URGENT if urgent else (job.origin if job is not None and job.origin else DEFAULT)
    db.session.rollback()  # the read above holds no transaction open while this job ends
    hint(RECONCILE, account_id, trigger, queue=queue)


def _attempt(account: PtiAccount, trigger: str, job_id: str | None,
             write_back: Callable[[int], None] | None = None, lock=None, batch: BatchReads | None = None,
             last_touched: int = TOUCHED_UNKNOWN, finished_by: Callable[[Pushed], None] | None = None) -> Result:
    started = time.monotonic()
    generation = account.generation
    site = account.site
    journal = SyncAttempt(account_id=account.id, trigger=trigger[:TRIGGER_CHARS], rq_job_id=job_id,
                          generation=generation, outcome="running")
    operations: list[str] = []
    try:
        rentals, desired = snapshot(account)
        if not site.sync_enabled:
            return _finish(account, journal, rentals, desired, generation, [], {}, started, outcome="noop",
                           disabled=True)
        connection = pti_connection(site)
        if connection is None:
            raise Park(connection_problem(site))
        if desired.needs_access_code:
            store(account, access_code=choose_code(account))
            rentals, desired = snapshot(account, rentals)
        client = pti_client(site, connection)
        call = Caller(client, site_guard(site, urgent=account.urgent), lock=lock)
        if desired.user is not None and not pti_lists.known(site):
            try:
                pti_lists.read(site, call, client)
                commit_keeping_loaded()
            except PtiPermanentError as exc:  # the lists are a check, not a condition: push without it
                log.warning("PTI's access levels and zones at %s cannot be read (%s): pushing unchecked",
                            site.code, exc.reason)
        unknown = pti_lists.check(site, desired, account.customer.access_level_override,
                                  account.customer.zone_override)
        if unknown is not None:
            raise Park(*unknown)  # before any PTI write: PTI would refuse it, or give the wrong hours
        live = LiveReads(call, client)
        record = None if batch is not None else PushRecord.of(account.pushed, account.pti_user_id,
                                                               account.access_code, desired.customer_id)
        reads = batch.for_account(call, client, last_touched) if batch is not None else record or live
        listed = _listed_plan(reads, account, desired) if reads.listing else None
        if listed is not None and record is not None and not _only_locks(listed[1]):
            listed = None  # the record plans locks and unlocks alone; anything else (or nothing) is read live
        operations, unit_problems = [], {}
        if listed is not None:
            identity, the_plan = listed
            if identity.user is not None and account.pti_user_id != identity.user.id:
                account.pti_user_id = identity.user.id
            try:
                operations, unit_problems = apply_plan(call, client, account, the_plan.ops, desired.customer_id,
                                                       record=record)
            except Park as exc:
                unit_problems = {"": exc.reason}
            if unit_problems:  # PTI refused what the listing promised: read this customer live and push again
                log.info("PTI refused a push of account %s planned from %s (%s): reading it live", account.id,
                         "its last push" if record is not None else "the batch's listing",
                         ", ".join(sorted(set(unit_problems.values()))))
                listed = None
        if listed is None:
            rentals, desired, the_plan = _read_and_plan(live, account, rentals, desired)
            more, unit_problems = apply_plan(call, client, account, the_plan.ops, desired.customer_id)
            operations += more
        for issue in the_plan.issues:
            if issue.unit_name and issue.reason not in UNIT_STATUS_REASONS.values():
                unit_problems.setdefault(issue.unit_name, issue.reason)
        blocking = [i.reason for i in the_plan.issues if i.reason in ACCOUNT_REASONS]
        if blocking:
            raise Park(blocking[0])
        outcome = "ok" if operations else "noop"
        pushed = None if finished_by is None else _plain_push(account, journal, rentals, desired, operations,
                                                              unit_problems, started, outcome, lock)
        if pushed is not None:
            db.session.rollback()  # nothing of it is written here: the finishing thread writes it all
            finished_by(pushed)
            return Result(outcome, operations=operations, handed=True)
        return _finish(account, journal, rentals, desired, generation, operations, unit_problems, started,
                       outcome=outcome, write_back=write_back)
    except Retry as exc:
        db.session.rollback()
        return _retry(account, journal, exc, operations, started)
    except Park as exc:
        db.session.rollback()
        return _park(account, journal, exc, operations, started)
    except NoFreeCode as exc:
        db.session.rollback()
        return _park(account, journal, Park("duplicate_access_code", str(exc)), operations, started)
    except PtiError as exc:  # a retryable error outside the Caller (e.g. a lookup after an uncertain create)
        db.session.rollback()
        if exc.retryable:
            return _retry(account, journal, Retry(exc.reason, getattr(exc, "retry_after", None)), operations,
                          started)
        return _park(account, journal, Park(exc.reason, str(exc)), operations, started)
    except Exception as exc:  # noqa: BLE001 - a malformed answer, a database error, a bug: journalled and counted
        db.session.rollback()
        log.exception("reconcile of account %s failed unexpectedly", account.id)
        return _retry(account, journal, Retry("unexpected_error", detail=unexpected(exc)), operations, started)


def _listed_plan(listing: SiteListing, account: PtiAccount, desired: DesiredAccess) -> tuple[Identity, Plan] | None:
    """The plan from a batch's listing, or None where only live reads can tell: a look-up that is not plain (a
    stranger, a duplicate, a taken code), a unit the listing says is missing or someone else's, or a plan that
    vacates a unit or removes a user (the listing may predate another customer's move-in to that unit)."""
    identity, actual = observe(listing, desired, account)
    if identity.outcome is not Outcome.FOUND and identity.outcome is not Outcome.CREATE:
        return None
    the_plan = plan(desired, actual)
    if any(isinstance(op, (VacateUnit, RemoveUser)) for op in the_plan.ops) or any(
            issue.reason in LISTING_DOUBTS for issue in the_plan.issues):
        return None
    return identity, the_plan


def _only_locks(the_plan: Plan) -> bool:
    """A plan of locks and unlocks alone, at least one: what a push planned from the last push's record may run."""
    return bool(the_plan.ops) and all(isinstance(op, (LockUnit, UnlockUnit)) for op in the_plan.ops)


def _read_and_plan(reads: LiveReads, account: PtiAccount, rentals: list[Rental], desired: DesiredAccess,
                   ) -> tuple[list[Rental], DesiredAccess, Plan]:
    """Look the customer up call by call and plan; a code PTI gives a stranger is replaced by a new one first."""
    identity, actual = observe(reads, desired, account)
    stop_on_conflict(identity, account)
    if identity.outcome is Outcome.CODE_TAKEN:
        account.access_code = choose_code(account, exclude={account.access_code})
        db.session.commit()
        rentals, desired = snapshot(account)
        identity, actual = observe(reads, desired, account)
        stop_on_conflict(identity, account)
        if identity.outcome is not Outcome.FOUND and identity.outcome is not Outcome.CREATE:
            raise Retry("duplicate_access_code")
    if identity.user is not None and account.pti_user_id != identity.user.id:
        account.pti_user_id = identity.user.id
    return rentals, desired, plan(desired, actual)


def unexpected(exc: BaseException) -> str:
    """What the journal says about an unexpected exception: its type and where it was raised, never its message
    (which may quote a PTI answer, so an access code)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    return f"{exc.__class__.__name__}{where}"


def _journal(journal: SyncAttempt, outcome: str, operations: list[str], started: float,
             reason: str | None = None, detail: str | None = None) -> None:
    journal.outcome, journal.reason, journal.detail = outcome, reason, detail
    journal.operations = operations
    journal.duration_ms = int((time.monotonic() - started) * 1000)
    db.session.add(journal)


def _rental_states(rentals: list[Rental], desired: DesiredAccess, unit_problems: dict[str, str],
                   disabled: bool = False) -> list[tuple[Rental, str, str | None]]:
    """How each rental of the account stands after its push: (rental, sync state, reason or None)."""
    status = {r.rental_id: r.status for r in desired.rentals}
    states = []
    for rental in rentals:
        st = status.get(rental.sg_id)
        if disabled or not rental.active or st is RentalStatus.UNIT_SWITCHED_OFF:
            states.append((rental, SyncState.DISABLED, None))
        elif st in UNIT_STATUS_REASONS:
            states.append((rental, SyncState.UNMAPPED if st is RentalStatus.UNIT_UNMAPPED else SyncState.FAILED,
                           UNIT_STATUS_REASONS[st]))
        elif rental.unit.pti_unit_name in unit_problems:
            states.append((rental, SyncState.FAILED, unit_problems[rental.unit.pti_unit_name]))
        else:
            states.append((rental, SyncState.IN_SYNC, None))
    return states


def _plain_push(account, journal, rentals, desired, operations, unit_problems, started, outcome, lock,
                ) -> Pushed | None:
    """The push as a batch's finishing thread records it (engine/finishes.py), when it ended plainly: every rental
    in sync or not active, a PTI user and what PTI holds known. None: `_finish` records it, as a single push."""
    if unit_problems or account.pti_user_id is None:
        return None
    record = push_record(account.pti_user_id, desired.user, desired.units)
    states = _rental_states(rentals, desired, unit_problems)
    if record is None or any(reason is not None for _, _, reason in states):
        return None
    return Pushed(account.id, account.site.sg_id, journal.generation, journal.trigger, journal.rq_job_id, outcome,
                  operations, int((time.monotonic() - started) * 1000), account.pti_user_id, record,
                  [(rental.id, state, state is SyncState.IN_SYNC and (bool(operations) or rental.pti_synced is None))
                   for rental, state, _ in states],
                  [rental.unit.sg_id for rental in rentals if rental.active], lock)


def _finish(account, journal, rentals, desired, generation, operations, unit_problems, started, *, outcome,
            disabled=False, write_back: Callable[[int], None] | None = None) -> Result:
    # The account row first, then its rentals: the same order as mark_dirty, so the two never deadlock.
    with db.session.no_autoflush:
        current, owed_since = db.session.execute(
            select(PtiAccount.generation, PtiAccount.owed_since).where(PtiAccount.id == account.id)
            .with_for_update()).one()
    now = to_ms(utcnow())
    for rental, state, reason in _rental_states(rentals, desired, unit_problems, disabled):
        rental.sync_state, rental.last_error = state, reason
        if state is SyncState.IN_SYNC and (operations or rental.pti_synced is None):
            rental.pti_synced = now
    newer = current > generation
    account.synced_generation = max(account.synced_generation, generation)
    account.state = SyncState.PENDING if newer else SyncState.IN_SYNC
    # Still urgent only if a newer intent is owed; computed by the database from the row as it is now (on SQLite
    # FOR UPDATE locks nothing, and an urgent mark made since this attempt read the row must not be lost).
    account.urgent = and_(PtiAccount.urgent, PtiAccount.generation > generation)
    # PTI has every change up to `generation`: a newer one still owed keeps the older time (an over-estimate of at
    # most one push, never an under-estimate of how far sync is behind).
    account.owed_since = case((PtiAccount.generation > generation, PtiAccount.owed_since), else_=None)
    account.attempts, account.next_attempt_at = 0, None
    account.last_error = account.last_error_detail = None
    account.foreign_pti_users = None  # a conflict, if there was one, is settled
    account.last_attempt_at = account.last_synced_at = utcnow()
    with db.session.no_autoflush:  # the account's and rentals' changes go in the commit's one flush
        new_problems = problems.account_synced(account, {
            r.unit_id: r.last_error for r in rentals if r.active and r.last_error in problems.UNIT_REASONS},
            [(r.unit_id, r.unit.sg_id) for r in rentals if r.active])
    _journal(journal, outcome, operations, started)
    if outcome == "ok" and owed_since is not None:  # event to gate: from the oldest change's mark to PTI's answer
        journal.gate_ms = max(0, int((utcnow() - owed_since).total_seconds() * 1000))
    # What PTI now holds, for the next lock or unlock to plan from: only after a push that left every unit as wanted.
    account.pushed = None if disabled or unit_problems else push_record(account.pti_user_id, desired.user,
                                                                         desired.units)
    if not disabled:
        # The push's results are owed to Storeganise until it accepts them. Written as SQL, so always in the UPDATE:
        # the push may have read True (its previous write-back still owed) and that write-back cleared it since;
        # assigned a plain True, equal to what was read, the column would be left out and these results lost.
        account.write_back_owed = true()
    account_id = account.id
    db.session.commit()
    if new_problems:
        hint(REPORT_PROBLEMS, job_id=problems.REPORT_JOB_ID)
    if not disabled:
        if write_back is not None:
            write_back(account_id)
        else:
            hint(WRITE_BACK, account_id)
    return Result(outcome, operations=operations)


def _retry(account: PtiAccount, journal: SyncAttempt, exc: Retry, operations, started) -> Result:
    db.session.refresh(account)
    account.pushed = None  # what PTI holds after a failed attempt is not known: the next push reads it
    if exc.counts:
        account.attempts += 1
    if account.attempts >= MAX_ATTEMPTS:
        detail = "gave up after repeated failures" + (f" (last: {exc.detail})" if exc.detail else "")
        return _park(account, journal, Park(exc.reason, detail), operations, started)
    wait = backoff(account.attempts or 1, ATTEMPT_BACKOFF_BASE_S, ATTEMPT_BACKOFF_CAP_S, exc.retry_after)
    account.state = SyncState.PENDING
    account.last_error, account.last_error_detail = exc.reason, None
    account.last_attempt_at = utcnow()
    account.next_attempt_at = utcnow() + timedelta(seconds=wait)
    _journal(journal, "retry", operations, started, exc.reason, exc.detail)
    db.session.commit()
    if exc.reason == "circuit_open":  # the site is out: the relay paces its backlog (a probe first), no job each
        return Result("retry", exc.reason, operations, wait)
    try:
        get_queue(URGENT if account.urgent else DEFAULT).enqueue_in(timedelta(seconds=wait), RECONCILE, account.id,
                                                                     journal.trigger)
    except redis.RedisError as exc_redis:  # still owed in the database: the relay enqueues it once the wait is over
        log.warning("could not schedule the retry of account %s (%s): the relay will", account.id,
                    exc_redis.__class__.__name__)
    return Result("retry", exc.reason, operations, wait)


def _park(account: PtiAccount, journal: SyncAttempt, exc: Park, operations, started) -> Result:
    db.session.refresh(account, with_for_update=True)  # the account row before its rentals, as everywhere
    account.state = SyncState.FAILED
    account.last_error, account.last_error_detail = exc.reason, exc.detail
    account.foreign_pti_users = exc.foreign
    account.pushed = None
    account.last_attempt_at = utcnow()
    account.next_attempt_at = None
    rentals = db.session.scalars(select(Rental).where(
        Rental.customer_id == account.customer_id, Rental.site_id == account.site_id,
        Rental.state.in_(ACTIVE_RENTAL_STATES)).options(joinedload(Rental.unit))).all()
    for rental in rentals:
        if rental.unit.pti_switched_off:
            rental.sync_state, rental.last_error = SyncState.DISABLED, None
        elif rental.unit.pti_unit_name:
            rental.sync_state, rental.last_error = SyncState.FAILED, exc.reason
        else:  # never synced anyway: the unit's own problem is the one to show
            rental.sync_state, rental.last_error = SyncState.UNMAPPED, "unit_unmapped"
    new_problems = problems.account_parked(account, exc.reason, exc.detail,
                                           [r.unit for r in rentals if r.last_error == exc.reason])
    _journal(journal, "failed", operations, started, exc.reason, exc.detail)
    db.session.commit()
    if new_problems:
        hint(REPORT_PROBLEMS, job_id=problems.REPORT_JOB_ID)
    return Result("failed", exc.reason, operations)
