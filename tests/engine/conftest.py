"""Engine tests: the product's database and Redis, the live PTI simulator, and jobs run for real."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from dashboard.extensions import db
from dashboard.models import Customer, PtiAccount, Rental, Site, Unit
from dashboard.pti import PtiClient
from sim.demo_data import DEMO_SITES
from sim.server import serve_in_thread


class PtiSim:
    """The PTI simulator's control API, as tests use it."""

    def __init__(self, url: str):
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=10)

    def reset(self) -> None:
        self.http.post("/_sim/reset").raise_for_status()

    def close(self) -> None:
        self.http.close()

    def faults(self, **config) -> None:
        self.http.post("/_sim/faults", json=config).raise_for_status()

    def state(self) -> dict:
        return self.http.get("/_sim/state").json()

    def site(self, code: str) -> dict:
        return self.state()["sites"][code]

    def calls(self) -> list[dict]:
        return self.http.get("/_sim/calls").json()["calls"]

    def writes(self) -> int:
        return self.state()["calls"]["writes"]

    def user_with_marker(self, code: str, marker: str) -> dict | None:
        found = [u for u in self.site(code)["users"] if u["marker"] == marker]
        assert len(found) <= 1, f"{len(found)} PTI users carry marker {marker}"
        return found[0] if found else None

    def unit(self, code: str, name: str) -> dict:
        return next(u for u in self.site(code)["units"] if u["name"] == name)


@pytest.fixture(scope="session")
def pti_server():
    from sim.pti import create_app

    server = serve_in_thread(create_app())
    yield server
    server.stop()


@pytest.fixture
def pti(pti_server):
    sim = PtiSim(pti_server.url)
    sim.reset()
    yield sim
    sim.reset()
    sim.close()


@pytest.fixture
def business(app, pti):
    """The demo business in the mirror, its sites pointing at the live PTI simulator."""
    from dashboard.demo import load_business
    from sim.demo_data import build_demo_business

    return load_business(build_demo_business(pti.url))


def site(code: str) -> Site:
    return db.session.scalar(select(Site).where(Site.code == code))


def rentals_of(customer: Customer, state: str = "occupied") -> list[Rental]:
    return [r for r in customer.rentals if r.state == state]


def customer_with(units: int, site_code: str = "northgate", overdue: bool | None = None) -> Customer:
    """A demo customer renting exactly `units` units at the site."""
    for customer in db.session.scalars(select(Customer).order_by(Customer.id)):
        rentals = [r for r in customer.rentals if r.site.code == site_code and r.unit.pti_unit_name
                   and " " not in r.unit.pti_unit_name and len(r.unit.pti_unit_name) <= 10]
        if len(customer.rentals) == units and len(rentals) == units and (
                overdue is None or any(r.overdue for r in rentals) == overdue):
            return customer
    raise LookupError(f"no demo customer with {units} units at {site_code}")


def vacant_unit(site_code: str = "northgate") -> Unit:
    s = site(site_code)
    rented = select(Rental.unit_id).where(Rental.state.in_(("occupied", "reserved")))
    return db.session.scalar(select(Unit).where(Unit.site_id == s.id, Unit.id.not_in(rented),
                                                Unit.pti_unit_name.is_not(None), ~Unit.pti_unit_name.contains(" "))
                             .order_by(Unit.name))


def account_of(customer: Customer, site_code: str = "northgate") -> PtiAccount:
    return db.session.scalar(select(PtiAccount).where(PtiAccount.customer_id == customer.id,
                                                      PtiAccount.site_id == site(site_code).id))


def by_hand(pti: PtiSim):
    """A client of Northgate's simulated PTI, as staff use PTI's own dashboard: changes made behind our back."""
    ng = DEMO_SITES[0]
    return PtiClient(pti.url, ng.pti_site_code, ng.pti_site_key, ng.pti_username, ng.pti_password)


def pushed(customer: Customer) -> PtiAccount:
    """The customer pushed to Northgate's PTI now (the push must succeed), and their account after it."""
    from dashboard.engine.intent import mark_dirty
    from dashboard.engine.reconcile import reconcile

    account = mark_dirty(customer, site("northgate").id)
    db.session.commit()
    assert reconcile(account.id, "test").outcome == "ok"
    return account_of(customer)


def sweep_northgate():
    """Run the drift sweep on Northgate now; its report."""
    from dashboard.clients import pti_client, pti_connection
    from dashboard.engine.sweep import sweep_site

    northgate = site("northgate")
    return sweep_site(northgate, pti_client(northgate, pti_connection(northgate)))
