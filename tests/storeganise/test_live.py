"""End to end over real HTTP: the Storeganise simulator sends signed webhooks to the product, both served on ports.

The worker's part runs in the test: each enqueued handle_delivery job is performed as RQ would perform it.
"""

from __future__ import annotations

import httpx
import pytest
import redis as redis_lib
from sqlalchemy import select

from dashboard.extensions import db
from dashboard.jobqueue import HANDLE_DELIVERY
from dashboard.models import Rental, SyncAttempt, WebhookDelivery
from jobs.pull import import_all
from sim.server import serve_in_thread
from sim.storeganise import DEMO_API_KEY
from sim.storeganise import create_app as create_sim
from tests.conftest import flush_redis

from .conftest import queued_jobs, reconcile_requests


@pytest.fixture
def live(app, redis_url):
    product = serve_in_thread(app)
    sim_app = create_sim(webhook_url=product.url + "/webhooks/storeganise",
                         webhook_secret=app.config["STOREGANISE_WEBHOOK_SECRET"])
    sim_server = serve_in_thread(sim_app)
    app.config.update(STOREGANISE_API_URL=sim_server.url + "/api/v1/admin", STOREGANISE_API_KEY=DEMO_API_KEY)
    sim = sim_app.extensions["storeganise_sim"]
    import_all()
    flush_redis(redis_url)
    with httpx.Client(base_url=sim_server.url, timeout=10) as control:
        yield sim, control
    sim.close()
    sim_server.stop()
    product.stop()


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
