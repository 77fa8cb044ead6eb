"""The mirror: Storeganise records (Admin API shape) upserted into our tables.

Used by the import, the incremental pull, the webhook handlers and the demo seed, so a record lands the same
way whichever path brought it. Each upsert returns the row and whether anything PTI cares about changed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import current_app
from sqlalchemy import select

from .connections import current_credentials
from .crypto import PtiCredentials, seal
from .extensions import db
from .models import Customer, Rental, Site, Unit


def parse_time(value: str | None) -> datetime | None:
    """Storeganise ISO-8601 (`2023-09-13T10:00:00.000Z`) to a naive UTC datetime; ValueError when malformed."""
    if not value:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    return parsed


def _int_or_none(value) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _localised(value) -> str | None:
    """A Storeganise localised text (`{"en": "Northgate"}`): English, else the first non-empty value."""
    if isinstance(value, dict):
        return value.get("en") or next((v for v in value.values() if isinstance(v, str) and v), None)
    return value or None


def _pti_id(value) -> str | None:
    """The unit's PTI Unit Name (add-on code `pti_id`); empty or `NONE` (the unit switched off) is none."""
    name = str(value).strip() if value is not None else ""
    return name if name and name.upper() != "NONE" else None


def _by_sg_id(model, sg_id: str):
    return db.session.scalar(select(model).where(model.sg_id == sg_id))


def _assign(row, **values) -> bool:
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed


def upsert_site(data: dict) -> tuple[Site, bool]:
    site = _by_sg_id(Site, data["id"])
    created = site is None
    if created:
        site = Site(sg_id=data["id"])
        db.session.add(site)
    fields = data.get("customFields") or {}
    changed = _assign(
        site,
        code=data.get("code") or data["id"],
        title=_localised(data.get("title")) or data.get("code") or data["id"],
        pti_base_url=fields.get("pti_base_url") or None,
        pti_site_code=fields.get("pti_site_code") or None,
        default_access_level=_int_or_none(fields.get("pti_access_level")),
        default_zone=_int_or_none(fields.get("pti_zone")),
    )
    secrets = (fields.get("pti_site_key"), fields.get("pti_username"), fields.get("pti_password"))
    if all(secrets):
        # Re-seal only when the credentials differ: compare by decrypting what we hold.
        if current_credentials(site) != PtiCredentials(*secrets):
            site.pti_credentials = seal(current_app.config["ENCRYPTION_KEYS"], site.sg_id, PtiCredentials(*secrets))
            changed = True
    return site, created or changed


def upsert_unit(data: dict, site: Site) -> tuple[Unit, bool]:
    unit = _by_sg_id(Unit, data["id"])
    created = unit is None
    if created:
        unit = Unit(sg_id=data["id"], site=site)
        db.session.add(unit)
    fields = data.get("customFields") or {}
    changed = _assign(unit, site_id=site.id, name=data.get("name") or data["id"],
                      state=data.get("state") or "available",
                      pti_unit_name=_pti_id(fields.get("pti_id")))
    return unit, created or changed


def upsert_customer(data: dict) -> tuple[Customer, bool]:
    customer = _by_sg_id(Customer, data["id"])
    created = customer is None
    if created:
        customer = Customer(sg_id=data["id"])
        db.session.add(customer)
    fields = data.get("customFields") or {}
    changed = _assign(
        customer,
        email=(data.get("email") or "").strip().lower(),
        first_name=data.get("firstName") or "",
        last_name=data.get("lastName") or "",
        overdue=bool(data.get("overdue")),
        access_level_override=_int_or_none(fields.get("pti_access_level")),
        zone_override=_int_or_none(fields.get("pti_zone")),
        pti_access_code=_int_or_none(fields.get("pti_access_code")),
        pti_user_id=(fields.get("pti_user_id") or None),
    )
    return customer, created or changed


def upsert_rental(data: dict, site: Site, unit: Unit, customer: Customer) -> tuple[Rental, bool]:
    rental = _by_sg_id(Rental, data["id"])
    created = rental is None
    if created:
        rental = Rental(sg_id=data["id"], site=site, unit=unit, customer=customer)
        db.session.add(rental)
    fields = data.get("customFields") or {}
    changed = _assign(
        rental,
        site_id=site.id,
        unit_id=unit.id,
        customer_id=customer.id,
        state=data.get("state") or "occupied",
        overdue=bool(data.get("overdue")),
        overlocked=bool(fields.get("pti_overlocked")),
        pti_synced=parse_time(fields.get("pti_synced")),
    )
    rental.sg_updated = parse_time(data.get("updated"))
    return rental, created or changed
