"""Every write to Storeganise: the pti_* custom fields after a push or an overdue flip, the access overrides staff
set, and tasks for staff when a push fails.

Every value is stored in the mirror (and committed) BEFORE the PUT: the `unitRental.updated` / `user.updated`
echo Storeganise sends for our own write then re-reads a record equal to the mirror, finds no change and asks
for nothing. One Redis memo per rental remembers what we wrote and what is still on its way. A problem is raised
as a Storeganise task once per cause, and forgotten when the account syncs again.

What is owed to Storeganise is a database fact, never only a queued job: a push's results
(`PtiAccount.write_back_owed`, set in the push's own transaction) and staff's overrides (`Customer.overrides_owed`,
set with the change) stay owed until Storeganise accepted them. The job enqueued after the commit is a hint; the
relay asks `request_write_backs` for whatever is still owed, and `write_back_owed` writes it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache

import redis
from flask import current_app
from sqlalchemy import and_, bindparam, case, func, or_, select, update
from sqlalchemy.orm import aliased, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from .. import echoes
from ..extensions import commit_keeping_loaded, db
from ..jobqueue import WRITE_BACK_OWED, get_redis, hint
from ..models import ACTIVE_RENTAL_STATES, Customer, OpenProblem, PtiAccount, Rental, SyncState, to_ms, utcnow
from ..storeganise import StoreganiseClient, StoreganiseError, format_timestamp
from ..storeganise.client import REASON_NOT_FOUND
from ..storeganise.fields import FieldCodes
from ..sync.errors import problem
from . import problems

log = logging.getLogger(__name__)

# The memo of one rental's pti_* fields in Storeganise (a Redis hash): `written`, the pti_synced|pti_overlocked we
# last wrote; `overlock` and `until`, a pti_overlocked we have to PUT after an overdue flip, and until when it counts
# as on its way; `landed`, Storeganise's `updated` in its answer to that PUT (copies older than it predate our write).
MEMO_KEY = "pti-sync:sg-rental:{rental}"
USER_MEMO_KEY = "pti-sync:sg-user:{user}"  # the same `written` for a customer's pti_* fields
MEMO_TTL_S = 7 * 24 * 3600
ON_ITS_WAY_S = 120  # longer than any write takes; a crashed write stops mattering after this


@dataclass
class WriteBack:
    rentals: int = 0
    user_fields: tuple[str, ...] = ()


def write_back(account_id: int, client: StoreganiseClient, overlocks: dict[str, bool] | None = None) -> WriteBack:
    """PUT the push's results where Storeganise does not hold them yet: on each in-sync active rental of the account
    its pti_synced, pti_overlocked, and the access code and PTI user id it opens with; on the customer, the code and
    PTI user id of their first account (`_first_account`). Raises StoreganiseError once what landed is recorded.

    pti_synced is the rental's own push time, which the engine stores (in milliseconds) before it asks for this;
    a rental whose values were already written (remembered in Redis) is not written again, so a reconcile that
    changed nothing costs Storeganise nothing. The database work is the same for one rental as for many: what is
    read before the PUTs is kept, and what Storeganise answered is noted on every rental in one statement.

    `overlocks` (a delivery's pti_overlocked flips still to PUT, see `write_overlocks`): a flip this write-back's PUT
    carried lands with it and is taken out, so the delivery does not PUT it a second time.
    """
    result = write_back_many([account_id], client, overlocks)
    if result.error is not None:
        raise result.error
    return result.done[0] if result.done else WriteBack()


@dataclass
class WriteBacks:
    """What `write_back_many` did: the write-backs Storeganise accepted, in account order; where it stopped, the
    error and the accounts it did not finish (still owed in the database)."""
    done: list[WriteBack]
    error: StoreganiseError | None = None
    not_done: list[int] = field(default_factory=list)


@dataclass
class _Plan:
    """One account's write-back, planned from the mirror before any PUT."""
    account: PtiAccount
    customer: Customer
    pushed_at: datetime | None  # the push whose results these are: a newer one stays owed
    puts: list[tuple[str, dict]]
    held: dict[str, datetime | None]  # the rentals' copies we hold, before our PUTs
    owed: set[str]  # the rentals whose pti_overlocked is owed to Storeganise (`Rental.overlock_owed_at`)
    user_fields: dict
    previous: tuple[int | None, str | None]  # the customer's code and PTI user id before this write-back


def write_back_many(account_ids: list[int], client: StoreganiseClient,
                    overlocks: dict[str, bool] | None = None) -> WriteBacks:
    """`write_back` for several accounts (a bulk batch's, as its pushes finish) with the database work of one: the
    accounts, their customers and rentals read in two statements, one commit before the PUTs, and Storeganise's
    answers recorded in two statements and one commit. The accounts go in id order, the order every writer takes
    them in. It stops at the first StoreganiseError: what landed is recorded, the accounts before are done, that
    one and the rest stay owed, and the error is returned with them."""
    plans = _plans(account_ids)
    if not plans:
        return WriteBacks([])
    commit_keeping_loaded()  # no transaction held open across the PUTs
    overlocked = _codes().rental_overlocked
    fresh = Fresh({rental_sg_id: fields[overlocked] for plan in plans for rental_sg_id, fields in plan.puts})

    written: list[tuple[str, dict]] = []  # what Storeganise accepted, remembered in Redis in one round trip
    landed: list[dict] = []  # what its answers say, noted on the rentals in one statement
    settled: list[dict] = []  # owed pti_overlocked values it accepted, no longer owed (one statement)
    finished: list[_Plan] = []
    try:
        for plan in plans:
            try:
                _send(plan, client, overlocks, written, landed, settled, fresh)
            except StoreganiseError as exc:
                _record(finished, landed, settled, failed=plan)
                return WriteBacks([_summary(p) for p in finished], exc,
                                  [p.account.id for p in plans[len(finished):]])
            finished.append(plan)
    finally:
        _remember(written)
    _record(finished, landed, settled)
    return WriteBacks([_summary(p) for p in finished])


def _plans(account_ids: list[int]) -> list[_Plan]:
    """Each account's write-back, from the mirror: what each rental and the customer should carry in Storeganise,
    less what Redis remembers writing already. Two statements for any number of accounts."""
    # The accounts, their customers, and each customer's first account, in one statement.
    found = db.session.execute(select(PtiAccount, Customer, _first_account())
                               .join(Customer, Customer.id == PtiAccount.customer_id)
                               .where(PtiAccount.id.in_(account_ids)).order_by(PtiAccount.id)
                               .execution_options(populate_existing=True)).all()
    if not found:
        return []
    pairs = {(account.customer_id, account.site_id) for account, _, _ in found}
    rentals_of: dict[tuple[int, int], list[Rental]] = {}
    for rental in db.session.scalars(
            select(Rental).where(Rental.customer_id.in_({customer_id for customer_id, _ in pairs}),
                                 Rental.state.in_(ACTIVE_RENTAL_STATES), Rental.sync_state == SyncState.IN_SYNC)
            .order_by(Rental.id)):
        if (rental.customer_id, rental.site_id) in pairs:
            rentals_of.setdefault((rental.customer_id, rental.site_id), []).append(rental)
    codes = _codes()
    plans = [_plan(account, customer, first_account, rentals_of.get((account.customer_id, account.site_id), []),
                   codes) for account, customer, first_account in found]
    # Written unless Redis remembers writing exactly these: the mirror already holding the user's fields proves
    # nothing, as it is set before the PUT (for the echo), so a worker killed between the two must not make it look
    # done.
    memos = [[MEMO_KEY.format(rental=sg_id) for sg_id, _ in plan.puts]
             + ([USER_MEMO_KEY.format(user=plan.customer.sg_id)] if plan.user_fields else []) for plan in plans]
    known = iter(_written([key for keys in memos for key in keys]))
    for plan, keys in zip(plans, memos, strict=True):
        plan_known = [next(known) for _ in keys]
        # An owed pti_overlocked is PUT whatever the memo says: only Storeganise's acceptance settles it.
        plan.puts = [put for put, memo in zip(plan.puts, plan_known, strict=False)
                     if memo != _fingerprint(put[1]) or put[0] in plan.owed]
        if plan.user_fields and plan_known[-1] == _fingerprint(plan.user_fields):
            plan.user_fields = {}
    return plans


def _plan(account: PtiAccount, customer: Customer, first_account: int | None, rentals: list[Rental],
          codes: FieldCodes) -> _Plan:
    set_committed_value(account, "customer", customer)
    puts: list[tuple[str, dict]] = []
    for rental in rentals:
        fields: dict = {codes.rental_overlocked: rental.overlocked}
        if rental.pti_synced is not None:
            rental.pti_synced = to_ms(rental.pti_synced)
            fields[codes.rental_synced] = format_timestamp(rental.pti_synced.replace(tzinfo=UTC))
        if account.access_code is not None:
            fields[codes.rental_access_code] = str(account.access_code)
        if account.pti_user_id:
            fields[codes.rental_pti_id] = account.pti_user_id
        puts.append((rental.sg_id, fields))
    previous = (customer.pti_access_code, customer.pti_user_id)
    user_fields: dict = {}
    if account.id == first_account:
        if account.access_code is not None:
            customer.pti_access_code = account.access_code
            user_fields[codes.user_access_code] = str(account.access_code)
        if account.pti_user_id:
            customer.pti_user_id = account.pti_user_id
            user_fields[codes.user_pti_id] = account.pti_user_id
    return _Plan(account, customer, account.last_synced_at, puts,
                 {rental.sg_id: rental.sg_updated for rental in rentals},
                 {rental.sg_id for rental in rentals if rental.overlock_owed_at is not None}, user_fields, previous)


def _send(plan: _Plan, client: StoreganiseClient, overlocks: dict[str, bool] | None,
          written: list[tuple[str, dict]], landed: list[dict], settled: list[dict], fresh: Fresh) -> None:
    """The account's PUTs, each noted in `written`, `landed` and `settled` as Storeganise accepts it."""
    codes = _codes()
    for rental_sg_id, fields in plan.puts:
        sent_at = utcnow()
        answer = put_fields(client, "unitRental", rental_sg_id, fields, fresh)
        fresh.done(rental_sg_id)
        if answer is None:
            continue  # given up for a newer write of the rental (put_fields): nothing of this one landed
        written.append((MEMO_KEY.format(rental=rental_sg_id), fields))
        landed += _answered(rental_sg_id, plan.held[rental_sg_id], answer)
        if rental_sg_id in plan.owed:
            settled.append(_accepted(rental_sg_id, fields[codes.rental_overlocked], sent_at))
        if overlocks is not None and overlocks.get(rental_sg_id) == fields[codes.rental_overlocked]:
            _flip_landed(rental_sg_id, overlocks.pop(rental_sg_id), answer)
    if plan.user_fields:
        put_fields(client, "user", plan.customer.sg_id, plan.user_fields)
        written.append((USER_MEMO_KEY.format(user=plan.customer.sg_id), plan.user_fields))


def _record(finished: list[_Plan], landed: list[dict], settled: list[dict], failed: _Plan | None = None) -> None:
    """Storeganise holds these pushes' results: no longer owed, unless a newer push finished meanwhile. The
    accounts' rows first, in id order (this UPDATE locks them, as `_account_first` does), then the rentals, then
    one commit. A `failed` account keeps what is owed, and its customer the values Storeganise still holds, or the
    retry would send nothing."""
    if finished:
        accounts = PtiAccount.__table__
        done = and_(accounts.c.write_back_owed.is_(True),
                    accounts.c.last_synced_at.is_not_distinct_from(bindparam("pushed_at")))
        db.session.execute(update(accounts).where(accounts.c.id == bindparam("account_id"))
                           .values(write_back_owed=case((done, False), else_=accounts.c.write_back_owed)),
                           [{"account_id": p.account.id, "pushed_at": p.pushed_at} for p in finished])
    if failed is not None:
        _account_first(failed.account.id)
    _note_landed(landed)
    _settle(settled)
    refused = [p for p in finished if p.account.write_back_refusals]
    if refused:
        db.session.execute(update(PtiAccount).where(PtiAccount.id.in_([p.account.id for p in refused]))
                           .values(write_back_refusals=0, write_back_retry_at=None)
                           .execution_options(synchronize_session=False))
        for plan in refused:
            problems.close_causes(refusal_cause(plan.customer, plan.account.site.sg_id, "%"))
    if failed is not None and failed.user_fields:
        failed.customer.pti_access_code, failed.customer.pti_user_id = failed.previous
    db.session.commit()


def _summary(plan: _Plan) -> WriteBack:
    return WriteBack(rentals=len(plan.puts), user_fields=tuple(sorted(plan.user_fields)))


@cache
def _first_account():
    """The id of the customer's account whose code and PTI user id the Storeganise user carries: their first one with
    a code (a column of a statement on PtiAccount).

    A customer with rentals at several sites usually has one code everywhere (choose_code reuses it where free); the
    user-level fields name the first site's, and every rental carries its own site's code and PTI user id.

    Built once (an expression is immutable): building the aggregate over an alias cost a bulk push's write-backs a
    fifth of their CPU."""
    other = aliased(PtiAccount)
    return select(func.min(other.id)).where(other.customer_id == PtiAccount.customer_id,
                                            other.access_code.is_not(None)).scalar_subquery()


def _account_first(account_id: int) -> None:
    """Lock the account's row before this transaction writes any of its rentals: every writer of a customer takes the
    account first, then its rentals (mark_dirty, a push's finish), so two of them queue instead of deadlocking. A
    write-back that wrote the rentals first deadlocked with an overdue event's handler on PostgreSQL during a bulk
    push (the event waited for RQ's retry, ten seconds)."""
    with db.session.no_autoflush:
        db.session.execute(select(PtiAccount.id).where(PtiAccount.id == account_id).with_for_update())


def put_fields(client: StoreganiseClient, entity: str, record_sg_id: str, fields: dict,
               fresh: Fresh | None = None) -> dict | None:
    """PUT custom fields of a rental ("unitRental") or a customer ("user"), its echo expected (dashboard/echoes.py);
    returns the record as Storeganise answered it. With `fresh`, a rental's PUT is tried, and tried again after a
    Storeganise error, only while the mirror holds its pti_overlocked (`Fresh`); given up: None, nothing written."""
    if fresh is not None and not fresh.holds(record_sg_id):
        return None
    echoes.expect(entity, record_sg_id, fields)
    try:
        if entity == "user":
            return client.update_user_custom_fields(record_sg_id, fields)
        answer = client.update_unit_rental_custom_fields(
            record_sg_id, fields, still_wanted=(lambda: fresh.holds(record_sg_id)) if fresh is not None else None)
    except StoreganiseError:
        echoes.withdraw(entity, record_sg_id)
        raise
    if answer is None:
        echoes.withdraw(entity, record_sg_id)
    return answer


FRESH_FOR_S = 0.2  # shorter than any back-off (0.25 s at least), longer than a write-back's PUTs usually take


class Fresh:
    """The pti_overlocked values a write is about to PUT on rentals, against what the mirror holds.

    A rental's pti_overlocked is PUT only while the mirror holds it: a newer event of the rental may land (and its
    job write the newer value) while this write waits, and PUT after that, the older value would stand in Storeganise
    and the next pull would read it as a person's suspend or unsuspend (tests/storeganise/test_live.py -k meanwhile).
    What the mirror holds is read again, for every rental still to PUT in one statement, whenever the last reading is
    more than FRESH_FOR_S old: so before a retry, which comes after a back-off, and before the later PUTs of a write
    whose earlier ones waited or were slow; a write that goes through at once reads nothing more."""

    def __init__(self, wanted: dict[str, bool], *, read: bool = False) -> None:
        self.wanted = dict(wanted)  # rental sg_id -> the pti_overlocked this write PUTs
        self.held = dict(wanted)  # what the mirror held at the last reading (the write's own plan, unless `read`)
        self.read_at = -math.inf if read else time.monotonic()

    def holds(self, rental_sg_id: str) -> bool:
        if rental_sg_id not in self.wanted:
            return True
        if time.monotonic() - self.read_at > FRESH_FOR_S:
            rows = db.session.execute(select(Rental.sg_id, Rental.overlocked)
                                      .where(Rental.sg_id.in_(self.wanted))).all()
            commit_keeping_loaded()  # no transaction held open across a PUT
            self.held.update(rows)
            self.read_at = time.monotonic()
        if self.held[rental_sg_id] != self.wanted[rental_sg_id]:
            log.info("pti_overlocked %s of rental %s not written: a newer event landed it %s, and writes that",
                     self.wanted[rental_sg_id], rental_sg_id, self.held[rental_sg_id])
            return False
        return True

    def done(self, rental_sg_id: str) -> None:
        """PUT (or given up): no longer read."""
        self.wanted.pop(rental_sg_id, None)


def _answered(rental_sg_id: str, held: datetime | None, answer: dict | None) -> list[dict]:
    """After a rental's PUT: what `_note_landed` notes of Storeganise's answer (none, or one row).

    A PUT that changed nothing (the answer's `updated` did not move past the copy we held, e.g. values rewritten
    after Redis forgot the memo) sends no echo, so its expectation is withdrawn: left, it would take a person's next
    edit of the same fields (a manual suspend) for our echo and drop it."""
    updated = _time((answer or {}).get("updated"))
    if updated is None:
        return []
    if held is not None and updated <= held:
        echoes.withdraw("unitRental", rental_sg_id)
        return []
    return [{"key": rental_sg_id, "updated": updated, "answer_overdue": bool(answer.get("overdue")),
             "answer_state": answer.get("state") or "occupied"}]


def _note_landed(landed: list[dict]) -> None:
    """The mirror's copies of these rentals are as new as Storeganise's answers to our PUTs (`_answered`'s rows), in
    one statement for them all, checked by the database on each row as it is now: only where the copy is not newer
    already, and still holds the rental's own state (`overdue`, `state`) as the answer does. Where it does not,
    someone changed the rental between our read and our write (a payment a moment after an overdue): the mirror must
    not count itself as new as the answer, or the copy that brings that change (read before our PUT, so stamped
    older) would be dropped as stale, and the customer left locked out until the next pull."""
    if not landed:
        return
    rentals = Rental.__table__
    newer = or_(rentals.c.sg_updated.is_(None), rentals.c.sg_updated < bindparam("updated"))
    same = (rentals.c.overdue == bindparam("answer_overdue"), rentals.c.state == bindparam("answer_state"))
    db.session.execute(update(rentals).where(rentals.c.sg_id == bindparam("key"), newer, *same)
                       .values(sg_updated=bindparam("updated")), landed)


def _accepted(rental_sg_id: str, overlocked: bool, sent_at: datetime) -> dict:
    """A row for `_settle`: Storeganise accepted this pti_overlocked of the rental, in a PUT sent at `sent_at`."""
    return {"key": rental_sg_id, "value": overlocked, "sent_at": sent_at}


def _settle(accepted: list[dict], refused: Iterable[str] = ()) -> None:
    """These rentals' pti_overlocked is no longer owed (`_accepted`'s rows), in one statement: only where the mirror
    still holds the value Storeganise accepted and nothing newer was owed since the PUT left (a flip landed
    meanwhile stays owed, for its own write or the relay's). Those Storeganise accepted (all but `refused`) end
    the problem an earlier refusal of their value stood as (`_overlock_refused`)."""
    if not accepted:
        return
    rentals = Rental.__table__
    db.session.execute(update(rentals).where(rentals.c.sg_id == bindparam("key"),
                                             rentals.c.overlocked == bindparam("value"),
                                             rentals.c.overlock_owed_at <= bindparam("sent_at"))
                       .values(overlock_owed_at=None), accepted)
    refused = set(refused)
    problems.close_refused_overlocks([row["key"] for row in accepted if row["key"] not in refused])


def _time(value) -> datetime | None:
    """The `updated` of Storeganise's answer to our PUT as naive UTC, or None when it has none it can say plainly.

    Storeganise writes this stamp itself, in the ISO 8601 form `format_timestamp` sends, so the strict standard
    reader serves (staff-typed dates go through `storeganise.values.read_datetime`, which explains its refusals). A
    stamp it cannot read only means the mirror keeps the time it holds: the safe side (the next copy is not dropped).
    """
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _codes() -> FieldCodes:
    return current_app.config["STOREGANISE_FIELDS"]


def _fingerprint(fields: dict) -> str:
    return "|".join(f"{key}={fields[key]}" for key in sorted(fields))


def _written(memo_keys: list[str]) -> list[str | None]:
    """What we last wrote to each record (by its memo key), as far as Redis remembers (None: unknown, so write)."""
    if not memo_keys:
        return []
    try:
        pipe = get_redis().pipeline(transaction=False)
        for key in memo_keys:
            pipe.hget(key, "written")
        values = pipe.execute()
    except redis.RedisError:
        return [None] * len(memo_keys)
    return [v.decode() if v is not None else None for v in values]


def _remember(written: list[tuple[str, dict]]) -> None:
    """Remember what Storeganise accepted, by memo key, in one round trip."""
    if not written:
        return
    try:
        pipe = get_redis().pipeline()
        for key, fields in written:
            pipe.hset(key, "written", _fingerprint(fields))
            pipe.expire(key, MEMO_TTL_S)
        pipe.execute()
    except redis.RedisError:
        pass  # only an optimisation: the next write-back writes again


# --- pti_overlocked values on their way to Storeganise -------------------------------------------------------


def note_overlock_on_its_way(rental_sg_id: str, overlocked: bool) -> None:
    """Before the mirror commits a flip we still have to PUT: until the PUT lands, Storeganise's value is stale."""
    key = MEMO_KEY.format(rental=rental_sg_id)
    try:
        pipe = get_redis().pipeline()
        pipe.hset(key, mapping={"overlock": int(overlocked), "until": time.time() + ON_ITS_WAY_S})
        pipe.hdel(key, "landed")  # this write has not landed yet
        pipe.expire(key, MEMO_TTL_S)
        pipe.execute()
    except redis.RedisError:
        pass  # without Redis an echo may briefly look like a manual change; the next event or pull corrects it


def overlock_on_its_way(rental_sg_id: str, copy_updated: datetime | None = None) -> bool | None:
    """The pti_overlocked we wrote (or are writing) that a copy of the rental, last `updated` at `copy_updated`,
    predates; None when the copy is as new as our write, or no write of ours is remembered.

    While the PUT is on its way any copy predates it. Once it landed, a copy older than the `updated` Storeganise
    answered the PUT with was read before our write, by a handler still landing it: its value is our own past, not
    a person's (un)suspend. A copy at or after that moment is Storeganise's word, a manual change included. Without
    either timestamp the write counts as on its way until `until`.
    """
    try:
        overlock, until, landed = get_redis().hmget(MEMO_KEY.format(rental=rental_sg_id), "overlock", "until",
                                                    "landed")
    except redis.RedisError:
        return None
    if overlock is None or until is None:
        return None
    if landed is not None and copy_updated is not None:
        return overlock == b"1" if copy_updated < _landed_at(landed) else None
    return overlock == b"1" if float(until) >= time.time() else None


def _landed_at(landed: bytes) -> datetime:
    try:
        return datetime.fromisoformat(landed.decode())
    except ValueError:
        return datetime.max  # unreadable: every copy counts as older, until `until` ends the memo


def overlock_landed(rental_sg_id: str, updated: datetime) -> None:
    """Our PUT of pti_overlocked landed, and Storeganise answered with this `updated`: remember it, so copies read
    before the write are known as older (kept as long as the memo; without a timestamp, `until` decides)."""
    try:
        get_redis().hset(MEMO_KEY.format(rental=rental_sg_id), "landed", updated.isoformat())
    except redis.RedisError:
        pass


def forget_overlock_on_its_way(rental_sg_id: str) -> None:
    try:
        get_redis().hdel(MEMO_KEY.format(rental=rental_sg_id), "overlock", "until", "landed")
    except redis.RedisError:
        pass


def _flip_landed(rental_sg_id: str, overlocked: bool, answer: dict | None) -> datetime | None:
    """A PUT carrying an overdue flip's pti_overlocked landed: while Storeganise's answer is still as overdue as the
    flip (`_note_landed`'s rule; the caller checks the state), remember when, so copies read before it are known as
    older. Returns that `updated`, or None."""
    updated = _time((answer or {}).get("updated"))
    if updated and bool(answer.get("overdue")) == overlocked:
        overlock_landed(rental_sg_id, updated)
        return updated
    return None


def write_overlocks(client: StoreganiseClient, overlocks: dict[str, bool]) -> int:
    """After the commit (the mirror already holds these values, so the echo changes nothing): PUT them.

    Only an overdue flip puts a value here. If a PUT fails, the mirror forgets the flip of the rentals not
    written yet, so the retry (or the next pull) sees the flip again and writes pti_overlocked then, instead of
    mistaking Storeganise's old value for a manual unsuspend.

    A flip the mirror no longer holds is dropped, not PUT: a newer event landed the rental the other way meanwhile
    (a payment handled while this overdue's job was still pushing), and that event's job writes the newer value.
    PUT after it, the older value would stand in Storeganise, and the next pull would read it as a person's suspend
    of a customer who has paid (tests/storeganise/test_live.py -k meanwhile).
    """
    written, landed, settled, fresh = 0, [], [], Fresh(overlocks, read=True)
    try:
        for rental_sg_id, overlocked in list(overlocks.items()):
            written += _put_overlock(client, rental_sg_id, overlocked, fresh, landed, settled)
            del overlocks[rental_sg_id]  # PUT, or given up; one that raised stays, to be forgotten below
    except StoreganiseError:
        for rental_sg_id in overlocks:
            forget_overlock_on_its_way(rental_sg_id)
        db.session.rollback()
        for rental in db.session.scalars(select(Rental).where(Rental.sg_id.in_(overlocks))):
            rental.overdue = not overlocks[rental.sg_id]
            rental.overlock_owed_at = None  # forgotten: the flip is seen again, and owed again, when it lands again
        db.session.commit()
        raise
    finally:
        _record_overlocks(landed, settled)
    return written


def _put_overlock(client: StoreganiseClient, rental_sg_id: str, overlocked: bool, fresh: Fresh, landed: list[dict],
                  settled: list[dict]) -> bool:
    """PUT one rental's pti_overlocked while the mirror holds it (`Fresh`), noting what Storeganise answered in
    `landed` and `settled`; False when given up for a newer change of the rental (which writes its own)."""
    sent_at = utcnow()
    answer = put_fields(client, "unitRental", rental_sg_id, {_codes().rental_overlocked: overlocked}, fresh)
    fresh.done(rental_sg_id)
    if answer is None:
        return False
    settled.append(_accepted(rental_sg_id, overlocked, sent_at))
    if updated := _flip_landed(rental_sg_id, overlocked, answer):  # the mirror checks its state in _note_landed
        landed.append({"key": rental_sg_id, "updated": updated, "answer_overdue": overlocked,
                       "answer_state": answer.get("state") or "occupied"})
    return True


def _record_overlocks(landed: list[dict], settled: list[dict],
                      refused: dict[str, tuple[bool, StoreganiseError]] | None = None) -> None:
    """Record what Storeganise answered to pti_overlocked PUTs, in one transaction: the flips it holds now (`landed`),
    the values no longer owed (`settled`), and the rentals whose value it refused (`refused`: a problem for staff).
    An accepted PUT ends a refusal's problem."""
    if not (landed or settled):
        return
    _note_landed(landed)
    _settle(settled, refused or ())
    new = sum(_overlock_refused(sg_id, value, exc) for sg_id, (value, exc) in (refused or {}).items())
    db.session.commit()
    if new:
        problems.request_reports()


REPORT_BATCH = 200  # problems raised per job; the relay asks again while any are left


def report_problems(client: StoreganiseClient) -> int:
    """Raise a Storeganise task for each standing problem not reported yet (once per cause); returns how many.

    Each problem is claimed (committed) before its task is created, so two jobs never raise the same task twice;
    when Storeganise fails, the claim is undone and the error raised, so the retry (or the relay) reports it."""
    created = 0
    for problem_id in problems.unreported(REPORT_BATCH):
        claimed = db.session.execute(update(OpenProblem).where(
            OpenProblem.id == problem_id, OpenProblem.reported_at.is_(None)).values(reported_at=utcnow()))
        db.session.commit()
        row = db.session.get(OpenProblem, problem_id)
        if claimed.rowcount != 1 or row is None:
            continue  # another job took it, or it was fixed meanwhile
        entry = problem(row.reason)
        detail = f"{row.detail}\n\n" if row.detail else ""
        try:
            task = client.create_task(row.target_type, row.target_id, f"PTI sync: {entry.message}",
                                      f"{entry.message}\n\n{detail}What to do: {entry.fix}\n\nAffects {row.subject}.")
        except StoreganiseError:
            db.session.execute(update(OpenProblem).where(OpenProblem.id == problem_id).values(reported_at=None))
            db.session.commit()
            raise
        row.sg_task_id = str(task.get("id")) if isinstance(task, dict) and task.get("id") else None
        db.session.commit()
        created += 1
        log.info("reported %s to Storeganise as a task on %s", row.reason, row.subject)
    return created


def write_back_overrides(customer_id: int, client: StoreganiseClient) -> dict:
    """Staff changed a customer's access level or zone in the dashboard: Storeganise, the source of truth, gets
    it too. The mirror already holds the values, so the `user.updated` echo changes nothing."""
    customer = db.session.get(Customer, customer_id)
    if customer is None:
        return {}
    codes = _codes()
    sent = (customer.access_level_override, customer.zone_override)
    fields = {codes.user_access_level: sent[0], codes.user_zone: sent[1]}
    db.session.commit()  # no transaction held open across the PUT
    put_fields(client, "user", customer.sg_id, fields)
    # Storeganise holds them: no longer owed, unless staff changed them again meanwhile (that change is owed).
    db.session.refresh(customer, with_for_update=True)
    if (customer.access_level_override, customer.zone_override) == sent:
        customer.overrides_owed = False
    if customer.overrides_refusals:
        customer.overrides_refusals, customer.overrides_retry_at = 0, None
        problems.close_causes(refusal_cause(customer, "overrides", "%"))
    db.session.commit()
    return fields


# --- what Storeganise refuses --------------------------------------------------------------------------------------

REFUSALS_BEFORE_GIVING_UP = 5  # refusals in a row (4xx, not an outage) before it is a problem for staff
REFUSAL_BACKOFF_S = 60  # the wait after the first refusal; doubled after each one
REFUSAL_BACKOFF_CAP_S = 3600


def refusal_cause(customer: Customer, what: str, reason: str) -> str:
    """The problem register's cause for a refused write: `what` is the account's site id, or "overrides"."""
    return f"writeback:{customer.sg_id}:{what}:{reason}"


def refused(row: PtiAccount | Customer, exc: StoreganiseError) -> bool:
    """Storeganise refused this write for good (a 4xx: the record was deleted, a field code is wrong): wait longer
    before each new try, so a refused record neither costs Storeganise a call every relay nor holds back the writes
    queued behind it; after REFUSALS_BEFORE_GIVING_UP in a row it is no longer owed and stands as a problem on the
    customer's page (raised in Storeganise as a task), until a later write of it is accepted. True when given up."""
    account = row if isinstance(row, PtiAccount) else None
    customer = account.customer if account is not None else row
    refusals = (account.write_back_refusals if account else customer.overrides_refusals) + 1
    retry_at = utcnow() + timedelta(seconds=min(REFUSAL_BACKOFF_CAP_S, REFUSAL_BACKOFF_S * 2 ** (refusals - 1)))
    given_up = refusals >= REFUSALS_BEFORE_GIVING_UP
    if account is not None:
        account.write_back_refusals, account.write_back_retry_at = refusals, retry_at
        account.write_back_owed = account.write_back_owed and not given_up
    else:
        customer.overrides_refusals, customer.overrides_retry_at = refusals, retry_at
        customer.overrides_owed = customer.overrides_owed and not given_up
    if given_up:
        what = account.site.sg_id if account else "overrides"
        subject = f"customer {customer.name} ({customer.email})" + (f" at {account.site.title}" if account else "")
        written = "the push's results (pti_* fields)" if account else "the staff's access overrides"
        said = str(exc).rstrip(".")
        new = problems.open_problem(problems.Found(
            refusal_cause(customer, what, exc.reason), exc.reason, "customer", customer.sg_id, "user",
            customer.sg_id, subject, f"Storeganise refused {written} {refusals} times in a row: {said}.",
            site_id=account.site_id if account else None))
        db.session.commit()
        if new:
            problems.request_reports()
    else:
        db.session.commit()
    return given_up


# --- what is owed to Storeganise, re-driven by the relay ---------------------------------------------------------

WRITE_BACK_BATCH = 200  # accounts and customers written per job; the relay asks again while any are left
WRITE_BACK_JOB_ID = "pti-sync-write-back-owed"  # one such job queued at a time
# A rental's pti_overlocked owed this long is the relay's: its own job writes it within a second or two (a
# delivery's write-back thread, a push's write-back), so only a job that died, or a Storeganise that refused, leaves
# it longer. Before then the relay would only write it twice.
OVERLOCK_OWED_GRACE_S = 60


@dataclass
class Owed:
    accounts: list[int]  # PtiAccount ids whose push results Storeganise does not hold yet
    customers: list[int]  # Customer ids whose staff overrides Storeganise does not hold yet
    rentals: list[int] = field(default_factory=list)  # Rental ids whose pti_overlocked is owed past the grace

    def __bool__(self) -> bool:
        return bool(self.accounts or self.customers or self.rentals)


def owed_write_backs(limit: int = WRITE_BACK_BATCH) -> Owed:
    """What is owed to Storeganise, oldest first: at most `limit` of each kind."""
    now = utcnow()
    return Owed(
        accounts=list(db.session.scalars(select(PtiAccount.id).where(
            PtiAccount.write_back_owed.is_(True),
            or_(PtiAccount.write_back_retry_at.is_(None), PtiAccount.write_back_retry_at <= now))
            .order_by(PtiAccount.id).limit(limit))),
        customers=list(db.session.scalars(select(Customer.id).where(
            Customer.overrides_owed.is_(True),
            or_(Customer.overrides_retry_at.is_(None), Customer.overrides_retry_at <= now))
            .order_by(Customer.id).limit(limit))),
        rentals=list(db.session.scalars(select(Rental.id).where(
            Rental.overlock_owed_at <= now - timedelta(seconds=OVERLOCK_OWED_GRACE_S))
            .order_by(Rental.overlock_owed_at).limit(limit))),
    )


def request_write_backs() -> bool:
    """For the relay: ask for one `write_back_owed` job while anything is owed to Storeganise. True when asked.

    A Redis failure is logged, not raised: what is owed stays in the database for the next relay."""
    if not owed_write_backs(1):
        return False
    return hint(WRITE_BACK_OWED, job_id=WRITE_BACK_JOB_ID)


def write_back_owed(client: StoreganiseClient, limit: int = WRITE_BACK_BATCH) -> int:
    """Write what is owed to Storeganise (staff overrides first, then push results, then the pti_overlocked values
    no push carried); returns how many were written.

    Storeganise unreachable (a retryable error) stops the job with the error: everything not written stays owed
    and the relay asks again. A record Storeganise refuses (e.g. deleted there) waits longer before each new try
    and becomes a problem for staff after a few (`refused`); the others are still written."""
    owed, written = owed_write_backs(limit), 0
    for write, model, ids in ((write_back_overrides, Customer, owed.customers),
                              (write_back, PtiAccount, owed.accounts)):
        for ident in ids:
            try:
                write(ident, client)
            except StoreganiseError as exc:
                db.session.rollback()
                if exc.retryable:
                    raise
                row = db.session.get(model, ident, with_for_update=True)
                given_up = row is not None and refused(row, exc)
                log.warning("write-back of %s %s refused by Storeganise (%s): %s", model.__tablename__[:-1], ident,
                            exc.reason, "given up, a problem for staff" if given_up else "tried again later")
                continue
            written += 1
    return written + write_owed_overlocks(client, owed.rentals)


def write_owed_overlocks(client: StoreganiseClient, rental_ids: list[int]) -> int:
    """PUT the pti_overlocked still owed on these rentals (a job that died before its PUT, or failed on it), each
    while the mirror holds it; returns how many Storeganise accepted.

    A push's write-back writes them too: this runs after those, so it finds only the rentals no push carried (not in
    sync, or their account not pushed). Storeganise unreachable stops it with the error and what is left stays owed;
    a rental Storeganise refuses is no longer owed, since writing it again would be refused again: one deleted there
    is only logged (its deletion ends it here too), any other refusal (a field it will not take) stands as a problem
    for staff on the rental's page until a PUT of its value is accepted."""
    owed = dict(db.session.execute(select(Rental.sg_id, Rental.overlocked).where(
        Rental.id.in_(rental_ids), Rental.overlock_owed_at.is_not(None)).order_by(Rental.id)).all())
    db.session.commit()  # no transaction held open across the PUTs
    written, landed, settled, fresh = 0, [], [], Fresh(owed, read=True)
    refusals: dict[str, tuple[bool, StoreganiseError]] = {}
    try:
        for rental_sg_id, overlocked in owed.items():
            try:
                written += _put_overlock(client, rental_sg_id, overlocked, fresh, landed, settled)
            except StoreganiseError as exc:
                if exc.retryable:
                    raise
                gone = exc.reason == REASON_NOT_FOUND  # deleted there: its deletion ends the rental here too
                log.warning("Storeganise refused pti_overlocked %s of rental %s (%s): no longer owed%s", overlocked,
                            rental_sg_id, exc.message, "" if gone else ", a problem for staff")
                settled.append(_accepted(rental_sg_id, overlocked, utcnow()))
                if not gone:
                    refusals[rental_sg_id] = (overlocked, exc)
    finally:
        _record_overlocks(landed, settled, refused=refusals)
    if written:
        log.info("wrote %s pti_overlocked values Storeganise was still owed", written)
    return written


def _overlock_refused(rental_sg_id: str, overlocked: bool, exc: StoreganiseError) -> bool:
    """Stand the refusal on the rental's page, raised in Storeganise on its unit: Storeganise's lockout flag no
    longer says what the gate does, and nothing will write it until a later PUT of it is accepted (which closes
    this). True when the problem is new."""
    rental = db.session.scalar(select(Rental).where(Rental.sg_id == rental_sg_id)
                               .options(joinedload(Rental.unit), joinedload(Rental.site)))
    if rental is None:
        return False  # gone from the mirror too: nobody will look for it
    gate = "locked out (overlocked)" if overlocked else "open to the customer"
    return problems.open_problem(problems.Found(
        f"{problems.OVERLOCK_CAUSE}{rental_sg_id}:{exc.reason}", exc.reason, "rental", rental_sg_id, "unit",
        rental.unit.sg_id,
        f"rental of unit {rental.unit.name} at {rental.site.title}",
        f"Storeganise refused the rental's pti_overlocked = {str(overlocked).lower()} ({str(exc).rstrip('.')}): "
        f"the unit is {gate} at the gate, and Storeganise's field says otherwise until it is written again: "
        "once the field is fixed, press Resync on the rental.",
        site_id=rental.site_id))
