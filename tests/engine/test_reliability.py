"""Reliability scenarios R1, R2, R4, R6 and R7 of reliability.md, against the live PTI simulator.

Jobs run for real (reconcile, reconcile_batch); PTI misbehaves through the simulator's faults.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import current_app
from sqlalchemy import select

from dashboard.engine import reconcile as reconcile_module
from dashboard.engine import site_guard
from dashboard.engine.intent import mark_dirty
from dashboard.engine.reconcile import reconcile
from dashboard.engine.site_guard import URGENT_WAIT_MARK_S, SiteGuard
from dashboard.extensions import db
from dashboard.jobqueue import get_redis
from dashboard.models import PtiAccount, Rental
from dashboard.pti import PtiRetryableError
from jobs.reconcile import reconcile_batch
from sim.pti import create_app as pti_app
from sim.server import serve_in_thread
from tests.engine.conftest import PtiSim, account_of, customer_with, site

FAST_TIMEOUT = {"PTI_READ_TIMEOUT_S": 0.3, "PTI_CONNECT_TIMEOUT_S": 0.5}


def mark_all(site_codes=None) -> list[int]:
    """Mark every customer with an active rental (at the given sites) for a push; returns the account ids."""
    rentals = db.session.scalars(select(Rental).where(Rental.state == "occupied")).all()
    pairs = {(r.customer_id, r.site_id) for r in rentals if site_codes is None or r.site.code in site_codes}
    accounts = [mark_dirty(c, s) for c, s in sorted(pairs)]
    db.session.commit()
    return [a.id for a in accounts]


def converge(account_ids: list[int], rounds: int = 8) -> None:
    """Run batches until no account is owed a push (as the relay would), bounded."""
    by_site: dict[int, list[int]] = {}
    for account in db.session.scalars(select(PtiAccount).where(PtiAccount.id.in_(account_ids))):
        by_site.setdefault(account.site_id, []).append(account.id)
    app = current_app._get_current_object()
    for _ in range(rounds):
        with ThreadPoolExecutor(max_workers=len(by_site)) as pool:
            list(pool.map(lambda ids: _in_context(app, reconcile_batch, ids, "test"), by_site.values()))
        db.session.expire_all()
        owed = db.session.scalars(select(PtiAccount.id).where(
            PtiAccount.id.in_(account_ids), PtiAccount.generation > PtiAccount.synced_generation)).all()
        if not owed:
            return
        get_redis().flushdb()  # breaker and pauses from the storm: the next round starts clean, like after a wait
        by_site = {s: [a for a in ids if a in owed] for s, ids in by_site.items() if set(ids) & set(owed)}
    raise AssertionError(f"{len(owed)} accounts still owed a push after {rounds} rounds")


def assert_pti_matches_mirror(pti: PtiSim, account_ids: list[int]) -> None:
    """One user per customer with the stored code; each active rental's unit rented to it, locked as wanted."""
    state = pti.state()["sites"]
    for account in db.session.scalars(select(PtiAccount).where(PtiAccount.id.in_(account_ids))):
        sim = state[account.site.pti_site_code]
        units = {u["name"]: u for u in sim["units"]}
        granted = [r for r in account.customer.rentals
                   if r.site_id == account.site_id and r.active and r.unit.pti_unit_name in units]
        mine = [u for u in sim["users"] if u["marker"] == account.customer.sg_id]
        assert len(mine) == (1 if granted else 0), f"customer {account.customer.sg_id} has {len(mine)} PTI users"
        for rental in granted:
            unit = units[rental.unit.pti_unit_name]
            assert mine[0]["access_code"] == account.access_code
            assert (unit["user_id"], unit["locked"]) == (mine[0]["id"], rental.overlocked)
    for code, sim in state.items():
        codes = Counter(u["access_code"] for u in sim["users"])
        assert [c for c, n in codes.items() if n > 1] == [], f"duplicate access codes at {code}"


def test_r1_a_fault_storm_converges_without_duplicates_and_few_extra_calls(app, tmp_path):
    """R1: 500 rentals at 3 sites, 20% of PTI calls fail (503, 500, time-outs): all converge, no duplicate users or
    codes, and PTI calls stay within 1.35x of what the same push costs without faults."""
    from dashboard.demo import load_business
    from sim.demo_data import build_demo_business, make_sites

    app.config.update(FAST_TIMEOUT)
    sites = make_sites(3, 180, 167, prefix="storm")
    server = serve_in_thread(pti_app(build_demo_business("x", sites=sites).pti_sites))
    pti = PtiSim(server.url)
    try:
        load_business(build_demo_business(server.url, sites=sites))
        assert db.session.query(Rental).filter(Rental.state == "occupied").count() >= 500
        accounts = mark_all()
        converge(accounts)
        minimum = pti.state()["calls"]["total"]

        pti.reset()
        for account in db.session.scalars(select(PtiAccount)):  # PTI forgot everything: push it all again
            account.pti_user_id = None
        db.session.commit()
        get_redis().flushdb()
        accounts = mark_all()
        pti.faults(error_rate=0.15, error_status=503, timeout_rate=0.05, timeout_ms=400, seed=7)
        converge(accounts)
        pti.faults()
        stormy = pti.state()["calls"]
        assert stormy["total"] <= 1.35 * minimum, f"{stormy['total']} PTI calls against a minimum of {minimum}"
        assert_pti_matches_mirror(pti, accounts)
    finally:
        pti.close()
        server.stop()


def test_r2_a_create_that_pti_applies_and_then_times_out_never_makes_a_second_user(app, pti):
    """R2: 100 move-ins, and PTI applies every create and then loses the answer: exactly 100 PTI users, one per
    move-in, each with the access code the product stored."""
    from dashboard.demo import load_business
    from sim.demo_data import build_demo_business, make_sites

    app.config.update(FAST_TIMEOUT)
    sites = make_sites(2, 80, 75, prefix="r2")
    server = serve_in_thread(pti_app(build_demo_business("x", sites=sites).pti_sites))
    sim = PtiSim(server.url)
    try:
        load_business(build_demo_business(server.url, sites=sites))
        move_ins = sorted({(r.customer_id, r.site_id) for r in db.session.scalars(select(Rental)) if r.active
                           and r.unit.pti_unit_name and not r.unit.pti_switched_off})
        assert len(move_ins) >= 100
        per_site = {s: [p for p in move_ins if p[1] == s][:50] for s in sorted({s for _, s in move_ins})}
        accounts = [mark_dirty(c, s).id for pairs in per_site.values() for c, s in pairs]
        db.session.commit()
        assert len(accounts) == 100

        sim.faults(apply_then_timeout_rate=1, timeout_ms=450, operations=["create_user"])
        converge(accounts)
        sim.faults()
        time.sleep(0.6)  # the simulator logs a call when its (lost) answer is sent, 450 ms after it applied it
        creates = [c for c in sim.calls() if c["operation"] == "create_user"]
        assert len(creates) >= 100 and all(c["fault"] == "apply_then_timeout" and c["applied"] for c in creates)

        assert_pti_matches_mirror(sim, accounts)
        users = [u for code in sim.state()["sites"] for u in sim.site(code)["users"]]
        assert len(users) == 100, f"{len(users)} PTI users for 100 move-ins"
        wanted = {}
        for account in db.session.scalars(select(PtiAccount).where(PtiAccount.id.in_(accounts))):
            wanted[(account.site.pti_site_code, account.customer.sg_id)] = (account.pti_user_id, account.access_code)
        got = {(code, u["marker"]): (u["id"], u["access_code"])
               for code in sim.state()["sites"] for u in sim.site(code)["users"]}
        assert got == wanted  # the same 100 users, ids and codes on both sides
    finally:
        sim.close()
        server.stop()


SITE_LEVEL = {"login", "list_access_levels", "list_time_zones", "list_units", "list_users"}


def fifty_concurrent_requests(app, pti: PtiSim, customer, monkeypatch) -> tuple[int, list[dict]]:
    """50 threads each change one of the customer's two rentals (lock or unlock), ask for a push and run it at once;
    returns the account id and every PTI call they made, each checked to be about this customer.

    A call about the customer names its user, one of its units, its e-mail or a code drawn for it. Without the
    account lock several pushes draw a code each and only the last one written stays on the account, so the codes
    drawn are recorded as they are chosen."""
    drawn: set[int] = set()
    choose = reconcile_module.choose_code

    def recording_choose(*args, **kwargs):
        code = choose(*args, **kwargs)
        drawn.add(code)
        return code

    monkeypatch.setattr(reconcile_module, "choose_code", recording_choose)
    account = mark_dirty(customer, site("northgate").id)
    db.session.commit()
    account_id, rental_ids = account.id, [r.id for r in customer.rentals]

    def request(i: int) -> None:
        with app.app_context():
            rental = db.session.get(Rental, rental_ids[i % 2])
            rental.overlocked = i % 3 == 0
            mark_dirty(rental.customer_id, rental.site_id)
            db.session.commit()
            reconcile(account_id, f"r4-{i}")

    with ThreadPoolExecutor(max_workers=50) as pool:
        list(pool.map(request, range(50)))
    time.sleep(0.1)  # the simulator logs a call as its answer leaves
    calls = sorted(pti.calls(), key=lambda c: c["start"])
    db.session.expire_all()
    account = db.session.get(PtiAccount, account_id)
    names = {r.unit.pti_unit_name for r in customer.rentals}
    ours = {u["id"] for u in pti.site("NG01")["users"] if u["marker"] == customer.sg_id} | {
        c["user_id"] for c in calls if c["operation"] == "create_user" and c["email"] == customer.email}
    for c in calls:  # only this customer's jobs ran: every call is about it (or is the site's own)
        about_it = (c["user_id"] in ours or c["unit_name"] in names or c["email"] == customer.email
                    or c["access_code"] in drawn | {account.access_code})
        assert about_it or c["operation"] in SITE_LEVEL, c
    return account_id, calls


def overlapping(calls: list[dict]) -> list[tuple[str, str]]:
    """Pairs of calls in flight at the same time (every pair, not only neighbours)."""
    found = []
    for i, a in enumerate(calls):
        for b in calls[i + 1:]:
            if b["start"] >= a["end"]:
                break
            found.append((a["operation"], b["operation"]))
    return found


def test_r4_concurrent_pushes_for_one_customer_never_overlap_and_the_last_intent_wins(app, business, pti,
                                                                                     monkeypatch):
    """R4: 50 concurrent requests for one customer, changing its lock state: PTI never sees two calls about that
    customer at once (look-ups and the create included), and PTI ends in the state last asked for, with no run
    after the 50."""
    pti.faults(latency_ms=15)
    customer = customer_with(2)
    account_id, calls = fifty_concurrent_requests(app, pti, customer, monkeypatch)

    operations = Counter(c["operation"] for c in calls)
    # Each run talked to PTI, under the lock: a look-up first, or (a lock change planned from the last push) the
    # lock or unlock alone.
    assert operations["create_user"] == 1
    assert sum(operations[op] for op in ("find_user_by_access_code", "get_user", "lock_unit", "unlock_unit")) >= 50
    assert overlapping(calls) == []
    user = pti.user_with_marker("NG01", customer.sg_id)
    account = db.session.get(PtiAccount, account_id)
    assert account.synced_generation == account.generation and user["access_code"] == account.access_code
    for rental in account.customer.rentals:
        unit = pti.unit("NG01", rental.unit.pti_unit_name)
        assert (unit["user_id"], unit["locked"]) == (user["id"], rental.overlocked)


def test_r4_without_the_account_lock_the_same_requests_overlap_at_pti(app, business, pti, monkeypatch):
    """The check above has teeth: with the per-account lock made a no-op (every job its own key), the same 50
    requests do send PTI calls about the customer at the same time."""
    counter = iter(range(10**6))
    monkeypatch.setattr("dashboard.engine.reconcile.lock_key", lambda account_id: f"r4-no-lock:{next(counter)}")
    pti.faults(latency_ms=15)
    _, calls = fifty_concurrent_requests(app, pti, customer_with(2), monkeypatch)
    assert len(overlapping(calls)) > 0


R6_CUSTOMERS = 20


def pushable(site_code: str, count: int) -> list[int]:
    """Mark `count` customers of the site who have a unit PTI knows (each push creates a user); their account ids."""
    pairs = sorted({(r.customer_id, r.site_id) for r in db.session.scalars(select(Rental)) if r.site.code == site_code
                    and r.active and r.unit.pti_unit_name and " " not in r.unit.pti_unit_name
                    and len(r.unit.pti_unit_name) <= 10})
    assert len(pairs) >= count
    ids = [mark_dirty(c, s).id for c, s in pairs[:count]]
    db.session.commit()
    return ids


def r6_scenario(app, pti: PtiSim) -> dict:
    """Riverside creates 20 users alone (timed). Then PTI forgets them, Northgate's PTI goes down (every call a 503)
    and Northgate is asked to create 20 users of its own; while Northgate retries those 20, Riverside creates the same
    20 users again (timed)."""
    from dashboard.engine.reconcile import site_guard

    app.config.update(FAST_TIMEOUT)
    pti.faults(latency_ms=10)
    riverside = pushable("riverside", R6_CUSTOMERS)
    started = time.monotonic()
    alone = reconcile_batch(riverside, "r6-alone")
    seconds_alone = time.monotonic() - started
    assert alone == {"ok": R6_CUSTOMERS}

    pti.reset()  # PTI forgets Riverside's users: the second push is the same work (20 creates)
    for account in db.session.scalars(select(PtiAccount).where(PtiAccount.id.in_(riverside))):
        account.pti_user_id = None
    db.session.commit()
    get_redis().flushdb()
    riverside = pushable("riverside", R6_CUSTOMERS)
    northgate = pushable("northgate", R6_CUSTOMERS)
    pti.faults(latency_ms=10)
    pti.faults(site="NG01", error_rate=1, error_status=503, latency_ms=10)
    first_down = reconcile_batch(northgate, "r6-down")  # the outage begins: Northgate's pushes fail
    northgate_open = site_guard(site("northgate")).breaker_open()
    down: dict = {}  # and go on failing, with retries of the same 20 pushes, while Riverside does its work
    broken = threading.Thread(target=lambda: down.update(_in_context(app, reconcile_batch, northgate, "r6-retry")))
    broken.start()
    started = time.monotonic()
    during = reconcile_batch(riverside, "r6-during")
    seconds_during = time.monotonic() - started
    broken.join(timeout=120)
    assert not broken.is_alive()
    return {"northgate": northgate, "riverside": riverside, "alone": seconds_alone, "during": seconds_during,
            "riverside_outcomes": during, "northgate_outcomes": Counter(first_down) + Counter(down),
            "northgate_open": northgate_open and site_guard(site("northgate")).breaker_open(),
            "riverside_open": site_guard(site("riverside")).breaker_open()}


def test_r6_one_site_down_opens_its_breaker_and_leaves_the_other_site_fast(app, business, pti):
    """R6: both sites push 20 new users; Northgate's PTI is down, Riverside's is healthy: Northgate's breaker opens
    and stops calls to it; every Riverside push succeeds, as fast as Riverside alone."""
    r6 = r6_scenario(app, pti)
    assert r6["northgate_open"] and "ok" not in r6["northgate_outcomes"]
    assert r6["riverside_outcomes"] == {"ok": R6_CUSTOMERS} and not r6["riverside_open"]
    users = {u["marker"] for u in pti.site("RS02")["users"]}
    assert len(users) == R6_CUSTOMERS and pti.site("NG01")["users"] == []
    assert r6["during"] <= 1.5 * r6["alone"] + 0.5, (r6["alone"], r6["during"])

    calls_before = pti.state()["calls"]["by_site"].get("NG01", 0)
    outcome = reconcile(r6["northgate"][0], "r6-while-open")
    assert (outcome.outcome, outcome.reason) == ("retry", "circuit_open")
    assert pti.state()["calls"]["by_site"].get("NG01", 0) == calls_before, "a call reached a site whose breaker is open"


def test_r6_fails_when_the_breaker_is_shared_by_the_sites(app, business, pti, monkeypatch):
    """The check above has teeth: with one breaker for every site, Northgate's outage stops Riverside's pushes."""
    monkeypatch.setattr("dashboard.engine.reconcile.site_guard",
                        lambda site, urgent=False: SiteGuard(get_redis(), 0, urgent=urgent,
                                                             limit=current_app.config["PTI_SITE_CONCURRENCY"]))
    r6 = r6_scenario(app, pti)
    assert r6["northgate_open"]
    assert r6["riverside_outcomes"] != {"ok": R6_CUSTOMERS}


def test_r7_a_short_retry_after_is_waited_out_and_no_call_arrives_early(app, business, pti):
    """R7: PTI answers 429 with a short Retry-After: the job waits it out, then succeeds; nothing arrives early."""
    app.config.update(FAST_TIMEOUT)
    pti.faults(site="NG01", retry_after_s=1.5)
    customer = customer_with(1)
    account = mark_dirty(customer, site("northgate").id)
    db.session.commit()
    started = time.monotonic()
    assert reconcile(account.id, "r7").outcome == "ok"
    assert time.monotonic() - started >= 1.0
    assert pti.state()["calls"]["early"] == 0


def test_r7_a_long_retry_after_pauses_every_job_of_the_site_until_it_expires(app, business, pti, monkeypatch):
    """R7: a Retry-After longer than a job should wait ends the attempt, and other jobs for the same site send
    nothing until it expires; then they succeed."""
    monkeypatch.setattr("dashboard.engine.reconcile.MAX_INLINE_WAIT_S", 0.5)
    app.config.update(FAST_TIMEOUT)
    pti.faults(site="NG01", retry_after_s=1.5)
    customers = [customer_with(1), customer_with(2)]
    for customer in customers:
        mark_dirty(customer, site("northgate").id)
    db.session.commit()
    started = time.monotonic()
    first = reconcile(account_of(customers[0]).id, "r7")
    calls = pti.state()["calls"]["total"]
    second = reconcile(account_of(customers[1]).id, "r7")
    assert (first.outcome, first.reason, second.outcome, second.reason) == (
        "retry", "pti_rate_limited", "retry", "pti_rate_limited")
    # The second job is told to wait out what is left of PTI's pause (1.5 s from the first 429), however slowly
    # this machine got there.
    assert second.retry_in >= 1.5 - (time.monotonic() - started) - 0.05
    assert pti.state()["calls"]["total"] == calls, "a job called PTI during the Retry-After pause"
    time.sleep(1.6)
    for customer in customers:
        assert reconcile(account_of(customer).id, "r7-after").outcome == "ok"
    assert pti.state()["calls"]["early"] == 0


def _in_context(app, fn, *args):
    with app.app_context():
        return fn(*args)


@pytest.fixture(autouse=True)
def _no_leftover_faults(pti_server):
    yield
    sim = PtiSim(pti_server.url)
    sim.faults()
    sim.close()



def site_down():
    raise PtiRetryableError("pti_unreachable", operation="get_user")


def tripped_guard() -> SiteGuard:
    """A site guard whose breaker two failures in a row have just opened (a 0.2 s pause)."""
    guard = SiteGuard(get_redis(), 1, limit=4, threshold=2, cooldown=0.2)
    for _ in range(2):
        with pytest.raises(PtiRetryableError):
            guard.call("get_user", site_down)
    return guard


def test_a_half_open_site_lets_one_probe_through_and_the_rest_wait_until_it_succeeds(app):
    """Retries are paced per site: when the breaker's pause ends, one call probes PTI while every other caller is
    told to wait; the probe's success lets the backlog through at the site's limit."""
    guard = tripped_guard()
    assert guard.breaker_open()
    time.sleep(0.3)  # half-open now

    probing, release = threading.Event(), threading.Event()
    reached_pti = []

    def probe():
        reached_pti.append("probe")
        probing.set()
        release.wait(5)
        return "up"

    prober = ThreadPoolExecutor(max_workers=1).submit(guard.call, "get_user", probe)
    assert probing.wait(5)
    waiting = []
    for _ in range(8):  # the backlog's retries arrive while the probe is out
        try:
            guard.call("get_user", lambda: reached_pti.append("backlog"))
        except PtiRetryableError as exc:
            waiting.append((exc.reason, exc.retry_after))
    assert reached_pti == ["probe"] and len(waiting) == 8
    assert all(reason == "circuit_open" and 0 < after <= 1.0 for reason, after in waiting)
    release.set()
    assert prober.result(5) == "up"
    with ThreadPoolExecutor(max_workers=4) as pool:  # closed: the backlog drains
        list(pool.map(lambda _: guard.call("get_user", lambda: reached_pti.append("backlog")), range(8)))
    assert reached_pti.count("backlog") == 8


def test_a_half_open_probe_that_fails_opens_the_breaker_again_and_the_next_one_probes(app):
    guard = tripped_guard()
    time.sleep(0.3)
    with pytest.raises(PtiRetryableError):
        guard.call("get_user", site_down)  # the probe fails
    assert guard.breaker_open()
    time.sleep(0.3)
    assert guard.call("get_user", lambda: "up") == "up"  # the next probe goes, and closes it
    assert guard.call("get_user", lambda: "again") == "again"


def test_a_pti_outage_is_paced_per_site_one_probe_then_the_backlog_and_no_job_per_account(app, business, pti):
    """Hole 7: during an outage no account gets a retry job of its own; the relay sends nothing to the site while
    its breaker is open, one account (an urgent one first) when it half-opens, and the rest once that probe got
    through. Nothing is parked as failed for the outage, and the other site is served all along."""
    from rq import Queue, SimpleWorker
    from rq.job import Job
    from rq.registry import ScheduledJobRegistry

    from dashboard.engine.intent import relay
    from dashboard.jobqueue import DEFAULT, QUEUE_NAMES, URGENT
    from dashboard.models import SyncAttempt

    app.config.update(FAST_TIMEOUT)
    conn = get_redis()
    northgate = pushable("northgate", 12)
    riverside = pushable("riverside", 3)
    urgent = mark_dirty(db.session.get(PtiAccount, northgate[7]).customer_id, site("northgate").id, urgent=True)
    db.session.commit()
    pti.faults(site="NG01", error_rate=1, error_status=503)
    outcomes = Counter(reconcile_batch(northgate, "outage"))
    assert outcomes == {"retry": 12}
    prefix = f"pti-sync:site:{site('northgate').id}"
    assert conn.exists(f"{prefix}:breaker-open")
    # The pushes that failed before the breaker opened (counted failures) wait for a retry job of their own; those
    # that met the open breaker have none: the relay re-drives them.
    scheduled = {Job.fetch(job_id, connection=conn).args[0] for q in QUEUE_NAMES
                 for job_id in ScheduledJobRegistry(q, connection=conn).get_job_ids()}
    met_the_breaker = set(db.session.scalars(select(PtiAccount.id).where(
        PtiAccount.id.in_(northgate), PtiAccount.last_error == "circuit_open")))
    assert len(met_the_breaker) >= 6 and not scheduled & met_the_breaker, (scheduled, met_the_breaker)

    assert relay() == len(riverside), "while the breaker is open the relay sends Northgate nothing"
    assert sorted(j.args[0] for j in Queue(DEFAULT, connection=conn).jobs) == sorted(riverside)
    Queue(DEFAULT, connection=conn).empty()
    db.session.execute(PtiAccount.__table__.update().values(next_attempt_at=None))  # their waits are over
    db.session.commit()
    assert relay() == 0, "queued once already: the relay leaves accounts that a live job holds"
    for account_id in riverside:
        conn.delete(f"pti-sync:pending:{account_id}")
    conn.delete(f"{prefix}:breaker-open")  # the pause is over: half-open
    pti.faults(site="NG01", error_rate=0)
    enqueued = relay()
    assert enqueued == 1 + len(riverside)
    assert [j.args[0] for j in Queue(URGENT, connection=conn).jobs] == [urgent.id], "the probe is the urgent one"
    assert relay() == 0, "the probe is out: nothing else goes to the site"

    probe_calls = len(pti.calls())
    SimpleWorker([Queue(URGENT, connection=conn)], connection=conn).work(burst=True)  # the probe, then the relay
    assert not conn.exists(f"{prefix}:half-open"), "the probe's success closed the breaker"
    assert len(pti.calls()) > probe_calls, "the probe reached PTI"
    backlog = [j.args[0] for j in Queue(DEFAULT, connection=conn).jobs if j.func_name.endswith("reconcile_account")]
    assert sorted(backlog) == sorted(set(northgate) - {urgent.id} | set(riverside)), \
        "the site guard asked for the relay at once, and it sent the backlog"
    SimpleWorker([Queue(n, connection=conn) for n in QUEUE_NAMES], connection=conn).work(burst=True)
    db.session.expire_all()
    accounts = db.session.scalars(select(PtiAccount).where(PtiAccount.id.in_(northgate + riverside))).all()
    assert {a.state for a in accounts} == {"in_sync"} and all(a.attempts == 0 for a in accounts)
    retries = Counter(db.session.scalars(select(SyncAttempt.account_id).where(
        SyncAttempt.outcome == "retry", SyncAttempt.account_id.in_(northgate))))
    assert max(retries.values()) == 1, "one journal row per account for the outage, not one per retry"
    assert_pti_matches_mirror(pti, northgate + riverside)


def test_a_slot_that_frees_goes_to_the_waiting_urgent_call_before_a_bulk_pushs_calls(app):
    """The site's one slot is busy and a payment's unlock waits for it: when it frees, the bulk push's calls do not
    get it before the unlock; the unlock does, and the bulk calls after it."""
    bulk, urgent = SiteGuard(get_redis(), 7, limit=1), SiteGuard(get_redis(), 7, limit=1, urgent=True)
    assert bulk.try_slot("bulk-1")
    assert not urgent.try_slot("unlock")  # waits, and keeps its place in line
    assert not bulk.try_slot("bulk-2")
    get_redis().zrem("pti-sync:site:7:slots", "bulk-1")  # the first call is answered
    assert not bulk.try_slot("bulk-2")  # free, but the unlock is first
    assert urgent.try_slot("unlock")
    get_redis().zrem("pti-sync:site:7:slots", "unlock")
    assert bulk.try_slot("bulk-2")  # nobody urgent waits: every slot serves whatever comes


def test_an_urgent_callers_place_in_line_lapses_when_it_stops_asking(app):
    """A worker killed while its unlock waited must not hold the site's bulk calls back for more than a second."""
    bulk, urgent = SiteGuard(get_redis(), 8, limit=1), SiteGuard(get_redis(), 8, limit=1, urgent=True)
    assert bulk.try_slot("bulk-1") and not urgent.try_slot("unlock")
    get_redis().zrem("pti-sync:site:8:slots", "bulk-1")
    assert not bulk.try_slot("bulk-2")
    time.sleep(URGENT_WAIT_MARK_S + 0.1)
    assert bulk.try_slot("bulk-2")


def test_a_sites_calls_stay_within_its_limit_and_a_waiting_call_is_woken_by_the_slot_that_frees(app, monkeypatch):
    """Eight calls at a site whose limit is two: never more than two at PTI, and each call that had to wait asks for
    a slot once more only, when a call leaving its slot wakes it (it does not ask again and again meanwhile)."""
    monkeypatch.setattr(site_guard, "SLOT_SIGNAL_WAIT_S", 5.0)  # only a freed slot's signal wakes a waiting call
    guard = SiteGuard(get_redis(), 11, limit=2)
    in_flight, most, waits, tries = [0], [0], [], []
    lock = threading.Lock()
    real_wait, real_try = SiteGuard._wait_for_slot, SiteGuard.try_slot

    def waiting(self, operation, token):
        waits.append(token)
        return real_wait(self, operation, token)

    def trying(self, token):
        tries.append(token)
        return real_try(self, token)

    monkeypatch.setattr(SiteGuard, "_wait_for_slot", waiting)
    monkeypatch.setattr(SiteGuard, "try_slot", trying)

    def at_pti():
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        deadline = time.monotonic() + 10
        while len(waits) < 6 and time.monotonic() < deadline:  # the first two answer once the six others wait
            time.sleep(0.005)
        time.sleep(0.02)
        with lock:
            in_flight[0] -= 1
        return "answered"

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda _: guard.call("get_user", at_pti), range(8)))
    assert answers == ["answered"] * 8
    assert most[0] == 2
    assert len(waits) == 6, "six calls found both slots taken"
    assert sorted(tries) == sorted(waits), "each waiting call asked once more, when woken"


def test_a_call_waiting_for_a_slot_gets_it_when_a_crashed_holders_lease_lapses(app, monkeypatch):
    """A worker that died holding a slot sends no signal: the waiting call still asks again now and then, and takes
    the slot once the dead holder's lease has lapsed."""
    monkeypatch.setattr(site_guard, "LEASE_S", 0.3)
    monkeypatch.setattr(site_guard, "SLOT_WAIT_S", 3.0)
    guard = SiteGuard(get_redis(), 12, limit=1)
    assert guard.try_slot("died-holding-it")
    started = time.monotonic()
    assert guard.call("get_user", lambda: "answered") == "answered"
    assert 0.3 <= time.monotonic() - started < 3.0


def test_a_call_with_a_free_slot_costs_two_redis_round_trips_and_an_answer_resets_the_breakers_count(app,
                                                                                                    monkeypatch):
    """The way in (admission and a slot) and the way out (the slot back, the breaker told PTI answered) are one
    round trip each; the answer starts the count of failures in a row again, so the breaker opens only after
    `threshold` failures with no answer between them."""
    guard = SiteGuard(get_redis(), 13, limit=4, threshold=3, cooldown=5)
    sent, real = [], type(get_redis()).execute_command

    def counted(conn, *args, **options):
        sent.append(args[0])
        return real(conn, *args, **options)

    monkeypatch.setattr(type(get_redis()), "execute_command", counted)
    assert guard.call("get_user", lambda: "answered") == "answered"
    assert sent == ["EVAL", "EVAL"]
    monkeypatch.undo()
    for outcome in (site_down, site_down, lambda: "answered", site_down, site_down):
        try:
            guard.call("get_user", outcome)
        except PtiRetryableError:
            pass
    assert not guard.breaker_open(), "two failures since the last answer"
    with pytest.raises(PtiRetryableError):
        guard.call("get_user", site_down)
    assert guard.breaker_open()


@pytest.mark.parametrize("urgent", [True, False], ids=["lock-or-unlock", "other"])
def test_a_push_that_locks_or_unlocks_now_calls_pti_as_urgent(app, business, pti, monkeypatch, urgent):
    seen, real = [], SiteGuard.call

    def watched(guard, operation, fn, *args, **kwargs):
        seen.append(guard.urgent)
        return real(guard, operation, fn, *args, **kwargs)

    monkeypatch.setattr(SiteGuard, "call", watched)
    customer = customer_with(1)
    account = mark_dirty(customer, site("northgate").id, urgent=urgent)
    db.session.commit()
    assert reconcile(account.id, "test").outcome == "ok"
    assert seen and set(seen) == {urgent}
