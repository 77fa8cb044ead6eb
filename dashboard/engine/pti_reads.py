"""How a reconcile reads PTI: call by call, from one listing of the site shared by a bulk batch, or, for a lock or
unlock, from what the customer's last push left there (`PushRecord`).

A single reconcile (an event, a staff action, the relay) looks the customer up call by call (`LiveReads`). A bulk
batch of a site's customers lists the site's users and units once (`BatchReads`) and plans every customer against
that listing (`SiteListing`), so a customer already in sync costs no PTI call at all and a first push costs its
writes alone. The listing is trusted only where nothing can have changed it behind the batch's back:

- **Our own pushes**: every reconcile stamps its account, with Redis's clock, when it takes the account's lock and
  again when it lets go (`touch`). A customer pushed by anyone since the listing was read is read live.
- **Age**: a listing older than `LISTING_MAX_AGE_S` is read again, which bounds what a change made by hand in PTI
  can hide (the hourly drift sweep finds the rest, as it does today).
- **Other customers of the batch**: a plan that vacates a unit, takes one from another user or removes a user is
  planned again from live reads before it runs (the listing may predate another customer's move-in), and a write
  PTI refuses, or a look-up that is not plain (a stranger, a duplicate, a taken code), sends the customer to live
  reads too (`Reconcile` in `reconcile.py` decides).
Look-up-before-create stays live: after an uncertain create the user is looked up by its code, call by call.
"""

from __future__ import annotations

import logging
import threading
import time

from ..jobqueue import get_redis
from ..pti import PtiClient, PtiError, PtiPermanentError
from ..sync import DesiredUnit, DesiredUser, PtiUnit, PtiUser, UnitStatus

log = logging.getLogger(__name__)

LISTING_MAX_AGE_S = 60.0  # a batch reads its site again after this long
TOUCHED_TTL_S = 6 * 3600  # longer than any batch (BATCH_JOB_TIMEOUT_S) can run
MISSING_UNIT = ("unit_not_found", "invalid_unit_name")

# Stamps the account with Redis's clock (microseconds) and answers the stamp it held before: one round trip, and one
# clock for every worker on every machine.
_TOUCH = """
local now = redis.call('TIME')
local before = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], now[1] * 1000000 + now[2], 'EX', ARGV[1])
return before
"""
_NOW = "local now = redis.call('TIME') return now[1] * 1000000 + now[2]"


def touched_key(account_id: int) -> str:
    return f"pti-sync:pti-touched:{account_id}"


def touch(account_id: int) -> int | None:
    """Stamp the account as being pushed now; returns when it was last stamped (None: not in TOUCHED_TTL_S)."""
    before = get_redis().eval(_TOUCH, 1, touched_key(account_id), TOUCHED_TTL_S)
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
    listing cannot be read (PTI down, a malformed page) is read live for the rest of the batch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listing: SiteListing | None = None
        self._unreadable = False
        self.reads = 0  # listings read (for the journal and the benchmark)

    def for_account(self, call, client: PtiClient, last_touched: int | None) -> LiveReads | SiteListing:
        live = LiveReads(call, client)
        with self._lock:
            if self._unreadable:
                return live
            if self._listing is None or not self._listing.fresh():
                try:
                    read_at = int(get_redis().eval(_NOW, 0))
                    users = call("list_users", client.list_users)
                    units = call("list_units", client.list_units)
                except PtiError as exc:  # a malformed listing (a PTI that cannot answer raises Retry: next account)
                    log.warning("PTI's users and units could not be listed (%s): this batch reads them one by one",
                                exc.reason)
                    self._unreadable = True
                    return live
                self._listing = SiteListing(users, units, read_at)
                self.reads += 1
            listing = self._listing
        if last_touched is not None and last_touched >= listing.read_at:
            return live  # pushed since the listing was read: what PTI holds for it now is not in the listing
        return listing
