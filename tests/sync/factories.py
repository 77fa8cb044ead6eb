"""Small builders for sync-core tests: one customer at one site, and the PTI state around them."""

from __future__ import annotations

from dashboard.sync import (
    ActualAccess,
    CustomerSnapshot,
    Plan,
    PtiUnit,
    PtiUser,
    RentalSnapshot,
    SiteSettings,
    UnitStatus,
    derive_desired,
    plan,
)

CUSTOMER_ID = "cus-ann"
USER_ID = "pti-7"
CODE = 482913
LEVEL = 3
ZONE = 1
SITE = SiteSettings("site-1", default_access_level=LEVEL, default_zone=ZONE)


def customer(**changes) -> CustomerSnapshot:
    fields = dict(customer_id=CUSTOMER_ID, email="ann@example.com", first_name="Ann", last_name="Lee",
                  access_code=CODE, pti_user_id=USER_ID)
    return CustomerSnapshot(**(fields | changes))


def rental(unit: str | None, state: str = "occupied", overlocked: bool = False, rental_id: str | None = None):
    return RentalSnapshot(rental_id or f"r-{unit}", unit, state, overlocked)


def pti_user(*units: str, **changes) -> PtiUser:
    """The PTI user that matches `customer()` exactly, renting `units`."""
    fields = dict(id=USER_ID, email="ann@example.com", access_code=CODE, access_level=LEVEL, time_zone=ZONE,
                  first_name="Ann", last_name="Lee", marker=CUSTOMER_ID, units=units)
    return PtiUser(**(fields | changes))


def vacant(name: str, locked: bool = False) -> PtiUnit:
    return PtiUnit(name, UnitStatus.VACANT, locked)


def rented(name: str, user_id: str = USER_ID, locked: bool = False) -> PtiUnit:
    return PtiUnit(name, UnitStatus.RENTED, locked, user_id)


def actual(user: PtiUser | None, *units: PtiUnit, holders: dict[str, str | None] | None = None) -> ActualAccess:
    return ActualAccess(user, {u.name: u for u in units}, holders or {})


def plan_for(rentals, world: ActualAccess, who: CustomerSnapshot | None = None, site: SiteSettings = SITE) -> Plan:
    return plan(derive_desired(site, who or customer(), rentals), world)
