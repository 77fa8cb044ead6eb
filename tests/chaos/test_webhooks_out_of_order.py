"""R12: Storeganise's webhooks arrive out of order at the real web process (signed, as Storeganise sends them):
a move-out before its move-in, an unmark before its mark. The product re-reads each record from Storeganise rather
than trusting the event, so the end state is Storeganise's truth, whatever the order.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from bench.stack import WEBHOOK_SECRET
from dashboard.extensions import db
from dashboard.models import Customer, Rental, Site, SyncState, Unit
from dashboard.storeganise import compact_json, sign
from tests.chaos.conftest import (
    assert_converged,
    chaos_config,
    deliveries_handled,
    wait_converged,
    wait_for,
    write_backs_owed,
)

pytestmark = pytest.mark.chaos

CONVERGE_S = 120.0
PUSH_S = 180.0


def deliver(stack, events: list[dict]) -> None:
    """Post these recorded Storeganise events to the web process, in the order given, signed; each answered 200."""
    for event in events:
        body = compact_json({k: event[k] for k in ("id", "type", "created", "data", "apiUrl", "addonId")
                             if k in event})
        response = stack.post_webhook(body, sign(WEBHOOK_SECRET, body))
        assert response.status_code == 200, f"{event['type']}: {response.status_code} {response.text[:200]}"


def sg_call(stack, path: str, **body) -> dict:
    response = stack.http.post(f"{stack.sg_url}/_sim/{path}", json=body)
    assert response.status_code == 200, f"{path}: {response.text}"
    return response.json()


def quiet(stack) -> None:
    """Until Storeganise has delivered every webhook it recorded (our write-backs' echoes too)."""
    wait_for(lambda: all(w["status"] not in ("pending", "retrying") for w in stack.sg_state()["webhooks"]),
             "Storeganise to deliver its webhooks", 60)


def test_webhooks_out_of_order_end_in_storeganises_truth(start_stack):
    stack = start_stack(chaos_config(sites=1, units=40, rented=30, workers=2))
    stack.push_all("chaos-initial")
    wait_converged(stack, time.monotonic(), PUSH_S)
    wait_for(lambda: write_backs_owed(stack) == 0, "the initial push's write-backs", PUSH_S)
    quiet(stack)

    sg = stack.sg_state()
    site = db.session.scalar(select(Site))
    mapped = [u for u in sg["units"] if u["siteId"] == site.sg_id and u["state"] == "available"
              and (u.get("customFields") or {}).get("pti_id")]
    assert len(mapped) >= 3, "the site has too few vacant mapped units"
    in_sync = db.session.scalars(select(Rental).join(Unit).where(
        Rental.site_id == site.id, Rental.state == "occupied", Rental.overlocked.is_(False),
        Rental.sync_state == SyncState.IN_SYNC, Unit.pti_unit_name.is_not(None)).order_by(Rental.id)).all()
    paid_late, overdue_again = in_sync[0].sg_id, in_sync[1].sg_id
    db.session.rollback()

    # What happens in Storeganise, in this order, while its webhooks are held back.
    stack.sg_config(deliver=False)
    before = len(stack.sg_state()["webhooks"])
    gone = sg_call(stack, "move-in", unitId=mapped[0]["id"], email="brief.stay@example.test", firstName="Brief",
                   lastName="Stay")
    sg_call(stack, "move-out", unitRentalId=gone["unitRentalId"])
    mover = sg_call(stack, "move-in", unitId=mapped[1]["id"], email="mover@example.test", firstName="Moving",
                    lastName="Around")
    sg_call(stack, "move-out", unitRentalId=mover["unitRentalId"])
    stays = sg_call(stack, "move-in", unitId=mapped[2]["id"], email="mover@example.test")
    sg_call(stack, "overdue", unitRentalId=paid_late, overdue=True)
    sg_call(stack, "overdue", unitRentalId=paid_late, overdue=False)  # truth: paid, unlocked
    sg_call(stack, "overdue", unitRentalId=overdue_again, overdue=True)
    sg_call(stack, "overdue", unitRentalId=overdue_again, overdue=False)
    sg_call(stack, "overdue", unitRentalId=overdue_again, overdue=True)  # truth: overdue, locked
    # (an echo of our own write-backs may be among them: it is left out, as nothing happened in it)
    events = [e for e in stack.sg_state()["webhooks"][before:] if not e["type"].endswith(".updated")]
    stack.sg_config(drop_pending=True, deliver=True)
    assert [e["type"].rsplit(".", 1)[-1] for e in events] == [
        "completed", "completed", "completed", "completed", "completed",
        "markOverdue", "unmarkOverdue", "markOverdue", "unmarkOverdue", "markOverdue"]

    # They arrive last first: every move-out before its move-in, every unmark before its mark.
    sent = time.monotonic()
    deliver(stack, list(reversed(events)))
    deliveries_handled(stack, [e["id"] for e in events], CONVERGE_S)
    took = wait_converged(stack, sent, CONVERGE_S)
    quiet(stack)
    wait_converged(stack, time.monotonic(), CONVERGE_S)  # an echo's re-read may have marked someone once more

    # The mirror holds Storeganise's truth for every record the events named...
    truth = {r["id"]: r for r in stack.sg_state()["unitRentals"]}
    db.session.rollback()
    for rental_id in (gone["unitRentalId"], mover["unitRentalId"], stays["unitRentalId"], paid_late, overdue_again):
        rental = db.session.scalar(select(Rental).where(Rental.sg_id == rental_id))
        assert rental is not None, f"rental {rental_id} never reached the mirror"
        assert (rental.state, rental.overdue) == (truth[rental_id]["state"], truth[rental_id]["overdue"]), rental_id
    # ... and PTI holds the mirror's: the brief stay has no PTI user, the mover only the unit they stay in, the late
    # payer's unit is unlocked, the other one locked.
    assert_converged(stack)
    pti = stack.pti_state()["sites"][site.pti_site_code]
    users = {u["marker"]: u for u in pti["users"] if u["marker"]}
    brief = db.session.scalar(select(Customer).where(Customer.email == "brief.stay@example.test"))
    moving = db.session.scalar(select(Customer).where(Customer.email == "mover@example.test"))
    assert brief.sg_id not in users
    assert sorted(users[moving.sg_id]["units"]) == [mapped[2]["customFields"]["pti_id"]]
    units = {u["name"]: u for u in pti["units"]}
    for rental_id, locked in ((paid_late, False), (overdue_again, True)):
        rental = db.session.scalar(select(Rental).where(Rental.sg_id == rental_id))
        assert units[rental.unit.pti_unit_name]["locked"] is locked, rental_id
    db.session.rollback()
    print(f"\nout-of-order webhooks converged {took.seconds:.1f} s after the last was sent")
