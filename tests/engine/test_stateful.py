"""R3 (reliability.md): a stateful property test of the real engine against the live PTI simulator.

Hypothesis drives two small sites through Storeganise events (move-in, move-out, transfer, overdue and payment,
manual suspend, new code, access level and zone overrides; a customer may rent at both sites), PTI faults (server
errors, time-outs, writes PTI applied before the answer was lost), Redis restarted empty (between pushes or in the
middle of one), workers killed in the middle of a push, and reconciles, in any order. After every step PTI holds no
duplicate access codes, at most one user per customer, no user with our marker that we did not create, the
hand-made users exactly as they were, and every account the database calls in sync matches PTI exactly. Once the
faults stop and every owed account has been pushed, PTI matches the mirror for every customer at both sites.

Randomised: each run draws a new seed, printed at the start and in the failure (replay it with R3_SEED=<seed>).
R3_EXAMPLES sets how many examples run (CI runs more than a developer's `make test`).
"""

from __future__ import annotations

import functools
import os
import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import event, select

from dashboard.demo import load_business
from dashboard.engine.intent import mark_dirty
from dashboard.engine.reconcile import choose_code, lock_key, reconcile
from dashboard.extensions import db
from dashboard.jobqueue import get_redis
from dashboard.models import ACTIVE_RENTAL_STATES, Customer, PtiAccount, Rental, Site, SyncState, Unit
from dashboard.pti import PtiClient
from sim.demo_data import DemoSite, build_demo_business
from sim.pti import create_app
from sim.server import serve_in_thread
from tests.engine.conftest import PtiSim

# 12 units: 9 with a PTI Unit Name, 3 parking bays without; 6 rented (one of them a parking bay).
TINY = DemoSite("tiny", "tiny", "Tiny Storage", "TN01", "tn-site-key-5d1a", "sync.tiny", "tn-pass-63", "tn-pass-63",
                unit_count=12, rented_units=6)
SECOND = DemoSite("second", "second", "Second Storage", "SE02", "se-site-key-8c3e", "sync.second", "se-pass-41",
                  "se-pass-41", unit_count=8, rented_units=4, default_access_level=2, default_zone=3)
SITES = (TINY, SECOND)
HAND_UNIT = "T999"  # a PTI unit the mirror does not know, rented by hand to a hand-made user
# PTI users staff created by hand (no marker): the engine must never change, adopt or remove them; a customer
# they match parks as foreign_pti_user until staff decide.
HAND_MADE = [
    {"email": "gate.staff@tiny.example", "first_name": "Gate", "last_name": "Staff", "access_code": 731846,
     "access_level": 3, "time_zone": 1, "unit": None},
    {"email": "hand.tenant@tiny.example", "first_name": "Hand", "last_name": "Tenant", "access_code": 402957,
     "access_level": 1, "time_zone": 2, "unit": HAND_UNIT},
]
CLASHING_CODE = HAND_MADE[0]["access_code"]  # a customer whose Storeganise code PTI already gives to staff
LEVELS = ZONES = (1, 2, 3)  # what the simulated site offers

READ_TIMEOUT_S = 0.25  # the engine gives up on a PTI answer after this long...
SIM_TIMEOUT_MS = 300  # ...and a simulated time-out answers later than that
CALL_BACKOFF_S = 0.005  # the pause between tries of one call (time is not under test)
WRITES = ["create_user", "update_user", "remove_user", "rent_unit", "vacate_unit", "lock_unit", "unlock_unit"]
FAULT_PROFILES = st.fixed_dictionaries({  # the first of each list is where shrinking goes: keep faults there
    "error_rate": st.sampled_from([0.2, 0.0, 0.35]),
    "timeout_rate": st.sampled_from([0.05, 0.0, 0.1]),
    "apply_then_timeout_rate": st.sampled_from([0.25, 0.0, 0.4]),
    "operations": st.sampled_from([WRITES, [], ["create_user"]]),
    "seed": st.integers(0, 2**16),
})
CONVERGE_ROUNDS = 10  # faults off: every owed account is pushed at most this many times
EXAMPLES = int(os.environ.get("R3_EXAMPLES") or 6)
STEPS = int(os.environ.get("R3_STEPS") or 40)


class WorkerKilled(BaseException):
    """The work horse is SIGKILLed: nothing of the job runs after this point (not even its `except Exception`)."""


# --- what PTI must look like --------------------------------------------------------------------------------


def site_invariant_problems(site_state: dict, hand_made: dict[str, dict] | None = None) -> list[str]:
    """What must hold in PTI at any moment, whatever failed: one code per user, one user per customer, and users
    carrying our marker are ours (never a hand-made one, and always a customer of the mirror)."""
    users = site_state["users"]
    problems = [f"access code {code} is held by {n} PTI users"
                for code, n in Counter(u["access_code"] for u in users).items() if n > 1]
    problems += [f"customer {marker} has {n} PTI users"
                 for marker, n in Counter(u["marker"] for u in users if u["marker"]).items() if n > 1]
    known = set(db.session.scalars(select(Customer.sg_id)))
    problems += [f"PTI user {u['id']} carries marker {u['marker']}, which is no customer of ours"
                 for u in users if u["marker"] and u["marker"] not in known]
    for user_id, before in (hand_made or {}).items():
        now = next((u for u in users if u["id"] == user_id), None)
        if now != before:
            problems.append(f"hand-made PTI user {user_id} was touched: {before} -> {now}")
    return problems


def mismatches(site: Site, site_state: dict, customers: list[Customer], *, every_unit: bool = False,
               keep: frozenset[str] = frozenset()) -> list[str]:
    """How PTI differs from what the mirror wants for these customers (empty: it matches exactly).

    A customer with an active rental at a mapped unit has exactly one PTI user, with the stored code and user id,
    the effective level and zone, and exactly those units, each rented to them and locked iff overlocked; any other
    customer has no PTI user. With `every_unit`, units nobody should hold (but `keep`) are vacant and unlocked.
    """
    users = {u["marker"]: u for u in site_state["users"] if u["marker"]}
    units = {u["name"]: u for u in site_state["units"]}
    wanted: set[str] = set()
    problems = []
    for customer in customers:
        who = f"customer {customer.sg_id}"
        account = db.session.scalar(select(PtiAccount).where(PtiAccount.customer_id == customer.id,
                                                             PtiAccount.site_id == site.id))
        active = [r for r in customer.rentals
                  if r.site_id == site.id and r.state in ACTIVE_RENTAL_STATES and r.unit.pti_unit_name]
        locked: dict[str, bool] = {}
        for rental in active:
            locked[rental.unit.pti_unit_name] = locked.get(rental.unit.pti_unit_name, False) or rental.overlocked
        wanted |= set(locked)
        user = users.get(customer.sg_id)
        if not locked:
            if user is not None:
                problems.append(f"{who} has no active rental but PTI user {user['id']} (units {user['units']})")
            continue
        if user is None:
            problems.append(f"{who} should have a PTI user for {sorted(locked)}: PTI has none")
            continue
        expected = {
            "access_code": account.access_code,
            "access_level": first_set(customer.access_level_override, site.default_access_level),
            "time_zone": first_set(customer.zone_override, site.default_zone),
            "email": customer.email, "first_name": customer.first_name, "last_name": customer.last_name,
            "units": sorted(locked),
        }
        got = {key: user[key] for key in expected}
        if got != expected:
            problems.append(f"{who}: PTI user {user['id']} has {got}, expected {expected}")
        if account.pti_user_id != user["id"]:
            problems.append(f"{who}: stored PTI user id {account.pti_user_id}, PTI user is {user['id']}")
        for name, lock in sorted(locked.items()):
            unit = units.get(name)
            if unit != {"name": name, "status": "rented", "locked": lock, "user_id": user["id"]}:
                problems.append(f"{who}: unit {name} is {unit}, expected rented to {user['id']} locked={lock}")
    if every_unit:
        problems += [f"unit {name} should be vacant and unlocked: {unit}" for name, unit in sorted(units.items())
                     if name not in wanted | keep and (unit["status"], unit["locked"]) != ("vacant", False)]
    return problems


def first_set(override: int | None, default: int | None) -> int | None:
    return default if override is None else override


def in_sync_accounts(site: Site) -> list[Customer]:
    """Customers whose account says PTI has everything they are owed."""
    return list(db.session.scalars(
        select(Customer).join(PtiAccount, PtiAccount.customer_id == Customer.id)
        .where(PtiAccount.site_id == site.id, PtiAccount.state == SyncState.IN_SYNC,
               PtiAccount.synced_generation == PtiAccount.generation)
    ))


# --- the machine ----------------------------------------------------------------------------------------------


def step(method):
    """A rule whose world is only settled once the invariants passed after it (see `teardown`)."""

    @functools.wraps(method)
    def run(self, *args, **kwargs):
        self.settled = False
        return method(self, *args, **kwargs)

    return run


class TwoSites(RuleBasedStateMachine):
    """Two sites' mirror, their PTI, and the engine between them; each example starts from converged sites."""

    def __init__(self, sim: PtiSim, business) -> None:
        super().__init__()
        self.sim, self.business = sim, business
        self.settled = True
        self.made = 0  # new customers and rentals made in this example
        self.reset_world()

    # --- set-up ---------------------------------------------------------------------------------------------

    def reset_world(self) -> None:
        db.session.rollback()
        for table in reversed(db.metadata.sorted_tables):
            db.session.execute(table.delete())
        db.session.commit()
        get_redis().flushall()
        self.sim.reset()
        self.load_mirror()
        self.sites = list(db.session.scalars(select(Site).order_by(Site.id)))
        self.site = next(s for s in self.sites if s.pti_site_code == TINY.pti_site_code)  # the hand-made users' site
        self.hand_made = self.make_hand_made_users()
        # An import marks every customer for a push; the sites start converged, as running sites would be.
        for rental in db.session.scalars(select(Rental)):
            mark_dirty(rental.customer_id, rental.site_id)
        db.session.commit()
        self.converge()

    def load_mirror(self) -> None:
        load_business(self.business)

    def make_hand_made_users(self) -> dict[str, dict]:
        with PtiClient(self.sim.url, TINY.pti_site_code, TINY.pti_site_key, TINY.pti_username,
                       TINY.pti_password) as client:
            for person in HAND_MADE:
                fields = {k: v for k, v in person.items() if k != "unit"}
                user = client.create_user(**fields, marker="")
                if person["unit"]:
                    client.rent_unit(person["unit"], user.id)
        return {u["id"]: u for u in self.pti(self.site)["users"]}

    # --- reading ----------------------------------------------------------------------------------------------

    def pti(self, site: Site) -> dict:
        return self.sim.site(site.pti_site_code)

    def customers(self) -> list[Customer]:
        return list(db.session.scalars(select(Customer).order_by(Customer.id)))

    def active_rentals(self) -> list[Rental]:
        return list(db.session.scalars(select(Rental).where(Rental.state.in_(ACTIVE_RENTAL_STATES))
                                       .order_by(Rental.id)))

    def vacant_units(self) -> list[Unit]:
        taken = select(Rental.unit_id).where(Rental.state.in_(ACTIVE_RENTAL_STATES))
        return list(db.session.scalars(select(Unit).where(Unit.id.not_in(taken)).order_by(Unit.id)))

    def accounts_with_code(self) -> list[PtiAccount]:
        return list(db.session.scalars(select(PtiAccount).where(PtiAccount.access_code.is_not(None))
                                       .order_by(PtiAccount.id)))

    @staticmethod
    def pick(data, label: str, rows: list, name):
        """One of `rows`, drawn by a readable name (a failing example then says which)."""
        chosen = data.draw(st.sampled_from([name(row) for row in rows]), label=label)
        return next(row for row in rows if name(row) == chosen)

    def pick_customer(self, data) -> Customer:
        return self.pick(data, "customer", self.customers(), lambda c: c.email)

    def pick_rental(self, data) -> Rental:
        return self.pick(data, "rental of unit", self.active_rentals(), lambda r: r.unit.name)

    def pick_vacant_unit(self, data) -> Unit:
        return self.pick(data, "vacant unit", self.vacant_units(), lambda u: f"{u.name} at {u.site.code}")

    def pick_account(self, data) -> PtiAccount | None:
        rows = list(db.session.scalars(select(PtiAccount).order_by(PtiAccount.id)))
        return self.pick(data, "account", rows, lambda a: f"{a.customer.email} at {a.site.code}") if rows else None

    # --- Storeganise events -------------------------------------------------------------------------------------
    # Each event records its intent (mark_dirty, commit); its job runs at once when `push`, else later or never
    # (a reconcile rule, or the queue drained, picks it up).

    def intent(self, customer: Customer, site_id: int, push: bool, urgent: bool = False) -> None:
        account = mark_dirty(customer, site_id, urgent=urgent)
        db.session.commit()
        if push:
            reconcile(account.id, "event")

    @precondition(lambda self: self.vacant_units())
    @rule(data=st.data(), new_customer=st.booleans(), clash=st.booleans(),
          state=st.sampled_from(ACTIVE_RENTAL_STATES), push=st.booleans())
    @step
    def move_in(self, data, new_customer, clash, state, push):
        """A customer (new, or one we know) moves into a vacant unit, mapped or not."""
        unit = self.pick_vacant_unit(data)
        self.made += 1
        if new_customer:
            # Some new customers carry a Storeganise code that PTI already gives to a member of staff.
            customer = Customer(sg_id=f"new-customer-{self.made}", email=f"new{self.made}@example.com",
                                first_name="New", last_name=f"Customer{self.made}",
                                pti_access_code=CLASHING_CODE if clash else None)
            db.session.add(customer)
            db.session.flush()
        else:
            customer = self.pick_customer(data)
        db.session.add(Rental(sg_id=f"new-rental-{self.made}", site_id=unit.site_id, unit_id=unit.id,
                              customer_id=customer.id, state=state))
        self.intent(customer, unit.site_id, push)

    @precondition(lambda self: self.active_rentals())
    @rule(data=st.data(), push=st.booleans())
    @step
    def move_out(self, data, push):
        rental = self.pick_rental(data)
        rental.state = "ended"
        self.intent(rental.customer, rental.site_id, push)

    @precondition(lambda self: any(r.unit.site_id == u.site_id for r in self.active_rentals()
                                   for u in self.vacant_units()))
    @rule(data=st.data(), push=st.booleans())
    @step
    def transfer(self, data, push):
        """The old rental ends and a new one starts at another unit of the same site, for the same customer."""
        old = self.pick_rental(data)
        vacant = [u for u in self.vacant_units() if u.site_id == old.site_id]
        if not vacant:
            return
        unit = self.pick(data, "vacant unit", vacant, lambda u: f"{u.name} at {u.site.code}")
        self.made += 1
        old.state = "ended"
        db.session.add(Rental(sg_id=f"new-rental-{self.made}", site_id=old.site_id, unit_id=unit.id,
                              customer_id=old.customer_id, state="occupied"))
        self.intent(old.customer, old.site_id, push, urgent=old.overlocked)

    @precondition(lambda self: self.active_rentals())
    @rule(data=st.data(), push=st.booleans())
    @step
    def overdue_or_payment(self, data, push):
        """unitRental.markOverdue on a paid rental, unitRental.unmarkOverdue on an overdue one."""
        rental = self.pick_rental(data)
        rental.overdue = not rental.overdue
        rental.overlocked = rental.overdue
        self.intent(rental.customer, rental.site_id, push, urgent=True)

    @precondition(lambda self: self.active_rentals())
    @rule(data=st.data(), suspended=st.booleans(), push=st.booleans())
    @step
    def suspend_or_unsuspend(self, data, suspended, push):
        """Staff set the lock state by hand (recorded in pti_overlocked)."""
        rental = self.pick_rental(data)
        rental.overlocked = suspended
        self.intent(rental.customer, rental.site_id, push, urgent=True)

    @precondition(lambda self: self.accounts_with_code())
    @rule(data=st.data(), push=st.booleans())
    @step
    def regenerate_code(self, data, push):
        account = self.pick(data, "account", self.accounts_with_code(),
                            lambda a: f"{a.customer.email} at {a.site.code}")
        account.access_code = choose_code(account, exclude={account.access_code})
        self.intent(account.customer, account.site_id, push)

    @rule(data=st.data(), level=st.sampled_from((None, *LEVELS)), zone=st.sampled_from((None, *ZONES)),
          push=st.booleans())
    @step
    def override_level_and_zone(self, data, level, zone, push):
        customer = self.pick_customer(data)
        customer.access_level_override, customer.zone_override = level, zone
        for site_id in {r.site_id for r in customer.rentals}:
            self.intent(customer, site_id, push)

    # --- PTI faults -----------------------------------------------------------------------------------------------

    @initialize(profile=FAULT_PROFILES)
    def pti_starts_faulty(self, profile):
        self.sim.faults(**profile, timeout_ms=SIM_TIMEOUT_MS)

    @rule(profile=FAULT_PROFILES)
    @step
    def pti_faults_on(self, profile):
        self.sim.faults(**profile, timeout_ms=SIM_TIMEOUT_MS)

    @rule()
    @step
    def pti_faults_off(self):
        """PTI recovers, and time passes beyond the circuit breaker's cool-down."""
        self.sim.faults()
        self.forget_breaker()

    @staticmethod
    def forget_breaker() -> None:
        for key in get_redis().scan_iter("pti-sync:site:*"):
            get_redis().delete(key)

    # --- Redis and the workers -------------------------------------------------------------------------------------

    @rule()
    @step
    def redis_restarts_empty(self):
        """Redis is restarted without its data: the locks, the site guards and the queued jobs are gone."""
        get_redis().flushall()

    @rule(data=st.data(), after_calls=st.integers(1, 6), kind=st.sampled_from(["worker_killed", "redis_lost"]))
    @step
    def push_interrupted(self, data, after_calls, kind):
        """A push stops after `after_calls` PTI calls: its worker is SIGKILLed (nothing after that point runs: no
        journal, no commit, its lock stays in Redis until it expires), or Redis restarts empty under it (its lock
        is gone: the push must notice before its next PTI call)."""
        account = self.pick_account(data)
        if account is None:
            return
        account_id = account.id
        calls, send = [0], PtiClient._send

        def counted(client, operation, *args, **kwargs):
            if operation != "login":
                calls[0] += 1
                if calls[0] > after_calls:
                    if kind == "worker_killed":
                        raise WorkerKilled
                    get_redis().flushall()
            return send(client, operation, *args, **kwargs)

        PtiClient._send = counted
        try:
            reconcile(account_id, "stateful")
        except WorkerKilled:
            db.session.rollback()  # the dead process's transaction never commits
            get_redis().delete(lock_key(account_id))  # and, later, its lock's time-out expires
        finally:
            PtiClient._send = send

    # --- the engine ---------------------------------------------------------------------------------------------

    @rule(data=st.data(), ask_again=st.booleans())
    @step
    def reconcile_customer(self, data, ask_again):
        """A job for one customer runs (after a new request for a push, or a late one for an older request)."""
        account = self.pick_account(data)
        if account is None:
            return
        if ask_again:
            account = mark_dirty(account.customer_id, account.site_id)
            db.session.commit()
        reconcile(account.id, "stateful")

    @rule()
    @step
    def worker_drains_the_queue(self):
        """Every account still owed a push gets one job (what the relay and a worker do)."""
        for account_id in self.owed():
            reconcile(account_id, "stateful")

    def owed(self) -> list[int]:
        return list(db.session.scalars(select(PtiAccount.id).where(
            PtiAccount.generation > PtiAccount.synced_generation).order_by(PtiAccount.id)))

    # --- what must hold -------------------------------------------------------------------------------------------

    @invariant()
    def pti_never_holds_duplicates_or_users_we_did_not_create(self):
        problems = []
        for site in self.sites:
            state = self.pti(site)
            problems += site_invariant_problems(state, self.hand_made if site is self.site else None)
            problems += mismatches(site, state, in_sync_accounts(site))
        assert not problems, "\n".join(problems)
        self.settled = True

    def converge(self) -> None:
        """Faults off; staff requeue parked accounts; every owed account is pushed until none is owed.

        A customer whose Storeganise code a hand-made user holds parks as foreign_pti_user: staff compare the two on
        the customer's page and, the hand-made users being staff and a hand tenant, choose a separate user."""
        self.sim.faults()
        self.forget_breaker()
        for _ in range(CONVERGE_ROUNDS):
            for account in db.session.scalars(select(PtiAccount).where(PtiAccount.state == SyncState.FAILED)):
                if account.last_error == "foreign_pti_user":
                    account.separate_from_foreign = True
                mark_dirty(account.customer, account.site_id)
            db.session.commit()
            owed = self.owed()
            if not owed:
                break
            for account_id in owed:
                reconcile(account_id, "converge")
        else:
            stuck = db.session.scalars(select(PtiAccount).where(PtiAccount.id.in_(self.owed()))).all()
            pytest.fail("still owed after faults stopped: " + ", ".join(
                f"{a.customer.sg_id} ({a.state}, {a.last_error})" for a in stuck))
        problems = []
        for site in self.sites:
            state = self.pti(site)
            problems += site_invariant_problems(state, self.hand_made if site is self.site else None)
            problems += mismatches(site, state, self.customers(), every_unit=True, keep=frozenset({HAND_UNIT}))
        assert not problems, "PTI does not match the mirror once converged:\n" + "\n".join(problems)

    def teardown(self):
        if self.settled:  # a failed step or invariant is the finding: converging after it would only hide it
            self.converge()


@pytest.fixture(scope="module")
def tiny_pti():
    pti_sites = build_demo_business("http://127.0.0.1:1", sites=list(SITES)).pti_sites
    pti_sites[TINY.pti_site_code]["units"].append(HAND_UNIT)
    server = serve_in_thread(create_app(pti_sites, seed=3))
    sim = PtiSim(server.url)
    yield sim
    sim.close()
    server.stop()


def run_r3(app, monkeypatch, name: str, make_machine) -> None:
    """Run a state machine of R3's family with a fresh seed (printed; R3_SEED replays it) and R3's settings."""
    app.config["PTI_READ_TIMEOUT_S"] = READ_TIMEOUT_S
    monkeypatch.setattr("dashboard.engine.reconcile.CALL_BACKOFF_BASE_S", CALL_BACKOFF_S)
    if db.engine.dialect.name == "sqlite":  # durability is not under test: skip the fsync of every commit
        event.listen(db.engine, "connect", lambda conn, _: conn.execute("PRAGMA synchronous = OFF"))
        db.session.remove()
        db.engine.dispose()
    drawn = int(os.environ.get("R3_SEED") or random.randrange(2**32))
    print(f"{name}: seed {drawn}, {EXAMPLES} examples of up to {STEPS} steps (replay: R3_SEED={drawn})")
    try:
        run_state_machine_as_test(
            seed(drawn)(make_machine),
            settings=settings(max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
                              suppress_health_check=[HealthCheck.too_slow]),
        )
    except BaseException as exc:
        raise AssertionError(f"{name} failed with seed {drawn}: replay it with R3_SEED={drawn}") from exc
    finally:
        clients = app.extensions.get("pti_clients")
        if clients is not None:
            clients.close_all()


@pytest.mark.slow
def test_events_and_faults_in_any_order_keep_pti_safe_and_converge_once_faults_stop(app, tiny_pti, monkeypatch):
    business = build_demo_business(tiny_pti.url, sites=list(SITES))
    run_r3(app, monkeypatch, "R3", lambda: TwoSites(tiny_pti, business))
