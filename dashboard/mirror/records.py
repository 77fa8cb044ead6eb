"""The mirror's records: Storeganise records (Admin API shape) landed in our tables, and what each change owes PTI.

Every path that brings a record (webhook handlers, the import, the incremental pull, the demo seed) lands it here,
so a change means the same thing whichever path noticed it. Only *inputs* of the sync count as changes (unit names,
overrides, rental state, pti_synced, pti_overlocked...); the fields we write back ourselves (pti_access_code,
pti_user_id) never do, and our own write-backs reach the mirror before Storeganise, so their echo finds nothing
changed: no loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from flask import current_app
from sqlalchemy import select

from ..clients import addon_id, site_credentials
from ..crypto import PtiCredentials, seal
from ..engine import problems, writeback
from ..engine.intent import lock_accounts, mark_dirty, request_reconcile
from ..engine.problems import BAD_VALUE
from ..extensions import db, insert_or_skip
from ..models import ACTIVE_RENTAL_STATES, Customer, OpenProblem, PtiAccount, Rental, Site, Unit, utcnow
from ..storeganise import StoreganiseClient, StoreganiseError
from ..storeganise.fields import EMPTY_UNIT_USES_UNIT_NAME, UNIT_SWITCHED_OFF, FieldCodes
from ..storeganise.values import ValueProblem, localised, read_bool, read_datetime, read_int, read_text

SITE_INPUTS = ("pti_base_url", "pti_site_code", "pti_credentials", "default_access_level", "default_zone")
UNIT_INPUTS = ("site_id", "pti_unit_name", "pti_switched_off")
CUSTOMER_INPUTS = ("email", "first_name", "last_name", "access_level_override", "zone_override")
RENTAL_INPUTS = ("site_id", "unit_id", "customer_id", "state", "overdue", "overlocked", "pti_synced")
USER_ID_CHUNK = 50  # ids per `GET users?ids=` request
log = logging.getLogger(__name__)


class PushHere(Protocol):
    """The job handling a delivery, pushing the urgent accounts it marked itself and writing their results back
    (jobs/events.py); a pti_overlocked flip its write-back carried, or that its process's write-back thread took
    over, is taken out of `overlocks`."""

    job_id: str

    def __call__(self, account_ids: list[int], trigger: str, overlocks: dict[str, bool]) -> None: ...


def parse_time(value) -> datetime | None:
    """A Storeganise timestamp (`2023-09-13T10:00:00.000Z`) as a naive UTC datetime; ValueProblem when unreadable."""
    return read_datetime(value)


def _codes() -> FieldCodes:
    return current_app.config["STOREGANISE_FIELDS"]


class Fields:
    """One record's values, each read by one of the shared lenient rules (storeganise/values.py) handed to it.

    A custom field (`read`) that still cannot be read keeps what the mirror held (`keep`) and is collected in
    `problems`, field by field, for `Effects.note_problems` to record on the record: one bad value never stops the
    record or the records around it. One of Storeganise's own fields (`own`: a title, a flag, a timestamp) that cannot
    be read falls back to `otherwise` instead: Storeganise writes those itself, so staff have nothing to fix.
    """

    def __init__(self, data: dict) -> None:
        raw = data.get("customFields")
        self.data = data
        self.raw = raw if isinstance(raw, dict) else {}
        self.problems: dict[str, ValueProblem] = {}

    def own(self, reader, key: str, otherwise=None):
        try:
            return reader(self.data.get(key))
        except ValueProblem:
            return otherwise

    def read(self, reader, code: str, keep=None, *, secret: bool = False):
        try:
            return reader(self.raw.get(code))
        except ValueProblem as exc:
            if secret:  # never echo a credential, not even a bad one
                exc = ValueProblem("(hidden)", exc.message, exc.fix)
            exc.field = code
            self.problems[code] = exc
            return keep


def by_sg_id(model, sg_id: str):
    return db.session.scalar(select(model).where(model.sg_id == sg_id))


def values(row, fields: tuple[str, ...]) -> tuple | None:
    return None if row is None else tuple(getattr(row, name) for name in fields)


def _row(model, data: dict, row, **new):
    """The row to land `data` on: `row`, or a new one added to the session."""
    if row is None:
        row = model(sg_id=data["id"], **new)
        db.session.add(row)
    return row


def _assign(row, **changes) -> None:
    for key, value in changes.items():
        if getattr(row, key) != value:
            setattr(row, key, value)


@dataclass
class Effects:
    """What landing records owes: accounts to push, problems to report and pti_overlocked values to write back, all
    delivered after the commit, in one step (`deliver`)."""

    accounts: dict[tuple[int, int], PtiAccount] = field(default_factory=dict)
    overlocks: dict[str, bool] = field(default_factory=dict)  # rental sg_id -> pti_overlocked Storeganise lacks
    new_problems: int = 0  # values that cannot be read, now shown on their record and owed to Storeganise
    # The unreadable values standing on records about to land, read for all of them at once (`read_standing`):
    # (entity, record sg_id) -> rows. A record not in it is read on its own, by the same `read_standing`.
    standing: dict[tuple[str, str], list[OpenProblem]] = field(default_factory=dict)

    def read_standing(self, records: list[tuple[str, str]]) -> None:
        """One read of the unreadable values standing on these (entity, sg_id) records, for `note_problems`: a
        rental, its unit and its owner landing together cost one statement, not three."""
        for key in records:
            self.standing[key] = []
        rows = db.session.scalars(select(OpenProblem).where(
            OpenProblem.record_sg_id.in_({sg_id for _, sg_id in records}), OpenProblem.reason == BAD_VALUE))
        for row in rows:
            if (row.entity, row.record_sg_id) in self.standing:
                self.standing[(row.entity, row.record_sg_id)].append(row)

    def mark(self, customer_id: int, site_id: int, *, urgent: bool = False) -> None:
        """Mark once per customer and site (a second mark only raises the urgency)."""
        account = self.accounts.get((customer_id, site_id))
        if account is None:
            self.accounts[(customer_id, site_id)] = mark_dirty(customer_id, site_id, urgent=urgent)
        elif urgent:
            account.urgent = True

    def mark_active_rentals(self, *, customer_id: int | None = None, unit_id: int | None = None,
                            site_id: int | None = None) -> None:
        """Mark every customer with an active rental matching the filter (their inputs changed)."""
        stmt = select(Rental.customer_id, Rental.site_id).where(Rental.state.in_(ACTIVE_RENTAL_STATES)).distinct()
        if customer_id is not None:
            stmt = stmt.where(Rental.customer_id == customer_id)
        if unit_id is not None:
            stmt = stmt.where(Rental.unit_id == unit_id)
        if site_id is not None:
            stmt = stmt.where(Rental.site_id == site_id)
        for row in db.session.execute(stmt):
            self.mark(row.customer_id, row.site_id)

    def note_problems(self, fields: Fields, entity: str, sg_id: str, site: Site | None, *,
                      target: tuple[str, str] | None, subject: str) -> None:
        """Record the unreadable values of the record (of `site`, when it belongs to one) as problems, shown on its
        page and raised in Storeganise on `target` (None: where the site's settings live, see
        `problems.settings_target`), and close those of its values that read well now: in the landing's own
        transaction. The new ones are counted, for the delivery to ask for their report.

        The mirror keeps these rows itself (the register's other problems are the engine's): one read of what stands
        by the indexed record id, cheap when nothing does, and an insert only for a value newly unreadable."""
        if target is None:
            known = addon_id()
            target = ("addon", known) if known else ("site", site.sg_id)
        wanted = {f"value:{entity}:{sg_id}:{code}": f"{code} is {exc.value}: {exc.message} {exc.fix}"
                  for code, exc in fields.problems.items()}
        if (entity, sg_id) not in self.standing:
            self.read_standing([(entity, sg_id)])
        standing = self.standing.pop((entity, sg_id))
        for row in standing:
            if row.cause in wanted:
                row.detail = wanted.pop(row.cause)
            else:
                db.session.delete(row)
        for cause, detail in wanted.items():
            # Another worker may land the same record at the same moment: the first row stands.
            added = db.session.scalar(insert_or_skip(OpenProblem, "cause").returning(OpenProblem.id).values(
                cause=cause, reason=BAD_VALUE, entity=entity, record_sg_id=sg_id, target_type=target[0],
                target_id=target[1], subject=subject, detail=detail, site_id=site.id if site else None,
                opened_at=utcnow()))
            self.new_problems += added is not None

    def deliver(self, client: StoreganiseClient, trigger: str, *, bulk: bool = False,
                push_here: PushHere | None = None) -> tuple[int, int]:
        """After the commit: ask for the pushes and the new problems' report, then write the owed pti_overlocked
        values back to Storeganise. With `push_here` (a delivery's job), the urgent pushes (a lock or an unlock)
        run in that job at once, before the write-back, instead of waiting for a job and a free worker of their own,
        and that job's process writes their results back too (on its write-back thread, which takes the flips over
        with them: jobs/after_gate.py): one PUT a rental carries the flip with them, not two.

        Returns (reconcile jobs enqueued or pushed here, pti_overlocked values written here)."""
        held: list[int] = []
        enqueued = request_reconcile(list(self.accounts.values()), trigger=trigger, bulk=bulk,
                                     hold=push_here.job_id if push_here else None, held=held)
        if held:
            try:
                push_here(held, trigger, self.overlocks)
            except Exception:  # noqa: BLE001 - the intent is committed: the relay pushes what this did not
                log.exception("pushing accounts %s in the delivery's job failed; the relay takes them over", held)
        if self.new_problems:
            problems.request_reports()
        return enqueued, writeback.write_overlocks(client, self.overlocks)


# --- landing one record --------------------------------------------------------------------------------------
# `land_*` writes a record onto its row (created when `row` is None) and returns the row; `apply_*` lands it, notes
# its unreadable values and marks the customers whose inputs changed. The demo seed lands records without marking
# anyone.


def land_site(data: dict, site: Site | None, fields: Fields | None = None) -> Site:
    site = _row(Site, data, site)
    fields, codes = fields or Fields(data), _codes()
    secrets = tuple(fields.read(read_text, code, secret=True)
                    for code in (codes.site_key, codes.site_username, codes.site_password))
    _assign(
        site,
        code=_plain(data.get("code")) or data["id"],
        title=fields.own(localised, "title") or _plain(data.get("code")) or data["id"],
        pti_base_url=fields.read(read_text, codes.site_base_url, site.pti_base_url),
        pti_site_code=fields.read(read_text, codes.site_code, site.pti_site_code),
        default_access_level=fields.read(read_int, codes.site_access_level, site.default_access_level),
        default_zone=fields.read(read_int, codes.site_zone, site.default_zone),
    )
    # Re-seal only when the credentials differ: compare by decrypting what we hold.
    if all(secrets) and site_credentials(site) != PtiCredentials(*secrets):
        site.pti_credentials = seal(current_app.config["ENCRYPTION_KEYS"], site.sg_id, PtiCredentials(*secrets))
    return site


def land_unit(data: dict, site: Site, unit: Unit | None, fields: Fields | None = None) -> Unit:
    unit = _row(Unit, data, unit, site=site)
    fields = fields or Fields(data)
    name = _plain(data.get("name")) or data["id"]
    pti_name = fields.read(read_text, _codes().unit_name, unit.pti_unit_name)
    switched_off = pti_name is not None and pti_name.upper() == UNIT_SWITCHED_OFF
    if pti_name is None and current_app.config["PTI_EMPTY_UNIT_NAME"] == EMPTY_UNIT_USES_UNIT_NAME:
        pti_name = name
    _assign(unit, site_id=site.id, name=name, state=_plain(data.get("state")) or "available",
            pti_unit_name=None if switched_off else pti_name, pti_switched_off=switched_off)
    return unit


def land_customer(data: dict, customer: Customer | None, fields: Fields | None = None) -> Customer:
    customer = _row(Customer, data, customer)
    fields, codes = fields or Fields(data), _codes()
    _assign(
        customer,
        email=(_plain(data.get("email")) or "").lower(),
        first_name=_plain(data.get("firstName")) or "",
        last_name=_plain(data.get("lastName")) or "",
        overdue=bool(data.get("overdue")),  # a timestamp while any active rental is overdue, else null
        # While staff's own change is still owed to Storeganise, Storeganise holds the older value: keep ours.
        access_level_override=customer.access_level_override if customer.overrides_owed else
        fields.read(read_int, codes.user_access_level, customer.access_level_override),
        zone_override=customer.zone_override if customer.overrides_owed else
        fields.read(read_int, codes.user_zone, customer.zone_override),
        pti_access_code=fields.read(read_int, codes.user_access_code, customer.pti_access_code),
        pti_user_id=fields.read(read_text, codes.user_pti_id, customer.pti_user_id),
    )
    return customer


def land_rental(data: dict, site: Site, unit: Unit, customer: Customer, rental: Rental | None,
                fields: Fields | None = None) -> Rental:
    rental = _row(Rental, data, rental, site=site, unit=unit, customer=customer)
    fields, codes = fields or Fields(data), _codes()
    overlocked = fields.read(read_bool, codes.rental_overlocked, rental.overlocked)
    _assign(
        rental,
        site_id=site.id,
        unit_id=unit.id,
        customer_id=customer.id,
        state=_plain(data.get("state")) or "occupied",
        overdue=bool(fields.own(read_bool, "overdue", data.get("overdue"))),
        overlocked=bool(overlocked),  # not set: not overlocked (the field's default)
        pti_synced=fields.read(read_datetime, codes.rental_synced, rental.pti_synced),
    )
    rental.sg_updated = fields.own(read_datetime, "updated")
    return rental


def _plain(value) -> str | None:
    """A field of Storeganise's own (not a custom field): text, or None when it is missing or not text."""
    return value.strip() or None if isinstance(value, str) else None


def _apply(model, inputs: tuple[str, ...], data: dict, fx: Effects, land, *, entity: str, flush: bool = True):
    """Land `data` on its row (`land(existing row or None, fields)`), note its unreadable values and, when one of its
    `inputs` changed, mark the customers of its active rentals. `land` also names, for the row it landed, the site
    its problems belong to, the record they are raised on (None: the site's settings), and how staff read it."""
    existing = by_sg_id(model, data["id"])
    before = values(existing, inputs)
    row, site, target, subject = land(existing, fields := Fields(data))
    if flush:
        db.session.flush()
    fx.note_problems(fields, entity, row.sg_id, site, target=target, subject=subject)
    if existing is not None and values(row, inputs) != before:
        fx.mark_active_rentals(**{f"{entity}_id": row.id})
    return row


def apply_site(data: dict, fx: Effects) -> Site:
    def land(existing, fields):
        site = land_site(data, existing, fields)
        return site, site, None, f"site {site.title}"

    return _apply(Site, SITE_INPUTS, data, fx, land, entity="site")


def apply_unit(data: dict, site: Site, fx: Effects, *, flush: bool = True) -> Unit:
    def land(existing, fields):
        unit = land_unit(data, site, existing, fields)
        return unit, site, ("unit", unit.sg_id), f"unit {unit.name} at {site.title}"

    return _apply(Unit, UNIT_INPUTS, data, fx, land, entity="unit", flush=flush)


def apply_customer(data: dict, fx: Effects, *, flush: bool = True) -> Customer:
    def land(existing, fields):
        customer = land_customer(data, existing, fields)
        return customer, None, ("user", customer.sg_id), f"customer {customer.name} ({customer.email})"

    return _apply(Customer, CUSTOMER_INPUTS, data, fx, land, entity="customer", flush=flush)


def apply_rental(data: dict, site: Site, unit: Unit, customer: Customer, fx: Effects, *,
                 overdue_event: bool = False, flush: bool = True) -> Rental:
    """Land a rental and mark its customer when an input changed.

    The overdue flag drives pti_overlocked: when it flips (or on an overdue event) the rental's lock follows it and
    Storeganise's pti_overlocked is written back. Otherwise pti_overlocked is what staff set: a change of it is a
    manual suspend or unsuspend, and urgent. While a value of ours is still owed to Storeganise (`overlock_owed_at`,
    or the Redis memo of a write on its way), a copy carrying the other value predates our write: ours is kept.
    """
    existing, fields = by_sg_id(Rental, data["id"]), Fields(data)
    copy_updated = fields.own(read_datetime, "updated")
    if existing is not None and existing.sg_updated and copy_updated and copy_updated < existing.sg_updated:
        # Read before a change the mirror already holds (an import or pull that listed the rental before an overdue
        # event was handled, a handler slower than the next one): landing it would undo that change. Storeganise's
        # `updated` only grows.
        return existing
    before = values(existing, RENTAL_INPUTS)
    was_active = existing is not None and existing.active
    old_owner = (existing.customer_id, existing.site_id) if existing is not None else None
    if flush and existing is not None:  # one record at a time (an event, a pull): its accounts before the rental
        lock_accounts([(customer.id, site.id)] + ([old_owner] if old_owner else []))
    overdue_before = existing.overdue if existing is not None else None
    # Ours, not yet accepted by Storeganise: a job killed before its PUT, or Storeganise unreachable since.
    owed = existing.overlocked if existing is not None and existing.overlock_owed_at is not None else None
    rental = land_rental(data, site, unit, customer, existing, fields)
    fx.note_problems(fields, "rental", rental.sg_id, site, target=("unit", unit.sg_id),
                     subject=f"the rental of unit {unit.name} at {site.title} by {customer.name}")
    stored_overlock = rental.overlocked  # what Storeganise holds in pti_overlocked
    on_its_way = writeback.overlock_on_its_way(rental.sg_id, rental.sg_updated)
    if overdue_event or (overdue_before is not None and overdue_before != rental.overdue):
        rental.overlocked = rental.overdue
    elif on_its_way is not None and stored_overlock != on_its_way:
        # This copy predates the pti_overlocked we wrote or are writing (a payment right after an overdue, or a
        # second handler landing what it read before our PUT): its value is our own past, not a person's
        # (un)suspend. Keep ours; Storeganise has it or is being sent it, so nothing more to write.
        rental.overlocked = stored_overlock = on_its_way
    elif owed is not None and stored_overlock != owed:
        # The memo is gone (a write that never landed outlives it), the database still says ours is owed: the relay
        # writes it (`writeback.write_owed_overlocks`); this copy's value is the one it replaces, not a person's.
        rental.overlocked = stored_overlock = owed
    if rental.overlocked != stored_overlock:
        fx.overlocks[rental.sg_id] = rental.overlocked
        rental.overlock_owed_at = utcnow()  # owed from this transaction until Storeganise accepts it
        writeback.note_overlock_on_its_way(rental.sg_id, rental.overlocked)
    if flush:
        db.session.flush()
    after = values(rental, RENTAL_INPUTS)
    if not (rental.active or was_active):
        return rental
    lock_changed = before is None or before[RENTAL_INPUTS.index("overlocked")] != rental.overlocked
    if overdue_event or after != before:
        fx.mark(rental.customer_id, rental.site_id, urgent=overdue_event or (lock_changed and existing is not None))
    if old_owner is not None and was_active and old_owner != (rental.customer_id, rental.site_id):
        fx.mark(*old_owner)
    return rental


# --- fetching what the mirror needs from Storeganise ---------------------------------------------------------


def with_addon_settings(client: StoreganiseClient, sites: list[dict]) -> list[dict]:
    """The sites with the PTI add-on's per-site settings laid over their own custom fields, when the business has
    the add-on (the newer PTI add-on keeps the connection there; older set-ups keep it on the site). The add-on's
    layout, settings keyed by Storeganise site id, is our guess (docs/storeganise.md)."""
    known = addon_id()
    if not known:
        return sites
    try:
        per_site = client.get_addon(known).get("customFields")
    except StoreganiseError as exc:
        log.warning("the PTI add-on's settings cannot be read (%s): using the sites' own fields", exc.reason)
        return sites
    per_site = per_site if isinstance(per_site, dict) else {}
    return [{**site, "customFields": {**(site.get("customFields") or {}), **per_site[site["id"]]}}
            if isinstance(per_site.get(site["id"]), dict) else site for site in sites]


def ensure_site(client: StoreganiseClient, sg_id: str, fx: Effects) -> Site:
    return by_sg_id(Site, sg_id) or apply_site(with_addon_settings(client, [client.get_site(sg_id)])[0], fx)


def ensure_unit(client: StoreganiseClient, sg_id: str, fx: Effects) -> Unit:
    unit = by_sg_id(Unit, sg_id)
    if unit is None:
        data = client.get_unit(sg_id)
        unit = apply_unit(data, ensure_site(client, data["siteId"], fx), fx)
    return unit


def fetch_customers(client: StoreganiseClient, sg_ids: set[str], fx: Effects, *, refresh: bool) -> dict[str, Customer]:
    """The customers with these ids, read from Storeganise in chunks: all of them (`refresh`, as the import does),
    or only those the mirror does not hold yet. LookupError when Storeganise does not return some of them."""
    known = {} if refresh else {c.sg_id: c for c in db.session.scalars(
        select(Customer).where(Customer.sg_id.in_(sg_ids)))}
    wanted = sorted(sg_ids - known.keys())
    with db.session.no_autoflush:  # one flush for the lot: the ids are needed only once all have landed
        for start in range(0, len(wanted), USER_ID_CHUNK):
            for data in client.list_users(ids=wanted[start:start + USER_ID_CHUNK]):
                known[data["id"]] = apply_customer(data, fx, flush=False)
    db.session.flush()
    missing = sg_ids - known.keys()
    if missing:
        raise LookupError(f"Storeganise did not return the owners of some rentals: {', '.join(sorted(missing))}.")
    return known


def refresh_rental(client: StoreganiseClient, rental_sg_id: str, fx: Effects, *, overdue_event: bool = False) -> Rental:
    """Re-read one rental with its unit and owner, and land all three in the mirror."""
    data = client.get_unit_rental(rental_sg_id, include=("unit", "owner", "customFields"))
    site = ensure_site(client, data["siteId"], fx)
    unit_data = data.get("unit") or client.get_unit(data["unitId"])
    owner_data = data.get("owner") or client.get_user(data["ownerId"])
    fx.read_standing([("unit", unit_data["id"]), ("customer", owner_data["id"]), ("rental", data["id"])])
    unit = apply_unit(unit_data, site, fx)
    customer = apply_customer(owner_data, fx)
    return apply_rental(data, site, unit, customer, fx, overdue_event=overdue_event)
