"""End to end over real HTTP: the Storeganise simulator sends signed webhooks to the product, both served on ports.

The worker's part runs in the test: each enqueued handle_delivery job is performed as RQ would perform it.
"""

from __future__ import annotations

import pytest
import redis as redis_lib
from sqlalchemy import select

from dashboard.extensions import db
from dashboard.jobqueue import HANDLE_DELIVERY
from dashboard.models import Rental, SyncAttempt, WebhookDelivery

from .conftest import queued_jobs, reconcile_requests


def work(sim) -> list[str]:
    """Wait for the simulator's deliveries, then perform every handle_delivery job they enqueued."""
    assert sim.wait_for_webhooks(10)
    statuses = []
    for _, job in queued_jobs(HANDLE_DELIVERY):
        statuses.append(job.perform())
        job.delete()
    return statuses


def test_a_move_in_reaches_the_product_signed_and_asks_for_a_push(live):
    sim, control = live
    unit = next(u for u in sim.units.values() if u["state"] == "available" and u["customFields"].get("pti_id"))
    ids = control.post("/_sim/move-in", json={"unitId": unit["id"], "email": "live@example.com",
                                              "firstName": "Live", "lastName": "Wire"}).json()
    assert work(sim) == ["processed"]
    [hook] = sim.snapshot()["webhooks"]
    assert (hook["status"], hook["responseStatus"]) == ("delivered", 200)
    db.session.expire_all()
    assert db.session.get(WebhookDelivery, hook["id"]).status == "processed"
    rental = db.session.scalar(select(Rental).where(Rental.sg_id == ids["unitRentalId"]))
    assert rental.customer.email == "live@example.com"
    assert [trigger for *_, trigger in reconcile_requests()] == ["job.unit_moveIn.completed"]


def test_overdue_then_its_echo_over_http_locks_once_and_loops_never(live, redis_url):
    sim, control = live
    target = next(r for r in sim.rentals.values() if r["state"] == "occupied" and not r["overdue"])
    control.post("/_sim/overdue", json={"unitRentalId": target["id"], "overdue": True}).raise_for_status()
    assert sim.wait_for_webhooks(10)
    [delivery] = [job.id for _, job in queued_jobs(HANDLE_DELIVERY)]
    assert work(sim) == ["processed"]  # markOverdue: lock, and pti_overlocked written back
    # The lock was pushed by the delivery's own job, right away: no second job waits for a worker.
    rental = db.session.scalar(select(Rental).where(Rental.sg_id == target["id"]))
    pushed = db.session.scalars(select(SyncAttempt).where(SyncAttempt.trigger == "unitRental.markOverdue")).all()
    assert [(a.rq_job_id, a.account.customer_id) for a in pushed] == [(delivery, rental.customer_id)]
    requested = reconcile_requests()
    assert requested == []
    with redis_lib.Redis.from_url(redis_url) as redis:
        assert list(redis.scan_iter("pti-sync:pending:*")) == []  # released by the job that pushed it
    assert work(sim) == []  # the echo of our own write: recognised at the receiver, no job
    echo = sim.snapshot()["webhooks"][-1]
    assert db.session.get(WebhookDelivery, echo["id"]).status == "echo"
    assert reconcile_requests() == requested  # nothing new
    types = [h["type"] for h in sim.snapshot()["webhooks"]]
    assert types == ["unitRental.markOverdue", "unitRental.updated"]
    state = control.get("/_sim/state").json()
    assert [w["fields"] for w in state["writes"]] == [{"pti_overlocked": True}]


def pushed_and_written_back(sim, rental: Rental):
    """The rental's customer pushed to PTI once and written back to Storeganise, the jobs and webhooks that caused
    done with; returns their account."""
    from dashboard.engine.reconcile import reconcile
    from dashboard.models import PtiAccount
    from jobs.writeback import write_back_account

    account = db.session.scalar(select(PtiAccount).where(PtiAccount.customer_id == rental.customer_id,
                                                         PtiAccount.site_id == rental.site_id))
    assert reconcile(account.id, "first push").outcome == "ok"
    write_back_account(account.id)
    assert sim.wait_for_webhooks(10)
    for _, job in queued_jobs():
        job.delete()
    return account


def a_pushed_rental_at_the_gate(sim, control, pti, *, overdue: bool):
    """An occupied rental (overdue or not) at a unit the PTI simulator has, its customer pushed and written back.
    Returns its sg_id, its account, and two readings: whether its gate is locked, and the pti_overlocked Storeganise
    holds."""
    from dashboard.models import Unit

    rental = next(r for r in db.session.scalars(select(Rental).join(Unit, Unit.id == Rental.unit_id).where(
        Rental.state == "occupied", Rental.overdue.is_(overdue), Unit.pti_unit_name.is_not(None)))
        if pti.get(f"/_sim/units/{r.site.pti_site_code}/{r.unit.pti_unit_name}").status_code == 200)
    account = pushed_and_written_back(sim, rental)
    site_code, unit, sg_id = rental.site.pti_site_code, rental.unit.pti_unit_name, rental.sg_id
    db.session.commit()

    def gate_locked() -> bool:
        return pti.get(f"/_sim/units/{site_code}/{unit}").json()["locked"]

    def storeganise_holds() -> bool:
        [copy] = [r for r in control.get("/_sim/state").json()["unitRentals"] if r["id"] == sg_id]
        return copy["customFields"]["pti_overlocked"]

    return sg_id, account, gate_locked, storeganise_holds


def test_an_overdue_is_handled_locked_and_written_back_by_one_job_with_one_put_a_rental(live_with_pti):
    """The delivery's job lands the flag, locks the unit with one PTI call (planned from the customer's last push)
    and writes the results back itself: the flip rides in the write-back's PUT, no second PUT, no other job."""
    from dashboard.models import PtiAccount

    sim, control, pti = live_with_pti
    rental = db.session.scalars(select(Rental).where(Rental.state == "occupied", Rental.overdue.is_(False))).first()
    account = pushed_and_written_back(sim, rental)
    site_code, unit = rental.site.pti_site_code, rental.unit.pti_unit_name
    pti_calls = len(pti.get("/_sim/calls").json()["calls"])
    writes = len(control.get("/_sim/state").json()["writes"])

    control.post("/_sim/overdue", json={"unitRentalId": rental.sg_id, "overdue": True}).raise_for_status()
    assert work(sim) == ["processed"]

    calls = [c["operation"] for c in pti.get("/_sim/calls").json()["calls"][pti_calls:] if c["operation"] != "login"]
    assert calls == ["lock_unit"]
    assert pti.get(f"/_sim/units/{site_code}/{unit}").json()["locked"] is True
    puts = [w for w in control.get("/_sim/state").json()["writes"][writes:] if w["id"] == rental.sg_id]
    assert len(puts) == 1 and puts[0]["fields"]["pti_overlocked"] is True and "pti_synced" in puts[0]["fields"]
    assert queued_jobs() == []  # no write-back job, no push job
    db.session.expire_all()
    account = db.session.get(PtiAccount, account.id)
    assert account.write_back_owed is False and account.synced_generation == account.generation
    assert work(sim) == []  # every echo of it recognised at the receiver


@pytest.mark.parametrize("where", ["in the job", "on the write-back thread"])
@pytest.mark.parametrize("while_", ["before its write-back", "while its write-back waits to try again"])
@pytest.mark.parametrize("first", [True, False], ids=["payment during a lockout", "lockout during a payment"])
def test_an_event_handled_meanwhile_keeps_its_pti_overlocked_in_storeganise_and_the_next_pull_keeps_the_lock(
        live_with_pti, monkeypatch, app, first, while_, where, request):
    """An overdue (or payment) event's job pushes, and before it writes back (or while its write-back's PUT, refused
    once by Storeganise, waits to try again), the opposite event is handled by another worker to its end. The first
    job must not PUT its older pti_overlocked after the newer one: Storeganise would hold the old value, and the next
    pull, once our note that it was on its way had lapsed, would read it as a person's suspend (or unsuspend) and
    lock a customer who has paid (or open the gate to one who owes). The same whether the first job writes back
    itself or hands the write-back to its process's thread (a worker's way, jobs/after_gate.py), on which the other
    event's write-back then waits behind it."""
    import threading

    from dashboard.engine import writeback
    from dashboard.jobqueue import get_redis
    from dashboard.storeganise import StoreganiseClient
    from jobs.after_gate import start_after_gate, stop_after_gate
    from jobs.pull import pull_changes

    sim, control, pti = live_with_pti
    sg_id, _, gate_locked, storeganise_holds = a_pushed_rental_at_the_gate(sim, control, pti, overdue=not first)

    write_back, first_job = writeback.write_back, {}

    def the_other_event() -> None:
        if not first_job.get("met"):
            first_job["met"] = True
            sim.configure(faults={"error_rate": 0.0})
            control.post("/_sim/overdue", json={"unitRentalId": sg_id, "overdue": not first}).raise_for_status()
            assert sim.wait_for_webhooks(10)
            others = [job for _, job in queued_jobs(HANDLE_DELIVERY) if job.id != first_job["id"]]
            statuses: list[str] = []

            def another_worker() -> None:
                with app.app_context():
                    statuses.extend(job.perform() for job in others)
                    db.session.remove()

            thread = threading.Thread(target=another_worker)
            thread.start()
            thread.join()
            assert statuses == ["processed"]

    def write_back_meanwhile(account_id, client, overlocks=None):
        if while_ == "before its write-back":
            the_other_event()
        elif not first_job.get("met"):
            sim.configure(faults={"error_rate": 1.0})  # its first PUT refused: the other event runs in the back-off
        return write_back(account_id, client, overlocks)

    monkeypatch.setattr(writeback, "write_back", write_back_meanwhile)
    back_off = StoreganiseClient._back_off

    def the_other_event_during_the_back_off(self, *args) -> None:
        the_other_event()
        back_off(self, *args)  # and the back-off's own wait, as long as it would be

    monkeypatch.setattr(StoreganiseClient, "_back_off", the_other_event_during_the_back_off)
    control.post("/_sim/overdue", json={"unitRentalId": sg_id, "overdue": first}).raise_for_status()
    assert sim.wait_for_webhooks(10)
    [(_, job)] = queued_jobs(HANDLE_DELIVERY)
    first_job["id"] = job.id
    if where == "on the write-back thread":
        runner = start_after_gate()
        request.addfinalizer(stop_after_gate)
    assert job.perform() == "processed"
    if where == "on the write-back thread":
        runner.wait()
    assert first_job["met"]
    job.delete()
    for _ in range(3):  # the echoes of both jobs' writes (what they ask for, if anything, done)
        work(sim)

    assert storeganise_holds() is (not first) and gate_locked() is (not first)
    conn = get_redis()  # two minutes on: our note that a pti_overlocked was on its way has lapsed
    for key in conn.keys("pti-sync:sg-rental:*"):
        conn.hdel(key, "overlock", "until")
    pull_changes()
    for _, job in queued_jobs():
        job.perform()
        job.delete()
    assert gate_locked() is (not first) and storeganise_holds() is (not first)
