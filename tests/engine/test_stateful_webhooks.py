"""R3 through the webhook path: the same two sites and PTI faults as tests/engine/test_stateful.py, but every
Storeganise event happens in the Storeganise simulator, as staff and billing make it happen, and reaches the product
only as a signed webhook: posted to the receiver, handled by the worker's job (`jobs.events.handle_delivery`), the
pushes it asks for run from the queue. Deliveries may be held back and arrive late, in any order, or twice; the
write-backs run when the machine says so, and their echoes come back through the receiver like any webhook.

Besides the invariants of R3 after every step: once the faults stop and every delivery is handled, the mirror agrees
with Storeganise (every rental's state, overdue flag and lock), PTI matches the mirror, every write-back owed
reached Storeganise, and the echoes of those write-backs ask for no push.

Randomised like R3: a new seed each run, printed (replay with R3_SEED=<seed>); R3_EXAMPLES and R3_STEPS apply.
"""

from __future__ import annotations

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import precondition, rule
from rq import Queue
from sqlalchemy import select

from dashboard.engine.reconcile import reconcile
from dashboard.engine.writeback import write_back_owed
from dashboard.extensions import db
from dashboard.jobqueue import QUEUE_NAMES, RECONCILE, get_redis
from dashboard.mirror.importer import import_business, pull_changes
from dashboard.models import ACTIVE_RENTAL_STATES, PtiAccount, Rental, SyncState, WebhookDelivery
from jobs.events import handle_delivery
from tests.engine import test_stateful
from tests.engine.test_stateful import CLASHING_CODE, LEVELS, SITES, ZONES, TwoSites, run_r3, step
from tests.storeganise.conftest import SIM_API_URL, Hooks

tiny_pti = test_stateful.tiny_pti  # the two sites' PTI (with R3's hand-made users), shared with R3's fixture

SETTLE_ROUNDS = 6  # write-backs and their echoes, handled until nothing more is sent or owed


class ThroughWebhooks(TwoSites):
    """R3's world, driven from Storeganise: events are the simulator's, the product learns them from webhooks."""

    def __init__(self, sim, sg_sim, hooks: Hooks, sg) -> None:
        self.sg_sim, self.hooks, self.sg = sg_sim, hooks, sg
        super().__init__(sim, business=None)

    def load_mirror(self) -> None:
        """The mirror from Storeganise's API, as a new operator's first import; its own push requests dropped
        (the world starts converged)."""
        self.sg_sim.reset()
        self.hooks.sent = 0
        import_business(self.sg)
        self.drop_queued_jobs()

    # --- Storeganise, as staff and billing see it ------------------------------------------------------------------

    def sg_active_rentals(self) -> list[dict]:
        with self.sg_sim.lock:
            rentals = [dict(r) for r in self.sg_sim.rentals.values() if r["state"] in ACTIVE_RENTAL_STATES]
        return sorted(rentals, key=self.unit_label)

    def sg_vacant_units(self, site_id: str | None = None) -> list[dict]:
        with self.sg_sim.lock:
            units = [dict(u) for u in self.sg_sim.units.values()
                     if u["state"] == "available" and site_id in (None, u["siteId"])]
        return sorted(units, key=lambda u: (u["siteId"], u["name"]))

    def unit_label(self, rental: dict) -> str:
        unit = self.sg_sim.units[rental["unitId"]]
        return f"{unit['name']} at {unit['siteId']}"

    def sg_users(self) -> list[dict]:
        with self.sg_sim.lock:
            return sorted((dict(u) for u in self.sg_sim.users.values()), key=lambda u: u["email"])

    # --- delivering and working ----------------------------------------------------------------------------------

    def after_event(self, deliver: str) -> None:
        """`now`: the webhook reaches the receiver and its job runs; `push`: and the pushes it asked for run too;
        `later`: it waits in Storeganise's outbox (delivered late, maybe out of order, by `late_deliveries`)."""
        if deliver == "later":
            return
        self.deliver(self.pending())
        if deliver == "push":
            self.run_queued_pushes()

    def pending(self) -> list[dict]:
        return self.sg_sim.snapshot()["webhooks"][self.hooks.sent:]

    def deliver(self, records: list[dict]) -> None:
        """POST each record, signed, then run the job of every delivery the receiver queued (as a worker would)."""
        self.hooks.sent += len({record["id"] for record in records})  # a replay is no new webhook
        for record in records:
            response = self.hooks.post(self.hooks.body(record))
            assert response.status_code == 200, response.get_data(as_text=True)
        self.handle_queued()

    @staticmethod
    def handle_queued() -> None:
        queued = db.session.scalars(select(WebhookDelivery.id).where(WebhookDelivery.status == "queued")
                                    .order_by(WebhookDelivery.received_at, WebhookDelivery.id)).all()
        for delivery_id in queued:
            status = handle_delivery(delivery_id)
            assert status in ("processed", "ignored"), f"delivery {delivery_id} ended {status}"

    def run_queued_pushes(self) -> None:
        """A worker runs the reconciles the handlers queued (urgent first), and the queues are empty after."""
        requests = []
        for name in QUEUE_NAMES:
            for job in Queue(name, connection=get_redis()).jobs:
                if job.func_name == RECONCILE:
                    requests.append(job.args)
        self.drop_queued_jobs()
        for account_id, trigger in requests:
            if db.session.get(PtiAccount, account_id) is not None:
                reconcile(account_id, trigger)

    @staticmethod
    def drop_queued_jobs() -> None:
        for name in QUEUE_NAMES:
            Queue(name, connection=get_redis()).empty()

    # --- Storeganise events (replacing R3's direct writes to the mirror) ------------------------------------------

    @precondition(lambda self: self.sg_vacant_units())
    @rule(data=st.data(), new_customer=st.booleans(), clash=st.booleans(),
          deliver=st.sampled_from(["now", "push", "later"]))
    @step
    def move_in(self, data, new_customer, clash, deliver):
        unit = self.pick(data, "vacant unit", self.sg_vacant_units(), lambda u: f"{u['name']} at {u['siteId']}")
        self.made += 1
        if new_customer:
            done = self.sg_sim.move_in(unit["id"], f"new{self.made}@example.com", "New", f"Customer{self.made}")
            if clash:  # a code Storeganise holds for them that PTI already gives to a member of staff
                self.sg_sim.edit("user", done["userId"], {"pti_access_code": CLASHING_CODE})
        else:
            user = self.pick(data, "customer", self.sg_users(), lambda u: u["email"])
            self.sg_sim.move_in(unit["id"], user["email"], user["firstName"], user["lastName"])
        self.after_event(deliver)

    @precondition(lambda self: self.sg_active_rentals())
    @rule(data=st.data(), deliver=st.sampled_from(["now", "push", "later"]))
    @step
    def move_out(self, data, deliver):
        rental = self.pick(data, "rental of unit", self.sg_active_rentals(), self.unit_label)
        self.sg_sim.move_out(rental["id"])
        self.after_event(deliver)

    @precondition(lambda self: self.sg_active_rentals())
    @rule(data=st.data(), deliver=st.sampled_from(["now", "push", "later"]))
    @step
    def transfer(self, data, deliver):
        old = self.pick(data, "rental of unit", self.sg_active_rentals(), self.unit_label)
        vacant = self.sg_vacant_units(old["siteId"])
        if not vacant:
            return
        unit = self.pick(data, "vacant unit", vacant, lambda u: u["name"])
        self.sg_sim.transfer(old["id"], unit["id"])
        self.after_event(deliver)

    @precondition(lambda self: self.sg_active_rentals())
    @rule(data=st.data(), deliver=st.sampled_from(["now", "push", "later"]))
    @step
    def overdue_or_payment(self, data, deliver):
        """unitRental.markOverdue on a paid rental, unitRental.unmarkOverdue on an overdue one."""
        rental = self.pick(data, "rental of unit", self.sg_active_rentals(), self.unit_label)
        self.sg_sim.set_overdue(rental["id"], not rental["overdue"])
        self.after_event(deliver)

    @precondition(lambda self: self.sg_active_rentals())
    @rule(data=st.data(), suspended=st.booleans(), deliver=st.sampled_from(["now", "push", "later"]))
    @step
    def suspend_or_unsuspend(self, data, suspended, deliver):
        """Staff set pti_overlocked by hand in Storeganise."""
        rental = self.pick(data, "rental of unit", self.sg_active_rentals(), self.unit_label)
        self.sg_sim.edit("unitRental", rental["id"], {"pti_overlocked": suspended})
        self.after_event(deliver)

    @rule(data=st.data(), level=st.sampled_from((None, *LEVELS)), zone=st.sampled_from((None, *ZONES)),
          deliver=st.sampled_from(["now", "push", "later"]))
    @step
    def override_level_and_zone(self, data, level, zone, deliver):
        user = self.pick(data, "customer", self.sg_users(), lambda u: u["email"])
        self.sg_sim.edit("user", user["id"], {"pti_access_level": level, "pti_zone": zone})
        self.after_event(deliver)

    # --- the webhook path's own ways to go wrong --------------------------------------------------------------------

    @precondition(lambda self: self.pending())
    @rule(data=st.data(), replay=st.booleans())
    @step
    def late_deliveries(self, data, replay):
        """What Storeganise held back arrives now, in any order; with `replay`, one delivery comes twice."""
        records = data.draw(st.permutations(self.pending()), label="delivery order")
        self.deliver([*records, records[0]] if replay else records)

    @rule()
    @step
    def worker_runs_the_queue(self):
        self.run_queued_pushes()

    @rule()
    @step
    def write_backs_run(self):
        """The write-back job sends what is owed to Storeganise; its echoes wait in the outbox like any webhook."""
        write_back_owed(self.sg)

    @rule()
    @step
    def cron_pull(self):
        """The 5-minute pull re-reads what changed in Storeganise (a second way the same change arrives)."""
        pull_changes(self.sg)

    # --- converging ----------------------------------------------------------------------------------------------

    def settle_storeganise(self) -> None:
        """Deliver everything, in order; write back what is owed; until nothing more is sent or owed."""
        for _ in range(SETTLE_ROUNDS):
            self.deliver(self.pending())
            if not write_back_owed(self.sg) and not self.pending():
                return
        pytest.fail("write-backs and their echoes did not settle")

    def converge(self) -> None:
        self.settle_storeganise()
        self.drop_queued_jobs()
        super().converge()  # faults off, every owed account pushed; PTI matches the mirror exactly
        self.settle_storeganise()
        self.run_queued_pushes()
        assert not self.owed(), "the echoes of our own write-backs asked for a push"
        problems = self.mirror_disagreements()
        assert not problems, "the mirror does not agree with Storeganise:\n" + "\n".join(problems)

    def mirror_disagreements(self) -> list[str]:
        db.session.expire_all()
        mirror = {r.sg_id: r for r in db.session.scalars(select(Rental))}
        problems = []
        for sg_rental in self.sg_sim.snapshot()["unitRentals"]:
            rental = mirror.get(sg_rental["id"])
            label = self.unit_label(sg_rental)
            if rental is None:
                problems.append(f"rental of {label} is not in the mirror")
                continue
            fields = sg_rental.get("customFields") or {}
            active = sg_rental["state"] in ACTIVE_RENTAL_STATES
            if (rental.state in ACTIVE_RENTAL_STATES) != active or rental.overdue != bool(sg_rental["overdue"]):
                problems.append(f"rental of {label}: mirror {rental.state}/overdue={rental.overdue}, Storeganise "
                                f"{sg_rental['state']}/overdue={sg_rental['overdue']}")
            if not active:
                continue
            if rental.overlocked != bool(fields.get("pti_overlocked")):
                problems.append(f"rental of {label}: mirror locked={rental.overlocked}, Storeganise "
                                f"pti_overlocked={fields.get('pti_overlocked')}")
            account = db.session.scalar(select(PtiAccount).where(PtiAccount.customer_id == rental.customer_id,
                                                                 PtiAccount.site_id == rental.site_id))
            if (account is not None and account.state == SyncState.IN_SYNC and rental.unit.pti_unit_name
                    and str(fields.get("pti_access_code")) != str(account.access_code)):
                problems.append(f"rental of {label}: Storeganise has code {fields.get('pti_access_code')}, the "
                                f"account {account.access_code}")
        return problems


@pytest.fixture
def sg_for_r3(app, tiny_pti):
    """The two sites' business in the Storeganise simulator (in-process), and our client on it."""
    import httpx

    from dashboard.clients import TRANSPORT_EXTENSION
    from dashboard.storeganise import StoreganiseClient
    from sim.storeganise import DEMO_API_KEY
    from sim.storeganise import create_app as create_sg_sim

    sg_app = create_sg_sim(webhook_url=None, deliver_webhooks=False, pti_base_url=tiny_pti.url, sites=list(SITES))
    transport = httpx.WSGITransport(app=sg_app)
    app.config.update(STOREGANISE_API_URL=SIM_API_URL, STOREGANISE_API_KEY=DEMO_API_KEY)
    app.extensions[TRANSPORT_EXTENSION] = transport
    with StoreganiseClient(SIM_API_URL, api_key=DEMO_API_KEY, transport=transport, sleep=lambda s: None) as client:
        yield sg_app.extensions["storeganise_sim"], client
    app.extensions.pop(TRANSPORT_EXTENSION, None)
    sg_app.extensions["storeganise_sim"].close()


@pytest.mark.slow
def test_storeganise_events_through_webhooks_in_any_order_keep_pti_safe_and_converge(app, client, tiny_pti,
                                                                                     sg_for_r3, monkeypatch):
    sg_sim, sg = sg_for_r3
    hooks = Hooks(sg_sim, client, app.config["STOREGANISE_WEBHOOK_SECRET"])
    run_r3(app, monkeypatch, "R3 (webhooks)", lambda: ThroughWebhooks(tiny_pti, sg_sim, hooks, sg))
