"""Demo mode: the four demo accounts and the demo business (never created outside demo or test mode)."""

from __future__ import annotations

from flask import current_app
from sqlalchemy import select

from .clients import StoreganiseNotConfigured, storeganise_client
from .extensions import db
from .mirror.importer import import_business
from .mirror.records import by_sg_id, land_customer, land_rental, land_site, land_unit
from .models import Customer, Rental, Role, Site, StaffUser, Unit
from .storeganise import StoreganiseError

DEMO_PASSWORD = "demo"
SIMULATOR_PROBE_TIMEOUT_S = 3.0
DEMO_ACCOUNTS = [
    ("admin@demo.test", "Ada Admin", Role.ADMIN),
    ("manager@demo.test", "Morgan Manager", Role.MANAGER),
    ("staff@demo.test", "Sasha Staff", Role.STAFF),
    ("support@demo.test", "Sam Support", Role.SUPPORT),
]


class NotDemoMode(RuntimeError):
    pass


def ensure_demo_accounts() -> int:
    """Create the demo accounts that are missing; returns how many were created."""
    if not (current_app.config.get("DEMO_MODE") or current_app.config.get("TESTING")):
        raise NotDemoMode("demo accounts are only created in demo mode (PTI_SYNC_DEMO=1)")
    created = 0
    for email, name, role in DEMO_ACCOUNTS:
        if db.session.scalar(select(StaffUser).where(StaffUser.email == email)) is None:
            user = StaffUser(email=email, name=name, role=role)
            user.set_password(DEMO_PASSWORD)
            db.session.add(user)
            created += 1
    db.session.commit()
    return created


def load_business(business) -> dict[str, int]:
    """Upsert a DemoBusiness-shaped set of Storeganise records into the mirror (idempotent)."""
    sites = {s["id"]: land_site(s, by_sg_id(Site, s["id"])) for s in business.sites}
    db.session.flush()
    units = {u["id"]: land_unit(u, sites[u["siteId"]], by_sg_id(Unit, u["id"])) for u in business.units}
    customers = {c["id"]: land_customer(c, by_sg_id(Customer, c["id"])) for c in business.users}
    db.session.flush()
    for r in business.unit_rentals:
        land_rental(r, sites[r["siteId"]], units[r["unitId"]], customers[r["ownerId"]], by_sg_id(Rental, r["id"]))
    db.session.commit()
    return {"sites": len(sites), "units": len(units), "customers": len(customers),
            "rentals": len(business.unit_rentals)}


def seed_demo_business() -> dict[str, int]:
    from sim.demo_data import build_demo_business  # the demo lives with the simulators: loaded only for a seed

    return load_business(build_demo_business(current_app.config["PTI_SIM_URL"]))


def import_demo_business() -> str:
    """Import the demo business from the Storeganise simulator, where it originates; say what happened.

    Only when the simulator does not answer (e.g. `flask demo seed` run on its own) is the same data loaded
    directly, as a fallback, and the message says so.
    """
    if has_business():
        return "The demo business is already in the mirror (`flask sg import` refreshes it from Storeganise)."
    url = current_app.config.get("STOREGANISE_API_URL")
    try:
        with storeganise_client(max_attempts=1, timeout=SIMULATOR_PROBE_TIMEOUT_S) as client:
            client.list_sites()  # does it answer at all?
    except (StoreganiseNotConfigured, StoreganiseError) as exc:
        counts = seed_demo_business()
        return (f"The Storeganise simulator does not answer ({exc}), so the demo business was loaded directly "
                "instead (fallback): " + ", ".join(f"{n} {k}" for k, n in counts.items()) + ".")
    with storeganise_client() as client:
        report = import_business(client)
    return f"From the Storeganise simulator at {url}: {report.summary()}"


def has_business() -> bool:
    return db.session.scalar(select(Site.id).limit(1)) is not None
