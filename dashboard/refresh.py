"""Re-reading Storeganise records into the mirror and deciding which customers PTI now owes a push.

Shared by the webhook handlers, the import and the incremental pull, so a change means the same thing whichever
path noticed it. Only *inputs* of the sync count as changes (unit names, overrides, rental state, pti_synced,
pti_overlocked...); the fields we write back ourselves (pti_access_code, pti_user_id) never do, and our own
write-backs reach the mirror before Storeganise, so their echo finds nothing changed: no loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import redis
from sqlalchemy import select

from .extensions import db
from .intent import mark_dirty, request_reconcile
from .mirror import upsert_customer, upsert_rental, upsert_site, upsert_unit
from .models import ACTIVE_RENTAL_STATES, Customer, PtiAccount, Rental, Site, Unit
from .queue import get_redis
from .storeganise import StoreganiseClient, StoreganiseError

SITE_INPUTS = ("pti_base_url", "pti_site_code", "pti_credentials", "default_access_level", "default_zone")
UNIT_INPUTS = ("site_id", "pti_unit_name")
CUSTOMER_INPUTS = ("email", "first_name", "last_name", "access_level_override", "zone_override")
RENTAL_INPUTS = ("site_id", "unit_id", "customer_id", "state", "overdue", "overlocked", "pti_synced")


def values(row, fields: tuple[str, ...]) -> tuple | None:
    return None if row is None else tuple(getattr(row, name) for name in fields)


def by_sg_id(model, sg_id: str):
    return db.session.scalar(select(model).where(model.sg_id == sg_id))


@dataclass
class Effects:
    """What a refresh owes: accounts to push (after the commit) and pti_overlocked values to write back."""

    accounts: dict[tuple[int, int], PtiAccount] = field(default_factory=dict)
    overlocks: dict[str, bool] = field(default_factory=dict)  # rental sg_id -> pti_overlocked Storeganise lacks

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

    def reconcile(self, trigger: str, *, bulk: bool = False) -> int:
        """After the commit: ask for the pushes. Returns how many jobs were enqueued."""
        return request_reconcile(list(self.accounts.values()), trigger=trigger, bulk=bulk)

    def write_overlocks(self, client: StoreganiseClient) -> int:
        """After the commit (the mirror already holds these values, so the echo changes nothing): PUT them.

        Only an overdue flip puts a value here. If a PUT fails, the mirror forgets the flip of the rentals not
        written yet, so the retry (or the next pull) sees the flip again and writes pti_overlocked then, instead of
        mistaking Storeganise's old value for a manual unsuspend.
        """
        written = 0
        try:
            for rental_sg_id, overlocked in list(self.overlocks.items()):
                client.update_unit_rental_custom_fields(rental_sg_id, {"pti_overlocked": overlocked})
                del self.overlocks[rental_sg_id]
                forget_overlock_on_its_way(rental_sg_id)
                written += 1
        except StoreganiseError:
            for rental_sg_id in self.overlocks:
                forget_overlock_on_its_way(rental_sg_id)
            db.session.rollback()
            for rental in db.session.scalars(select(Rental).where(Rental.sg_id.in_(self.overlocks))):
                rental.overdue = not self.overlocks[rental.sg_id]
            db.session.commit()
            raise
        return written


# --- pti_overlocked values we are writing to Storeganise -----------------------------------------------------

ON_ITS_WAY_KEY = "pti-sync:sg-overlock-on-its-way:{rental}"
ON_ITS_WAY_TTL_S = 120  # longer than any write-back takes; a crashed write stops mattering after this


def note_overlock_on_its_way(rental_sg_id: str, overlocked: bool) -> None:
    """Before the mirror commits a flip we still have to PUT: until the PUT lands, Storeganise's value is stale."""
    try:
        get_redis().set(ON_ITS_WAY_KEY.format(rental=rental_sg_id), int(overlocked), ex=ON_ITS_WAY_TTL_S)
    except redis.RedisError:
        pass  # without Redis an echo may briefly look like a manual change; the next event or pull corrects it


def overlock_on_its_way(rental_sg_id: str) -> bool | None:
    try:
        value = get_redis().get(ON_ITS_WAY_KEY.format(rental=rental_sg_id))
    except redis.RedisError:
        return None
    return None if value is None else value == b"1"


def forget_overlock_on_its_way(rental_sg_id: str) -> None:
    try:
        get_redis().delete(ON_ITS_WAY_KEY.format(rental=rental_sg_id))
    except redis.RedisError:
        pass


# --- one record at a time ------------------------------------------------------------------------------------


def apply_site(data: dict, fx: Effects) -> Site:
    existing = by_sg_id(Site, data["id"])
    before = values(existing, SITE_INPUTS)
    site, _ = upsert_site(data)
    db.session.flush()
    if existing is not None and values(site, SITE_INPUTS) != before:
        fx.mark_active_rentals(site_id=site.id)
    return site


def apply_unit(data: dict, site: Site, fx: Effects, *, flush: bool = True) -> Unit:
    existing = by_sg_id(Unit, data["id"])
    before = values(existing, UNIT_INPUTS)
    unit, _ = upsert_unit(data, site)
    if flush:
        db.session.flush()
    if existing is not None and values(unit, UNIT_INPUTS) != before:
        fx.mark_active_rentals(unit_id=unit.id)
    return unit


def apply_customer(data: dict, fx: Effects, *, flush: bool = True) -> Customer:
    existing = by_sg_id(Customer, data["id"])
    before = values(existing, CUSTOMER_INPUTS)
    customer, _ = upsert_customer(data)
    if flush:
        db.session.flush()
    if existing is not None and values(customer, CUSTOMER_INPUTS) != before:
        fx.mark_active_rentals(customer_id=customer.id)
    return customer


def apply_rental(data: dict, site: Site, unit: Unit, customer: Customer, fx: Effects, *,
                 overdue_event: bool = False, flush: bool = True) -> Rental:
    """Upsert a rental and mark its customer when an input changed.

    The overdue flag drives pti_overlocked: when it flips (or on an overdue event) the rental's lock follows it and
    Storeganise's pti_overlocked is written back. Otherwise pti_overlocked is what staff set: a change of it is a
    manual suspend or unsuspend, and urgent.
    """
    existing = by_sg_id(Rental, data["id"])
    before = values(existing, RENTAL_INPUTS)
    was_active = existing is not None and existing.active
    old_owner = (existing.customer_id, existing.site_id) if existing is not None else None
    overdue_before = existing.overdue if existing is not None else None
    rental, _ = upsert_rental(data, site, unit, customer)
    stored_overlock = rental.overlocked  # what Storeganise holds in pti_overlocked
    on_its_way = overlock_on_its_way(rental.sg_id)
    if overdue_event or (overdue_before is not None and overdue_before != rental.overdue):
        rental.overlocked = rental.overdue
    elif on_its_way is not None and stored_overlock != on_its_way:
        # Storeganise has not received the pti_overlocked we are writing (a payment right after an overdue):
        # its value is our own older write, not a person's suspend. Keep ours; the write lands shortly.
        rental.overlocked = on_its_way
    if rental.overlocked != stored_overlock:
        fx.overlocks[rental.sg_id] = rental.overlocked
        note_overlock_on_its_way(rental.sg_id, rental.overlocked)
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


# --- fetching what the mirror does not know yet --------------------------------------------------------------


def ensure_site(client: StoreganiseClient, sg_id: str, fx: Effects) -> Site:
    return by_sg_id(Site, sg_id) or apply_site(client.get_site(sg_id), fx)


def ensure_unit(client: StoreganiseClient, sg_id: str, fx: Effects) -> Unit:
    unit = by_sg_id(Unit, sg_id)
    if unit is None:
        data = client.get_unit(sg_id)
        unit = apply_unit(data, ensure_site(client, data["siteId"], fx), fx)
    return unit


def ensure_customers(client: StoreganiseClient, sg_ids: set[str], fx: Effects,
                     chunk: int = 50) -> dict[str, Customer]:
    """The customers with these ids, fetching (in chunks) those the mirror does not hold yet."""
    known = {c.sg_id: c for c in db.session.scalars(select(Customer).where(Customer.sg_id.in_(sg_ids)))}
    missing = sorted(sg_ids - known.keys())
    for start in range(0, len(missing), chunk):
        for data in client.list_users(ids=missing[start:start + chunk]):
            known[data["id"]] = apply_customer(data, fx)
    return known


def refresh_rental(client: StoreganiseClient, rental_sg_id: str, fx: Effects, *, overdue_event: bool = False) -> Rental:
    """Re-read one rental with its unit and owner, and land all three in the mirror."""
    data = client.get_unit_rental(rental_sg_id, include=("unit", "owner", "customFields"))
    site = ensure_site(client, data["siteId"], fx)
    unit = apply_unit(data.get("unit") or client.get_unit(data["unitId"]), site, fx)
    customer = apply_customer(data.get("owner") or client.get_user(data["ownerId"]), fx)
    return apply_rental(data, site, unit, customer, fx, overdue_event=overdue_event)
