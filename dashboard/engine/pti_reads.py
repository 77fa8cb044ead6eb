"""How a reconcile reads PTI: call by call, from one listing of the site shared by a bulk batch, or, for a lock or
unlock, from what the customer's last push left there (`PushRecord`).

A single reconcile (an event, a staff action, the relay) looks the customer up call by call (`LiveReads`). A bulk
batch of a site's customers lists the site's users and units once (`BatchReads`) and plans every customer against
that listing (`SiteListing`), so a customer already in sync costs no PTI call at all and a first push costs its
writes alone. The listing is trusted only where nothing can have changed it behind the batch's back:

- **Our own pushes**: every reconcile marks its account as being pushed when it takes the account's lock and
  stamps it with Redis's clock when it lets go (`touch`). A customer pushed by anyone since the listing was read,
  or whose push was killed (marked, never stamped: its writes may have landed after the listing), is read live.
- **Age**: a listing older than `LISTING_MAX_AGE_S` is read again, which bounds what a change made by hand in PTI
  can hide (the hourly drift sweep finds the rest, as it does today).
- **Other customers of the batch**: a plan that vacates a unit, takes one from another user or removes a user is
  planned again from live reads before it runs (the listing may predate another customer's move-in), and a write
  PTI refuses, or a look-up that is not plain (a stranger, a duplicate, a taken code), sends the customer to live
  reads too (`Reconcile` in `reconcile.py` decides).
Look-up-before-create stays live: after an uncertain create the user is looked up by its code, call by call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
import zlib
from collections.abc import Callable

import redis
from flask import current_app

from ..crypto import CredentialError, seal_bytes, unseal_bytes
from ..jobqueue import get_redis
from ..pti import PtiClient, PtiError, PtiPermanentError
from ..sync import DesiredUnit, DesiredUser, PtiUnit, PtiUser, UnitStatus

log = logging.getLogger(__name__)

LISTING_MAX_AGE_S = 60.0  # a batch reads its site again after this long
READER_TTL_S = 30  # the batch reading a site's listing for the others holds the reader key this long at most
READER_WAIT_S = 10.0  # how long a batch waits for another batch's reading of its site before reading it itself
READER_POLL_S = 0.1
SHARED_STALE_SHARE = 0.05  # a shared listing serves a batch when at most this share of its accounts was pushed since
TOUCHED_TTL_S = 6 * 3600  # longer than any batch (BATCH_JOB_TIMEOUT_S) can run
MISSING_UNIT = ("unit_not_found", "invalid_unit_name")

# Stamps the account with Redis's clock (microseconds), or as being pushed (ARGV[2]), and answers the stamp it held
# before: one round trip, and one clock for every worker on every machine.
_TOUCH = """
local before = redis.call('GET', KEYS[1])
local stamp = ARGV[2]
if stamp == '' then
  local now = redis.call('TIME')
  stamp = now[1] * 1000000 + now[2]
end
redis.call('SET', KEYS[1], stamp, 'EX', ARGV[1])
return before
"""
# The stamp of an account whose push has taken its lock and not let go (still running, or killed): later than any
# listing, so a listing read meanwhile never speaks for it; a killed push's writes may land after such a listing.
BEING_PUSHED = 2**62
_NOW = "local now = redis.call('TIME') return now[1] * 1000000 + now[2]"


def touched_key(account_id: int) -> str:
    return f"pti-sync:pti-touched:{account_id}"


def touch(account_id: int, pushing: bool = False) -> int | None:
    """Stamp the account: as being pushed (`pushing`: its push took the lock), else with the time now (its push let
    go); returns the stamp it held before (None: not stamped in TOUCHED_TTL_S; BEING_PUSHED: a push took the lock and
    never let go, so it was killed)."""
    before = get_redis().eval(_TOUCH, 1, touched_key(account_id), TOUCHED_TTL_S, BEING_PUSHED if pushing else "")
    return int(before) if before is not None else None


class LiveReads:
    """PTI read call by call, through the attempt's Caller (site guard, retries, lock check)."""

    listing = False

    def __init__(self, call, client: PtiClient) -> None:
        self.call, self.client = call, client

    def user(self, user_id: str) -> PtiUser | None:
        return self.call("get_user", self.client.get_user, user_id)

    def users_by_email(self, email: str) -> list[PtiUser]:
        return self.call("find_users_by_email", self.client.find_users_by_email, email)

    def user_by_code(self, code: int) -> PtiUser | None:
        return self.call("find_user_by_access_code", self.client.find_user_by_access_code, code)

    def unit(self, name: str) -> PtiUnit | None:
        """The unit, or None when PTI has none by that name."""
        try:
            return self.call("get_unit", self.client.get_unit, name)
        except PtiPermanentError as exc:
            if exc.reason not in MISSING_UNIT:
                raise
            return None


class SiteListing:
    """A site's users and units as PTI listed them, read from Redis's clock `read_at` (microseconds) on.

    E-mails match as PTI's look-up does (case-insensitive, the asked e-mail trimmed): a guess, docs/pti-contract.md."""

    listing = True

    def __init__(self, users: list[PtiUser], units: list[PtiUnit], read_at: int) -> None:
        self.read_at, self.read_monotonic = read_at, time.monotonic()
        self.by_id = {u.id: u for u in users}
        self.by_email: dict[str, list[PtiUser]] = {}
        self.by_code: dict[int, PtiUser] = {}
        for u in users:
            self.by_email.setdefault((u.email or "").lower(), []).append(u)
            if u.access_code is not None:
                self.by_code.setdefault(u.access_code, u)
        self.units = {u.name: u for u in units}

    def user(self, user_id: str) -> PtiUser | None:
        return self.by_id.get(user_id)

    def users_by_email(self, email: str) -> list[PtiUser]:
        return list(self.by_email.get(email.strip().lower(), ()))

    def user_by_code(self, code: int) -> PtiUser | None:
        return self.by_code.get(code)

    def unit(self, name: str) -> PtiUnit | None:
        return self.units.get(name)

    def fresh(self) -> bool:
        return time.monotonic() - self.read_monotonic < LISTING_MAX_AGE_S


class PushRecord(SiteListing):
    """What the account's last successful push left in PTI (pti_accounts.pushed), read as a listing of that one
    customer: their user and the units rented to it, locked or not.

    A lock or unlock owed since is planned from it and costs one PTI call, the lock itself, whose answer (the unit as
    PTI holds it after the call) must show the unit rented to the customer's user in the state asked for; any other
    answer, a refusal, or a plan that is more than locks and unlocks sends the customer to live reads
    (`reconcile._attempt` decides). What a change made by hand in PTI since that push can hide is what the hourly
    drift sweep finds, as for a batch's listing."""

    def __init__(self, user: PtiUser, units: list[PtiUnit]) -> None:
        super().__init__([user], units, read_at=0)
        self.user_id = user.id

    @classmethod
    def of(cls, pushed: dict | None, user_id: str | None, access_code: int | None, marker: str) -> PushRecord | None:
        """The record, when it still speaks for the account's user and code; None when it does not (or is unreadable:
        the record is ours, but a push must never fail over it)."""
        try:
            held = pushed["user"]
            if not user_id or held["id"] != user_id or held["access_code"] != access_code:
                return None
            names = tuple(sorted(pushed["units"]))
            user = PtiUser(id=user_id, email=held["email"], access_code=access_code,
                           access_level=held["access_level"], time_zone=held["time_zone"],
                           first_name=held["first_name"], last_name=held["last_name"], marker=marker, units=names)
            units = [PtiUnit(name, UnitStatus.RENTED, pushed["units"][name] is True, user_id) for name in names]
        except (KeyError, TypeError, AttributeError):
            return None
        return cls(user, units)

    def holds(self, answer: PtiUnit | None, locked: bool) -> bool:
        """Whether a lock or unlock's answer shows the unit rented to this user, locked as asked."""
        return (answer is not None and answer.status is UnitStatus.RENTED and answer.user_id == self.user_id
                and answer.locked is locked)


def push_record(user_id: str | None, user: DesiredUser | None, units: tuple[DesiredUnit, ...]) -> dict | None:
    """What a push that applied its whole plan left in PTI, for `pti_accounts.pushed` (see PushRecord)."""
    if user_id is None or user is None:
        return None
    return {"user": {"id": user_id, "email": user.email, "first_name": user.first_name, "last_name": user.last_name,
                     "access_code": user.access_code, "access_level": user.access_level, "time_zone": user.time_zone},
            "units": {unit.name: unit.locked for unit in units}}


class BatchReads:
    """One bulk batch's listing of its site, shared by the batch's threads; read on first use and when it ages.

    `for_account` answers the listing for an account nobody pushed since it was read, else live reads. A site whose
    listing cannot be read (PTI down, a malformed page) is read live for the rest of the batch.

    The listing is shared with the site's other batches too, in every worker (`SharedListings`): a site's push runs
    as several batches, and each listed its site (a page of users a hundred customers, and the units): a push of
    customers already in sync cost 0.040 PTI calls a rental, most of it listing the same site again; shared, 0.010
    (`bulk_push`, docs/benchmarks.md). A shared listing is trusted by the same rule as the batch's own, since every
    push stamps its account with Redis's clock."""

    def __init__(self, account_ids: list[int] = ()) -> None:
        self._stamps = self._stamps_of(list(account_ids))  # before this batch pushes any of them
        self._lock = threading.Lock()
        self._listing: SiteListing | None = None
        self._unreadable = False
        self.reads = 0  # listings this batch read from PTI (for the journal and the benchmark)

    def for_account(self, call, client: PtiClient, last_touched: int | None) -> LiveReads | SiteListing:
        live = LiveReads(call, client)
        with self._lock:
            if self._unreadable:
                return live
            if self._listing is None or not self._listing.fresh():
                shared = SharedListings(get_redis(), call.guard.site_id, client.base_url)
                listing = shared.take(self._speaks_for_batch)
                if listing is None:
                    try:
                        listing = self._read(call, client)
                    except PtiError as exc:  # a malformed listing (a PTI that cannot answer raises Retry: next
                        log.warning("PTI's users and units could not be listed (%s): this batch reads them one by "
                                    "one", exc.reason)  # account)
                        self._unreadable = True
                        return live
                    finally:
                        if listing is None:  # whatever stopped the reading: another batch may read at once
                            shared.give_up()
                    shared.keep(listing)
                self._listing = listing
            listing = self._listing
        if last_touched is not None and last_touched >= listing.read_at:
            return live  # pushed since the listing was read: what PTI holds for it now is not in the listing
        return listing

    @staticmethod
    def _stamps_of(account_ids: list[int]) -> list[int] | None:
        """When each account was last pushed (0: not lately), read as the batch starts; None when Redis cannot say."""
        if not account_ids:
            return []
        try:
            return [int(stamp or 0) for stamp in get_redis().mget([touched_key(a) for a in account_ids])]
        except redis.RedisError as exc:
            log.info("the batch's accounts' push stamps could not be read (%s): it reads its site itself",
                     exc.__class__.__name__)
            return None

    def _speaks_for_batch(self, read_at: int) -> bool:
        """Whether a listing another batch read at `read_at` speaks for most of this batch: of its accounts, at most
        SHARED_STALE_SHARE were pushed after it was read and before this batch started (those would be read live in
        any case). A listing from before an earlier push of these same accounts (a site pushed twice within a minute)
        would send them all to live reads: this batch reads PTI again instead."""
        if self._stamps is None:
            return False
        stale = sum(1 for stamp in self._stamps if stamp >= read_at)
        return stale <= SHARED_STALE_SHARE * len(self._stamps)

    def _read(self, call, client: PtiClient) -> SiteListing:
        read_at = int(get_redis().eval(_NOW, 0))
        users = call("list_users", client.list_users)
        units = call("list_units", client.list_units)
        self.reads += 1
        return SiteListing(users, units, read_at)


class SharedListings:
    """A site's latest listing, kept in Redis for the site's other batches until it is LISTING_MAX_AGE_S old,
    sealed with ENCRYPTION_KEYS (it holds every access code of the site) and compressed.

    `take` answers a listing still fresh by Redis's clock; when there is none, one batch of the site reads PTI (it
    holds the reader key) while the others wait up to READER_WAIT_S for what it keeps, then read for themselves. Only
    a saving: a Redis that cannot answer, a listing the keys cannot open or one in a shape this version does not read
    all mean "read PTI yourself"."""

    def __init__(self, conn, site_id: int, pti_url: str) -> None:
        self.conn, self.site_id = conn, site_id
        where = hashlib.sha256(pti_url.encode()).hexdigest()[:12]  # a site moved to another PTI lists anew
        self.key, self.reader_key = f"pti-sync:listing:{site_id}:{where}", f"pti-sync:listing-reader:{site_id}"
        self.reading = False

    def take(self, usable: Callable[[int], bool]) -> SiteListing | None:
        """A fresh listing of the site from another batch, when `usable` (given when it was read) says it speaks for
        the batch; None when this batch must read PTI itself (then it holds the reader key when nobody else did, and
        must `keep` or `give_up`)."""
        try:
            deadline = time.monotonic() + READER_WAIT_S
            judged: dict[int, bool] = {}  # read_at → usable: asked once a listing, opened only when usable

            def once(read_at: int) -> bool:
                if read_at not in judged:
                    judged[read_at] = usable(read_at)
                    if not judged[read_at]:
                        log.info("site %s: the shared PTI listing does not speak for this batch (its accounts were "
                                 "pushed since it was read): it reads PTI", self.site_id)
                return judged[read_at]

            while True:
                listing = self._fresh(once)
                if listing is not None:
                    return listing
                if self.conn.set(self.reader_key, 1, nx=True, ex=READER_TTL_S):
                    self.reading = True
                    return None
                if time.monotonic() >= deadline:
                    return None
                time.sleep(READER_POLL_S)
        except (redis.RedisError, CredentialError, zlib.error, ValueError, KeyError, TypeError) as exc:
            log.info("site %s: no shared PTI listing (%s): this batch reads PTI", self.site_id,
                     exc.__class__.__name__)
            return None

    def keep(self, listing: SiteListing) -> None:
        """Share what this batch read, until it is LISTING_MAX_AGE_S old."""
        try:
            body = json.dumps({"users": [dataclasses.asdict(u) for u in listing.by_id.values()],
                               "units": [dataclasses.asdict(u) for u in listing.units.values()]},
                              separators=(",", ":")).encode()
            sealed = seal_bytes(current_app.config["ENCRYPTION_KEYS"], zlib.compress(body, 1))
            with self.conn.pipeline() as pipe:  # when it was read, in clear before the sealed listing
                pipe.set(self.key, b"%d:%s" % (listing.read_at, sealed), px=int(LISTING_MAX_AGE_S * 1000))
                if self.reading:
                    pipe.delete(self.reader_key)
                pipe.execute()
            self.reading = False
        except (redis.RedisError, CredentialError) as exc:
            log.info("site %s: the PTI listing could not be shared (%s)", self.site_id, exc.__class__.__name__)

    def give_up(self) -> None:
        """This batch could not read PTI: another may try at once."""
        if self.reading:
            try:
                self.conn.delete(self.reader_key)
            except redis.RedisError:
                pass  # it lapses after READER_TTL_S
            self.reading = False

    def _fresh(self, usable: Callable[[int], bool]) -> SiteListing | None:
        """The site's shared listing when it is younger than LISTING_MAX_AGE_S by Redis's clock and `usable`."""
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.get(self.key)
            pipe.eval(_NOW, 0)
            stored, now = pipe.execute()
        if stored is None:
            return None
        read_at, _, sealed = stored.partition(b":")
        read_at = int(read_at)
        age_s = (int(now) - read_at) / 1_000_000
        if age_s < 0:  # Redis's clock went back since it was read: it cannot say how old the listing is
            log.info("site %s: the shared PTI listing was read %.3f s from now by Redis's clock", self.site_id,
                     -age_s)
        if not 0 <= age_s < LISTING_MAX_AGE_S or not usable(read_at):
            return None
        data = json.loads(zlib.decompress(unseal_bytes(current_app.config["ENCRYPTION_KEYS"], sealed)))
        users = [PtiUser(**{**fields, "units": tuple(fields["units"])}) for fields in data["users"]]
        units = [PtiUnit(**{**fields, "status": UnitStatus(fields["status"])}) for fields in data["units"]]
        listing = SiteListing(users, units, read_at)
        listing.read_monotonic -= age_s  # it ages from when it was read, not from now
        return listing
