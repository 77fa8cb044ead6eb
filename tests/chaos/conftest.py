"""Chaos scenarios (R11, R12 in reliability.md): the real stack of bench/stack.py (gunicorn, RQ workers, the cron,
Redis, the simulators, a database) broken while it works, then checked for what must hold afterwards:

- every customer converges: at every site the PTI simulator holds exactly what the mirror wants, no account parked
- zero duplicate PTI users or access codes
- nothing stays pending past two relay periods after the fault ends: every account still owed is held by a live
  job (its pending key names a queued, scheduled or running job, or its job holds the account's lock), or the relay
  has taken it over within two periods
- every write-back owed reaches the Storeganise simulator (pti_synced, pti_overlocked and the code on each rental,
  the code and PTI user id on each customer)
- the dashboard showed the outage while it lasted (each test fetches the real page, logged in as a demo user)

Every wait is bounded and fails with what it waited for. Except in the out-of-order webhooks scenario, the
Storeganise simulator does not deliver the echoes of our own write-backs (as in bench/bulk_push.py): each is one
forked no-op job on the default queue, and hundreds of them on a 2-core machine only delay what the test measures.
An account whose lock exists counts as held: since the lock is short and kept alive by its job (LOCK_TTL_S), a dead
job's lock lapses within seconds.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC

import httpx
import pytest
from flask import current_app
from sqlalchemy import or_, select

from bench.stack import Stack, StackConfig
from dashboard.cli import RELAY_EVERY_S
from dashboard.engine.intent import PENDING_KEY, Hint, _holders
from dashboard.engine.reconcile import lock_key
from dashboard.extensions import db
from dashboard.jobqueue import get_redis
from dashboard.mirror.deliveries import QUEUED
from dashboard.models import (
    ACTIVE_RENTAL_STATES,
    Customer,
    PtiAccount,
    Rental,
    Site,
    SyncAttempt,
    SyncState,
    WebhookDelivery,
    utcnow,
)
from dashboard.storeganise import format_timestamp
from sim.pti import OK as PTI_OK
from tests.engine.test_stateful import mismatches, site_invariant_problems

TWO_RELAY_PERIODS_S = 2 * RELAY_EVERY_S
POLL_S = 0.5
PAGE_BOUND_S = 10.0  # a dashboard page must answer within this during an outage (Redis bound 2 s, PTI not called)
WRITE_BACK_WAIT_S = 120.0


@pytest.fixture
def start_stack():
    """`with start_stack(config) as stack:`; the stack is stopped however the test ends."""
    stacks: list[Stack] = []

    def start(config: StackConfig) -> Stack:
        stack = Stack(config)
        stacks.append(stack)
        stack.start()
        return stack

    yield start
    for stack in stacks:
        stack.stop()


def chaos_config(**options) -> StackConfig:
    """A small business on the real stack with the cron (relay every RELAY_EVERY_S, the production period)."""
    defaults = dict(sites=2, units=110, rented=100, workers=3, web_workers=2, pti_threads=32, cron=True)
    return StackConfig(**{**defaults, **options})


def wait_for(condition: Callable[[], object], what: str | Callable[[], str], timeout_s: float,
             every_s: float = POLL_S):
    """Poll until `condition()` is truthy; fail naming `what` (or what `what()` says then) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout_s:.0f} s for {what() if callable(what) else what}")
        time.sleep(every_s)


# --- what is owed, and whether a live job holds it -------------------------------------------------------------


def owed_accounts() -> dict[int, tuple[int, str]]:
    """Accounts still owed a push whose retry time has come (what the relay looks at): id -> (generation, state)."""
    db.session.rollback()
    try:
        rows = db.session.execute(select(PtiAccount.id, PtiAccount.generation, PtiAccount.state).where(
            PtiAccount.generation > PtiAccount.synced_generation, PtiAccount.state != SyncState.FAILED,
            or_(PtiAccount.next_attempt_at.is_(None), PtiAccount.next_attempt_at <= utcnow()))).all()
        return {r.id: (r.generation, r.state) for r in rows}
    finally:
        db.session.rollback()


def unheld(account_ids: list[int]) -> set[int]:
    """Of these owed accounts, those no live job holds: no pending key naming a queued, scheduled, deferred or
    running (heartbeat) job, and no reconcile holding the account's lock. The relay must take these over."""
    if not account_ids:
        return set()
    conn = get_redis()
    keys = conn.mget([PENDING_KEY.format(account_id=a) for a in account_ids])
    locks = conn.mget([lock_key(a) for a in account_ids])
    hints = {a: Hint.parse(raw) for a, raw in zip(account_ids, keys, strict=True) if raw is not None}
    _, alive, _ = _holders(conn, {h.job_id for h in hints.values()}, time.time())
    return {a for a, lock in zip(account_ids, locks, strict=True)
            if lock is None and (a not in hints or hints[a].job_id not in alive)}


@dataclass
class Convergence:
    """How the stack converged after a fault ended (seconds from the end of the fault)."""

    seconds: float
    longest_unheld_s: float
    samples: int
    owed_at_start: int


@dataclass
class _Watch:
    since: dict[int, float] = field(default_factory=dict)
    longest: float = 0.0


def wait_converged(stack: Stack, fault_ended: float, timeout_s: float) -> Convergence:
    """Until no account is owed a push; meanwhile no owed account may stay unheld (no live job, waiting for the relay)
    longer than two relay periods counted from when the fault ended (or from when it was first seen unheld)."""
    watch = _Watch()
    samples = 0
    owed_at_start = None
    deadline = fault_ended + timeout_s
    while True:
        stack._check_alive()
        owed = owed_accounts()
        owed_at_start = len(owed) if owed_at_start is None else owed_at_start
        now = time.monotonic()
        if not owed:
            failed = stack.count(PtiAccount, PtiAccount.state == SyncState.FAILED)
            assert failed == 0, f"{failed} accounts parked as failed: {parked()}"
            return Convergence(now - fault_ended, watch.longest, samples, owed_at_start)
        loose = unheld(sorted(owed))
        samples += 1
        for account_id in list(watch.since):
            if account_id not in loose or account_id not in owed:
                del watch.since[account_id]
        for account_id in loose:
            first = watch.since.setdefault(account_id, max(now, fault_ended))
            watch.longest = max(watch.longest, now - first)
        stuck = {a: now - t for a, t in watch.since.items() if now - t > TWO_RELAY_PERIODS_S}
        assert not stuck, (f"{len(stuck)} accounts owed a push and held by no job for more than two relay periods "
                           f"({TWO_RELAY_PERIODS_S} s): {dict(list(stuck.items())[:10])}")
        if now > deadline:
            pytest.fail(f"{len(owed)} accounts still owed a push {timeout_s:.0f} s after the fault ended "
                        f"({len(loose)} held by no job); parked: {parked()}")
        time.sleep(POLL_S)


def deliveries_handled(stack: Stack, delivery_ids: list[str], timeout_s: float) -> None:
    """Until the web process recorded these deliveries and the workers handled each (none queued still, none
    failed)."""
    def handled():
        db.session.rollback()
        rows = dict(db.session.execute(select(WebhookDelivery.id, WebhookDelivery.status)
                                       .where(WebhookDelivery.id.in_(delivery_ids))).all())
        db.session.rollback()
        return len(rows) == len(delivery_ids) and QUEUED not in rows.values() and rows

    rows = wait_for(handled, f"{len(delivery_ids)} webhook deliveries to be handled", timeout_s)
    failed = {d: s for d, s in rows.items() if s == "failed"}
    assert not failed, f"deliveries failed: {failed}"


def parked() -> list[tuple]:
    db.session.rollback()
    rows = db.session.execute(select(PtiAccount.id, PtiAccount.last_error).where(
        PtiAccount.state == SyncState.FAILED).limit(10)).all()
    db.session.rollback()
    return [tuple(r) for r in rows]


# --- PTI matches the mirror, no duplicates ---------------------------------------------------------------------


def assert_pti_matches_the_mirror(stack: Stack) -> None:
    """At every site: exactly what the mirror wants per customer, every other unit vacant, one code per user and one
    user per customer (site_invariant_problems), and no PTI user created and then left behind."""
    db.session.rollback()
    state = stack.pti_state()
    problems: list[str] = []
    for site in db.session.scalars(select(Site).order_by(Site.id)):
        ids = set(db.session.scalars(select(Rental.customer_id).where(Rental.site_id == site.id))) | set(
            db.session.scalars(select(PtiAccount.customer_id).where(PtiAccount.site_id == site.id)))
        customers = list(db.session.scalars(select(Customer).where(Customer.id.in_(ids)).order_by(Customer.id)))
        site_state = state["sites"][site.pti_site_code]
        problems += [f"{site.code}: {p}" for p in site_invariant_problems(site_state)]
        problems += [f"{site.code}: {p}" for p in mismatches(site, site_state, customers, every_unit=True)]
    db.session.rollback()
    assert not problems, f"PTI does not match the mirror ({len(problems)}):\n" + "\n".join(problems[:30])


def created_users(stack: Stack) -> tuple[dict[str, int], Counter]:
    """PTI users the product's creates made, per PTI site code (from the simulator's call log), and the creates PTI
    answered with a refusal, by site and result. The simulator marks a call `applied` once it reached the site,
    refusals too: a create sent again after an uncertain answer, refused with -5 because the first had been applied
    (reconcile.create_user), or one refused for a session token, made no user and is not counted."""
    counts: dict[str, int] = {}
    refused: Counter = Counter()
    for call in stack.http.get(f"{stack.pti_url}/_sim/calls").json()["calls"]:
        if call["operation"] == "create_user" and call.get("applied"):
            if call.get("result") == PTI_OK:
                counts[call["site"]] = counts.get(call["site"], 0) + 1
            else:
                refused[(call["site"], call.get("result"))] += 1
    return counts, refused


def assert_no_user_created_twice(stack: Stack) -> None:
    """Each PTI user a create made is still there: none was created twice for one customer and the spare removed
    (for scenarios without move-outs, where no user is removed). Two users for one customer both still there are
    `assert_pti_matches_the_mirror`'s to find."""
    users = {code: len(site["users"]) for code, site in stack.pti_state()["sites"].items()}
    created, refused = created_users(stack)
    assert all(created.get(code, 0) == n for code, n in users.items()), \
        f"PTI users created {created} but PTI holds {users} (creates refused, by site and result: {dict(refused)})"


# --- write-backs reached Storeganise -----------------------------------------------------------------------------


def write_backs_owed(stack: Stack) -> int:
    return (stack.count(PtiAccount, PtiAccount.write_back_owed.is_(True))
            + stack.count(Customer, Customer.overrides_owed.is_(True)))


def assert_write_backs_reached_storeganise(stack: Stack, timeout_s: float = WRITE_BACK_WAIT_S) -> None:
    """Nothing is owed to Storeganise any more, and the Storeganise simulator holds what the mirror pushed: on each
    rental in sync its pti_synced, pti_overlocked and access code; on each customer their code and PTI user id."""
    wait_for(lambda: write_backs_owed(stack) == 0,
             lambda: f"every write-back to reach Storeganise ({write_backs_owed(stack)} still owed)",
             timeout_s)
    codes = current_app.config["STOREGANISE_FIELDS"]
    sg = stack.sg_state()
    sg_rentals = {r["id"]: r.get("customFields") or {} for r in sg["unitRentals"]}
    sg_users = {u["id"]: u.get("customFields") or {} for u in sg["users"]}
    db.session.rollback()
    problems, missing = [], []  # what is wrong, and the Storeganise ids of the records it is wrong on
    rows = db.session.execute(
        select(Rental.sg_id, Rental.pti_synced, Rental.overlocked, PtiAccount.access_code)
        .join(PtiAccount, (PtiAccount.customer_id == Rental.customer_id) & (PtiAccount.site_id == Rental.site_id))
        .where(Rental.state.in_(ACTIVE_RENTAL_STATES), Rental.sync_state == SyncState.IN_SYNC)).all()
    for sg_id, synced, overlocked, code in rows:
        fields = sg_rentals.get(sg_id, {})
        want = {codes.rental_synced: format_timestamp(synced.replace(tzinfo=UTC)) if synced else None,
                codes.rental_overlocked: overlocked, codes.rental_access_code: str(code)}
        got = {key: fields.get(key) for key in want}
        if got != want:
            problems.append(f"rental {sg_id}: Storeganise has {got}, the mirror pushed {want}")
            missing.append(sg_id)
    for sg_id, code, user_id in db.session.execute(
            select(Customer.sg_id, Customer.pti_access_code, Customer.pti_user_id)
            .where(Customer.pti_access_code.is_not(None))).all():
        fields = sg_users.get(sg_id, {})
        want = {codes.user_access_code: str(code), codes.user_pti_id: user_id}
        got = {key: fields.get(key) for key in want}
        if got != want:
            problems.append(f"customer {sg_id}: Storeganise has {got}, the mirror has {want}")
            missing.append(sg_id)
    db.session.rollback()
    assert rows, "no rental in sync to compare"
    assert not problems, (f"write-backs missing in Storeganise ({len(problems)}):\n" + "\n".join(problems[:20])
                          + "\n" + _history(missing[:3], sg))


def _history(sg_ids: list[str], sg: dict) -> str:
    """What happened to these records (rentals or customers, by Storeganise id), for a failure to explain itself:
    the Storeganise simulator's writes to them, and each of their accounts' row and journal."""
    lines = []
    for sg_id in sg_ids:
        writes = [f"{w['time']} {w['entity']} {sorted(w['fields'])}" for w in sg.get("writes", []) if w["id"] == sg_id]
        lines.append(f"{sg_id}: Storeganise writes {writes or 'none'}")
        customer_id = db.session.scalar(select(Rental.customer_id).where(Rental.sg_id == sg_id)) or \
            db.session.scalar(select(Customer.id).where(Customer.sg_id == sg_id))
        for account in db.session.scalars(select(PtiAccount).where(PtiAccount.customer_id == customer_id)):
            lines.append(f"  account {account.id} (site {account.site_id}): state {account.state}, generation "
                         f"{account.synced_generation}/{account.generation}, last synced {account.last_synced_at}, "
                         f"write-back owed {account.write_back_owed}")
            for rental in db.session.scalars(select(Rental).where(Rental.customer_id == customer_id,
                                                                  Rental.site_id == account.site_id)):
                lines.append(f"    rental {rental.sg_id}: {rental.state} {rental.sync_state}, "
                             f"pti_synced {rental.pti_synced}")
            for attempt in db.session.scalars(select(SyncAttempt).where(SyncAttempt.account_id == account.id)
                                              .order_by(SyncAttempt.id)):
                lines.append(f"    {attempt.started_at} +{attempt.duration_ms} ms {attempt.trigger} "
                             f"{attempt.outcome} {attempt.reason or ''} {attempt.detail or ''} "
                             f"ops {len(attempt.operations or [])} job {attempt.rq_job_id}")
    db.session.rollback()
    return "\n".join(lines)


def assert_converged(stack: Stack) -> None:
    assert_pti_matches_the_mirror(stack)
    assert_write_backs_reached_storeganise(stack)


# --- what the dashboard shows -------------------------------------------------------------------------------------


def fetch(page: httpx.Client, path: str) -> tuple[int, str, float]:
    """GET a dashboard page: (status, text, seconds it took)."""
    started = time.monotonic()
    response = page.get(path)
    return response.status_code, response.text, time.monotonic() - started


def progress(stack: Stack) -> tuple[int, int]:
    """(accounts pushed, accounts in all)."""
    done = stack.count(PtiAccount, PtiAccount.synced_generation >= PtiAccount.generation)
    return done, stack.count(PtiAccount)
