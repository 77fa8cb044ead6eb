"""R11: PTI down for 60 s during a bulk push of 2,001 rentals across 3 sites (3 × 667), while overdue and payment
webhooks arrive, signed, at the real web process. Every PTI call fails (503, PTI behind its load balancer) for the
whole minute: each site's breaker opens and the Overview says so; the payments and lockouts wait with the rest.
When PTI answers again the breakers close after one probe, the urgent ones (payment → unlock, overdue → lock) reach
PTI ahead of the bulk backlog, the backlog drains, and no PTI user or code exists twice.

Storeganise's echoes of our own write-backs are delivered, as in production (the receiver recognises them and
enqueues nothing). The overdue and payment webhooks are Storeganise's: the simulator flips the rental, and the
test posts the webhook it recorded, signed, to the web process.
"""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import select

from bench.stack import signed_webhook
from dashboard.extensions import db
from dashboard.models import PtiAccount, Rental, Site, SyncAttempt, SyncState, Unit
from tests.chaos.conftest import (
    assert_converged,
    assert_no_user_created_twice,
    chaos_config,
    fetch,
    progress,
    wait_converged,
    wait_for,
)

pytestmark = pytest.mark.chaos

OUTAGE_S = 60.0
EVENTS_PER_KIND = 6  # payments (unmark → unlock) and lockouts (mark → lock), spread over the sites
CONVERGE_S = 420.0


def rentals(where, count: int) -> list[tuple[str, str, str]]:
    """(Storeganise rental id, PTI site code, PTI unit name) of `count` rentals, spread over the sites."""
    rows = db.session.execute(
        select(Rental.sg_id, Site.pti_site_code, Unit.pti_unit_name).join(Site, Rental.site_id == Site.id)
        .join(Unit, Rental.unit_id == Unit.id)
        .where(Rental.state == "occupied", Unit.pti_unit_name.is_not(None), *where).order_by(Rental.id)).all()
    db.session.rollback()
    by_site: dict[str, list] = {}
    for row in rows:
        by_site.setdefault(row[1], []).append(tuple(row))
    chosen = []
    while len(chosen) < count and any(by_site.values()):
        for items in by_site.values():
            if items and len(chosen) < count:
                chosen.append(items.pop())
    assert len(chosen) == count, f"only {len(chosen)} rentals found, {count} wanted"
    return chosen


def flip(stack, rental_id: str, overdue: bool) -> None:
    """Storeganise marks the rental overdue (or paid); its webhook is delivered once, by the test, signed (the
    simulator does not send its own copy: two deliveries of one event are not what Storeganise does)."""
    stack.http.post(f"{stack.sg_url}/_sim/overdue", json={"unitRentalId": rental_id, "overdue": overdue, "send": False}
                    ).raise_for_status()
    body, signature = signed_webhook("unitRental." + ("markOverdue" if overdue else "unmarkOverdue"),
                                     {"unitRentalId": rental_id}, f"{stack.sg_url}/api/v1/admin")
    response = stack.post_webhook(body, signature)
    assert response.status_code == 200, f"webhook answered {response.status_code}"


def story(rental_ids: list[str]) -> str:
    """What the database says of these rentals' accounts and their last attempts (printed when the urgent ones are
    late, so a failure explains itself)."""
    db.session.rollback()
    lines = []
    for rental in db.session.scalars(select(Rental).where(Rental.sg_id.in_(rental_ids))):
        account = db.session.scalar(select(PtiAccount).where(PtiAccount.customer_id == rental.customer_id,
                                                             PtiAccount.site_id == rental.site_id))
        lines.append(f"rental {rental.sg_id} overdue={rental.overdue} overlocked={rental.overlocked} "
                     f"sync={rental.sync_state}; account {account.id} {account.state} urgent={account.urgent} "
                     f"gen {account.synced_generation}/{account.generation} attempts={account.attempts} "
                     f"error={account.last_error} next={account.next_attempt_at}")
        attempts = db.session.scalars(select(SyncAttempt).where(SyncAttempt.account_id == account.id)
                                      .order_by(SyncAttempt.id.desc()).limit(6)).all()
        lines += [f"    {a.started_at:%H:%M:%S.%f} {a.trigger} gen {a.generation} {a.outcome} {a.reason or ''}"
                  for a in reversed(attempts)]
    db.session.rollback()
    return "\n".join(lines)


def sites_down(html: str) -> set[str]:
    """The sites whose Overview tile says PTI is not answering (breaker open, or half-open waiting for its probe)."""
    tiles = re.findall(r'<article class="tile[^"]*" data-site-id="(\d+)">(.*?)</article>', html, re.S)
    return {site_id for site_id, tile in tiles if re.search(r'data-outage="(circuit_open|half_open)"', tile)}


def test_pti_down_60_s_during_a_2000_rental_bulk_push_with_payments_arriving(start_stack):
    stack = start_stack(chaos_config(sites=3, units=700, rented=667, workers=4, web_workers=2, pti_threads=48))
    page = stack.dashboard("manager")
    payments = rentals([Rental.overdue.is_(True)], EVENTS_PER_KIND)  # overdue in the demo data: they pay
    lockouts = rentals([Rental.overdue.is_(False)], EVENTS_PER_KIND)
    sites = [str(s) for s in db.session.scalars(select(Site.id))]
    db.session.rollback()

    started = time.monotonic()
    stack.push_all("chaos-bulk")
    wait_for(lambda: progress(stack)[0] >= 300, "300 accounts pushed", 240)
    stack.pti_faults(error_rate=1.0, error_status=503)
    down = time.monotonic()
    done, total = progress(stack)
    assert done < total, "the push had finished before PTI went down"
    try:
        for (rental_id, _, _), (other, _, _) in zip(payments, lockouts, strict=True):
            flip(stack, rental_id, False)
            flip(stack, other, True)
        # Every site's breaker opens, and the Overview shows each site as not answering.
        wait_for(lambda: sites_down(fetch(page, "/")[1]) >= set(sites),
                 lambda: f"the Overview to show PTI not answering at every site "
                         f"(shows {sorted(sites_down(fetch(page, '/')[1]))} of {sites})", OUTAGE_S - 10)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down)))
    finally:
        stack.pti_faults()
    back = time.monotonic()
    owed_when_back = progress(stack)

    # The urgent ones reach the gate ahead of the backlog.
    def gates() -> dict[str, bool]:
        units = {(code, u["name"]): u["locked"] for code, s in stack.pti_state()["sites"].items()
                 for u in s["units"]}
        return {rental_id: units[(code, unit)] for rental_id, code, unit in payments + lockouts}

    wanted = {r[0]: False for r in payments} | {r[0]: True for r in lockouts}
    urgent_ids = [r[0] for r in payments + lockouts]
    wait_for(lambda: gates() == wanted, lambda: f"the payments and lockouts to reach PTI: {gates()}\n"
                                                f"{story(urgent_ids)}", CONVERGE_S)
    urgent_s = time.monotonic() - back
    pushed_then = progress(stack)[0]
    late = story(urgent_ids) if pushed_then >= total else ""

    result = wait_converged(stack, back, CONVERGE_S)
    assert_converged(stack)
    assert_no_user_created_twice(stack)
    status, html, _ = fetch(page, "/")
    assert status == 200 and not sites_down(html), "the Overview still shows PTI down after it converged"
    db.session.rollback()
    in_sync = stack.count(Rental, Rental.sync_state == SyncState.IN_SYNC)
    print(f"\n{total} accounts ({in_sync} rentals in sync); PTI down {back - down:.0f} s with {total - done} owed; "
          f"payments and lockouts at the gate {urgent_s:.1f} s after PTI was back, when {pushed_then} of {total} "
          f"were pushed (at PTI's return {owed_when_back[0]}); converged {result.seconds:.1f} s after PTI was back "
          f"({time.monotonic() - started:.0f} s in all); longest an owed account waited with no live job "
          f"{result.longest_unheld_s:.1f} s")
    assert pushed_then < total, f"the urgent ones reached PTI only once the whole backlog had drained:\n{late}"
