"""Filling and refreshing the mirror from Storeganise: the full import and the incremental pull.

`import_business` reads every site (with its PTI settings: secrets are sealed on arrival by records.land_site),
unit, rental and renting customer. `pull_changes` (every 5 minutes) reads every site again (their settings send no
webhook), and the units, users and rentals Storeganise changed since the last pull, each with its own cursor. Both
mark for a push every customer whose inputs changed, through the same rules as the webhook handlers
(dashboard/mirror/records.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import redis

from ..extensions import db
from ..jobqueue import get_redis
from ..models import Customer, SyncCursor, Unit, utcnow
from ..storeganise import StoreganiseClient
from ..storeganise.values import ValueProblem
from .records import (
    Effects,
    apply_customer,
    apply_rental,
    apply_site,
    apply_unit,
    by_sg_id,
    ensure_site,
    ensure_unit,
    fetch_customers,
    parse_time,
    with_addon_settings,
)

PULL_CURSOR = "storeganise:unit-rentals"
UNITS_CURSOR = "storeganise:units"
USERS_CURSOR = "storeganise:users"
# Re-read this much before the last pull: a change stamped just before it may have been committed just after.
PULL_OVERLAP = timedelta(seconds=60)
IMPORT_LOCK = "pti-sync:storeganise-import"
IMPORT_LOCK_TTL_S = 3600  # a crashed import frees the lock after this long
IMPORT_WAIT_S = 600  # how long an import waits for a running one

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class ImportReport:
    sites: int = 0
    units: int = 0
    customers: int = 0
    rentals: int = 0
    marked: int = 0  # customers (per site) marked for a push
    enqueued: int = 0  # reconcile jobs enqueued now (the relay delivers the rest)
    overlocks_written: int = 0
    seconds: float = 0.0
    full: bool = True
    customer_ids: set[str] = field(default_factory=set, repr=False)

    def summary(self) -> str:
        what = "Imported" if self.full else "Pulled"
        return (f"{what} {self.sites} sites, {self.units} units, {self.customers} customers, {self.rentals} rentals "
                f"in {self.seconds:.1f}s; {self.marked} customers marked for a push to PTI.")


def _quiet(message: str) -> None:
    return None


def _finish(report: ImportReport, fx: Effects, client: StoreganiseClient, started: float) -> ImportReport:
    """The last step of an import or a pull, once every record has landed: commit, then deliver what the landing
    owes (pushes asked for, problems reported, pti_overlocked values written back)."""
    db.session.commit()
    report.marked = len(fx.accounts)
    report.enqueued, report.overlocks_written = fx.deliver(client, "import" if report.full else "pull", bulk=True)
    report.seconds = time.monotonic() - started
    return report


def _stamp(record: dict) -> datetime | None:
    try:
        return parse_time(record.get("updated"))
    except ValueProblem:  # an unreadable stamp never holds the cursor back: the record itself still lands
        return None


def _advance(cursor_at: datetime | None, records: list[dict]) -> datetime | None:
    stamps = [t for t in map(_stamp, records) if t is not None]
    latest = max(stamps, default=None)
    if cursor_at is None or (latest is not None and latest > cursor_at):
        return latest
    return cursor_at


def _save_cursor(at: datetime | None, name: str = PULL_CURSOR) -> None:
    if at is None:
        return
    cursor = db.session.get(SyncCursor, name)
    if cursor is None:
        db.session.add(SyncCursor(name=name, at=at))
    else:
        cursor.at = at


class ImportBusy(RuntimeError):
    """Another import or pull is running (two at once would insert the same new records twice)."""


@contextmanager
def exclusive(wait_s: float):
    """Hold the import lock (Redis) for the duration; ImportBusy when another holder keeps it past `wait_s`.

    Without Redis the import still runs: two concurrent ones can only fail on a unique key, never corrupt data.
    """
    try:
        lock = get_redis().lock(IMPORT_LOCK, timeout=IMPORT_LOCK_TTL_S)
        acquired = lock.acquire(blocking=wait_s > 0, blocking_timeout=wait_s or None)
    except redis.RedisError as exc:
        log.warning("import lock unavailable (%s): importing without it", exc.__class__.__name__)
        yield
        return
    if not acquired:
        raise ImportBusy("Another import or pull from Storeganise is running; try again when it has finished.")
    try:
        yield
    finally:
        try:
            lock.release()
        except redis.RedisError:  # expired (a very long import) or Redis gone: nothing left to release
            pass


def import_business(client: StoreganiseClient, site_code: str | None = None, progress: Progress = _quiet, *,
                    wait_s: float = IMPORT_WAIT_S) -> ImportReport:
    """Import every site (or the one whose code or id is `site_code`) into the mirror; commits per site."""
    with exclusive(wait_s):
        started = time.monotonic()
        report, fx = _import(client, site_code, progress)
        return _finish(report, fx, client, started)


def _import(client: StoreganiseClient, site_code: str | None, progress: Progress) -> tuple[ImportReport, Effects]:
    sites = with_addon_settings(client, client.list_sites())
    if site_code is not None:
        sites = [s for s in sites if site_code in (s.get("code"), s["id"])]
        if not sites:
            raise LookupError(f"Storeganise has no site with the code or id {site_code!r}.")
    report, fx = ImportReport(), Effects()
    cursor_at, read_from = None, utcnow()
    for number, site_data in enumerate(sites, start=1):
        label = site_data.get("code") or site_data["id"]
        site = apply_site(site_data, fx)
        report.sites += 1
        units_data = client.list_units(site_id=site_data["id"])
        rentals = client.list_unit_rentals(site_id=site_data["id"])
        progress(f"[{number}/{len(sites)}] {label}: {len(units_data)} units, {len(rentals)} rentals")
        with db.session.no_autoflush:  # one flush per batch, not one per record: ids are needed only batch-wise
            units = {u["id"]: apply_unit(u, site, fx, flush=False) for u in units_data}
            db.session.flush()
            customers = fetch_customers(client, {r["ownerId"] for r in rentals}, fx, refresh=True)
            for rental_data in rentals:
                unit = units.get(rental_data["unitId"]) or ensure_unit(client, rental_data["unitId"], fx)
                apply_rental(rental_data, site, unit, customers[rental_data["ownerId"]], fx, flush=False)
        report.units += len(units)
        report.customer_ids.update(customers)
        report.rentals += len(rentals)
        cursor_at = _advance(cursor_at, rentals)
        site.last_import_at = utcnow()
        db.session.commit()
    report.customers = len(report.customer_ids)
    if site_code is None:  # a one-site import has not read the other sites' changes
        _save_cursor(cursor_at)
        for name in (UNITS_CURSOR, USERS_CURSOR):
            _save_cursor(read_from, name)
    return report, fx


def pull_changes(client: StoreganiseClient, progress: Progress = _quiet, *, wait_s: float = 0) -> ImportReport:
    """Read the rentals changed since the last pull (a full import when there has been none).

    By default it does not wait for a running import: ImportBusy, and the next scheduled pull catches up.
    """
    with exclusive(wait_s):
        started = time.monotonic()
        cursor = db.session.get(SyncCursor, PULL_CURSOR)
        report, fx = _import(client, None, progress) if cursor is None else _pull(client, cursor, progress)
        return _finish(report, fx, client, started)


def _pull(client: StoreganiseClient, cursor: SyncCursor, progress: Progress) -> tuple[ImportReport, Effects]:
    report, fx = ImportReport(full=False), Effects()

    def last(name: str) -> datetime:
        """Where this resource's pull stopped (a business pulled before units and users had cursors: the rentals')."""
        return (db.session.get(SyncCursor, name) or cursor).at

    def since(name: str) -> datetime:
        return (last(name) - PULL_OVERLAP).replace(tzinfo=UTC)

    # Settings: every site again (there are few), so a corrected PTI password or a new default zone reaches PTI
    # within one cycle; Storeganise sends no webhook for a site.
    sites = with_addon_settings(client, client.list_sites())
    for site_data in sites:
        apply_site(site_data, fx)
    # Units and customers Storeganise changed (a new PTI Unit Name, an override whose webhook was lost): only those
    # the mirror holds matter; a unit or customer it does not know yet arrives with its first rental.
    units = client.list_units(updated_after=since(UNITS_CURSOR))
    for unit_data in units:
        if by_sg_id(Unit, unit_data["id"]) is not None:
            apply_unit(unit_data, ensure_site(client, unit_data["siteId"], fx), fx)
    users = client.list_users(updated_after=since(USERS_CURSOR))
    for user_data in users:
        if by_sg_id(Customer, user_data["id"]) is not None:
            apply_customer(user_data, fx)
    rentals = client.list_unit_rentals(updated_after=since(PULL_CURSOR))
    customers = fetch_customers(client, {r["ownerId"] for r in rentals}, fx, refresh=False)
    for rental_data in rentals:
        site = ensure_site(client, rental_data["siteId"], fx)
        unit = ensure_unit(client, rental_data["unitId"], fx)
        apply_rental(rental_data, site, unit, customers[rental_data["ownerId"]], fx)
    report.sites = len(sites)
    report.units = len(units)
    report.customers = len(users) + len(customers)
    report.rentals = len(rentals)
    for name, records in ((PULL_CURSOR, rentals), (UNITS_CURSOR, units), (USERS_CURSOR, users)):
        _save_cursor(_advance(last(name), records), name)
    progress(f"Pulled {len(sites)} sites, {len(units)} changed units, {len(users)} changed users and "
             f"{len(rentals)} changed rentals")
    return report, fx
