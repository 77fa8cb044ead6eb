"""Every change's journey on the rental page: each event and staff action followed to PTI's confirmation."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from dashboard.extensions import db
from dashboard.models import AuditEntry, PtiAccount, Rental, SyncAttempt, WebhookDelivery, utcnow
from dashboard.views.journey import journeys

T0 = utcnow().replace(microsecond=0) - timedelta(hours=1)


def _rental() -> tuple[Rental, PtiAccount]:
    rental = db.session.scalar(select(Rental).where(Rental.state == "occupied").order_by(Rental.id))
    account = PtiAccount(customer_id=rental.customer_id, site_id=rental.site_id, generation=3, synced_generation=3)
    db.session.add(account)
    db.session.flush()
    return rental, account


def _event(rental, event_id: str, kind: str, at, handled_after_ms: int | None = 40, status: str = "processed",
           error: str | None = None) -> None:
    db.session.add(WebhookDelivery(
        id=event_id, type=kind, received_at=at, status=status, payload={"data": {"unitRentalId": rental.sg_id}},
        rental_sg_id=rental.sg_id, error=error,
        handled_at=None if handled_after_ms is None else at + timedelta(milliseconds=handled_after_ms)))


def _push(account, at, outcome: str = "ok", duration_ms: int = 180, reason: str | None = None) -> None:
    db.session.add(SyncAttempt(account_id=account.id, trigger="unitRental.markOverdue", started_at=at,
                               duration_ms=duration_ms, generation=3, outcome=outcome, reason=reason))


def test_an_overdue_followed_to_pti_shows_each_step_and_the_time_to_the_gate(demo_business):
    rental, account = _rental()
    _push(account, T0 - timedelta(seconds=5))  # an older push carries nothing received after it
    _event(rental, "ev-1", "unitRental.markOverdue", T0)
    _push(account, T0 + timedelta(milliseconds=90), duration_ms=210)
    db.session.commit()

    [journey] = journeys(rental)

    assert journey.what == "Marked overdue in Storeganise" and journey.state == "confirmed"
    assert [(s.label, s.after_ms) for s in journey.steps] == [
        ("Received from Storeganise", 0), ("Handled: the mirror updated, the push asked for", 40),
        ("Sent to PTI", 90), ("Confirmed by PTI", 300)]
    assert journey.total_ms == 300


def test_a_push_retried_until_pti_confirmed_counts_its_tries(demo_business):
    rental, account = _rental()
    _event(rental, "ev-2", "unitRental.unmarkOverdue", T0)
    _push(account, T0 + timedelta(milliseconds=50), outcome="retry", reason="pti_unavailable")
    _push(account, T0 + timedelta(seconds=5), outcome="retry", reason="pti_unavailable")
    _push(account, T0 + timedelta(seconds=30), outcome="noop", duration_ms=100)
    db.session.commit()

    [journey] = journeys(rental)

    assert journey.state == "confirmed" and journey.total_ms == 30_100
    assert [s.label for s in journey.steps][-2:] == ["Sent again (3 tries)", "Confirmed: PTI already had it"]


def test_changes_not_at_pti_yet_say_why(demo_business):
    rental, account = _rental()
    _event(rental, "ev-parked", "unitRental.markOverdue", T0)
    _push(account, T0 + timedelta(seconds=1), outcome="failed", reason="invalid_credentials")
    _event(rental, "ev-broken", "unitRental.updated", T0 + timedelta(minutes=1), handled_after_ms=None,
           status="failed", error="The unitRental.updated event names no unit rental (unitRentalId), nor a job.")
    _event(rental, "ev-queued", "job.unit_moveOut.completed", T0 + timedelta(minutes=2), handled_after_ms=None,
           status="queued")
    _event(rental, "ev-echo", "unitRental.updated", T0 + timedelta(minutes=3), status="echo")
    db.session.add(AuditEntry(at=T0 + timedelta(minutes=4), actor="staff@demo.test", action="resync customer",
                              target_type="customer", target_id=rental.customer.sg_id))
    db.session.add(AuditEntry(at=T0 + timedelta(minutes=5), actor="admin@demo.test", action="resync site",
                              target_type="site", target_id=rental.site.sg_id))
    db.session.add(AuditEntry(at=T0 + timedelta(minutes=6), actor="admin@demo.test", action="resync site",
                              target_type="site", target_id="another-site"))
    db.session.commit()

    found = journeys(rental)

    assert [(j.what, j.state) for j in found] == [
        ("Resync site by admin@demo.test", "waiting"),  # the whole site, so this rental too; not another site
        ("Resync customer by staff@demo.test", "waiting"),  # no push began since
        ("Move-out completed in Storeganise", "waiting"),  # the worker has not handled it yet
        ("Rental edited in Storeganise", "not_handled"),
        ("Marked overdue in Storeganise", "parked"),
    ]  # our own echo is not a change
    assert found[3].detail.startswith("The unitRental.updated event names no unit rental")
    assert found[4].detail == "invalid_credentials"


def test_the_rental_page_shows_the_journeys_and_the_poll_does_not_build_them(app, client, auth, demo_business):
    rental, account = _rental()
    _event(rental, "ev-page", "unitRental.markOverdue", T0)
    _push(account, T0 + timedelta(milliseconds=90), duration_ms=210)
    db.session.commit()
    auth.login("manager")

    html = client.get(f"/rentals/{rental.id}").get_data(as_text=True)
    poll = client.get(f"/rentals/{rental.id}/sync", headers={"HX-Request": "true"}).get_data(as_text=True)

    assert re.search(r'data-journey-state="confirmed"', html) and "PTI had it 0.30 s later" in html
    assert "Sent to PTI" in html and "+90 ms" in html
    assert "journey" not in poll


def test_an_event_names_the_rental_it_is_about():
    from dashboard.storeganise.webhooks import WebhookEvent

    assert WebhookEvent("e", "unitRental.markOverdue", None, {"unitRentalId": "r-1"}).rental_id == "r-1"
    assert WebhookEvent("e", "job.unit_transfer.completed", None,
                        {"oldRentalId": "r-1", "newRentalId": "r-2"}).rental_id == "r-2"
    assert WebhookEvent("e", "user.updated", None, {"userId": "u-1"}).rental_id is None
    assert WebhookEvent("e", "unitRental.updated", None, {"unitRentalId": "x" * 65}).rental_id is None
