"""Nothing stuck: whatever fails in a push is journalled, counted and in the end parked with its reason; the account
lock lasts as long as the push and a lost lock stops it before the next PTI write; a busy urgent account keeps its
queue; unreadable site credentials are their own, logged reason. Live PTI simulator, real Redis and database."""

from __future__ import annotations

import logging
import threading
import time

from cryptography.fernet import Fernet
from rq import Queue
from sqlalchemy import select

from dashboard.engine import reconcile as engine
from dashboard.engine.intent import mark_dirty
from dashboard.engine.site_guard import SiteGuard
from dashboard.extensions import db
from dashboard.jobqueue import RECONCILE, URGENT, get_redis
from dashboard.models import PtiAccount, SyncAttempt, SyncState
from tests.engine.conftest import customer_with, site


def dirty_account(units: int = 2, *, urgent: bool = False) -> int:
    account = mark_dirty(customer_with(units), site("northgate").id, urgent=urgent)
    db.session.commit()
    return account.id


def fresh(account_id: int) -> PtiAccount:
    db.session.expire_all()
    return db.session.get(PtiAccount, account_id)


def journal(account_id: int) -> list[SyncAttempt]:
    return db.session.scalars(select(SyncAttempt).where(SyncAttempt.account_id == account_id)
                              .order_by(SyncAttempt.id)).all()


def broken_plan(*args, **kwargs):
    raise KeyError("data")  # as a malformed answer or a bug deep in the push would


def test_an_unexpected_error_in_a_push_is_journalled_and_counted_as_an_attempt(business, pti, monkeypatch):
    account_id = dirty_account()
    monkeypatch.setattr(engine, "plan", broken_plan)
    result = engine.reconcile(account_id, "test")
    assert (result.outcome, result.reason) == ("retry", "unexpected_error")
    [attempt] = journal(account_id)
    assert (attempt.outcome, attempt.reason) == ("retry", "unexpected_error")
    assert attempt.detail.startswith("KeyError at test_nothing_stuck.py")  # where, never the message
    assert fresh(account_id).attempts == 1 and fresh(account_id).state == SyncState.PENDING


def test_an_account_that_keeps_failing_unexpectedly_parks_as_failed_with_its_reason(business, pti, monkeypatch):
    account_id = dirty_account()
    monkeypatch.setattr(engine, "plan", broken_plan)
    outcomes = [engine.reconcile(account_id, "test").outcome for _ in range(engine.MAX_ATTEMPTS)]
    assert outcomes == ["retry"] * (engine.MAX_ATTEMPTS - 1) + ["failed"]
    account = fresh(account_id)
    assert (account.state, account.last_error) == (SyncState.FAILED, "unexpected_error")
    assert "KeyError" in account.last_error_detail


def test_the_account_lock_is_extended_while_a_long_push_runs(business, pti, monkeypatch):
    monkeypatch.setattr(engine, "LOCK_TTL_S", 1)
    pti.faults(latency_ms=250)  # a dozen PTI calls: about 3 s, three times the lock's time-out
    account_id = dirty_account()
    key, conn = engine.lock_key(account_id), get_redis()
    gaps, done = [], threading.Event()

    def watch():
        seen = False
        while not done.is_set():
            held = conn.exists(key)
            seen = seen or held
            if seen and not held and not done.is_set():
                gaps.append(time.monotonic())
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        started = time.monotonic()
        assert engine.reconcile(account_id, "test").outcome == "ok"
        ended = time.monotonic()
        assert ended - started > 2  # the push did outlast the lock's time-out
    finally:
        done.set()
        watcher.join()
        pti.faults()
    # The release at the very end is no gap; an expiry would leave the key missing for the last second or more.
    assert [g for g in gaps if g < ended - 0.2] == [], "the lock expired while the push still ran"
    assert not conn.exists(key)  # released at the end


def test_a_lost_lock_stops_the_push_before_its_next_pti_write(business, pti, monkeypatch):
    account_id = dirty_account()
    real = SiteGuard.call

    def lose_the_lock_after_the_first_call(self, operation, fn, *args, **kwargs):
        try:
            return real(self, operation, fn, *args, **kwargs)
        finally:  # the lock expired and another job took it
            get_redis().set(engine.lock_key(account_id), "another-job", px=60_000)

    monkeypatch.setattr(SiteGuard, "call", lose_the_lock_after_the_first_call)
    result = engine.reconcile(account_id, "test")
    assert (result.outcome, result.reason) == ("retry", "lock_lost")
    assert pti.writes() == 0
    assert get_redis().get(engine.lock_key(account_id)) == b"another-job"  # the other job's lock is left alone


def test_a_busy_urgent_account_comes_back_on_the_urgent_queue(business, pti, monkeypatch):
    monkeypatch.setattr(engine, "LOCK_WAIT_S", 0.1)
    account_id = dirty_account(urgent=True)
    get_redis().set(engine.lock_key(account_id), "another-job", px=60_000)
    assert engine.reconcile(account_id, "test").outcome == "busy"
    queued = {name: [j.args for j in Queue(name, connection=get_redis()).jobs if j.func_name == RECONCILE]
              for name in ("urgent", "default", "bulk")}
    assert queued == {URGENT: [(account_id, "test")], "default": [], "bulk": []}


def test_site_credentials_that_cannot_be_decrypted_park_as_credentials_unreadable_and_are_logged(app, business, pti,
                                                                                                 caplog):
    account_id = dirty_account()
    app.config["ENCRYPTION_KEYS"] = Fernet.generate_key().decode()  # the key they were sealed with is gone
    with caplog.at_level(logging.ERROR, logger="dashboard.clients"):
        result = engine.reconcile(account_id, "test")
    assert (result.outcome, result.reason) == ("failed", "credentials_unreadable")
    assert fresh(account_id).last_error == "credentials_unreadable"
    [line] = [r.getMessage() for r in caplog.records if r.name == "dashboard.clients"]
    assert "northgate" in line and "ENCRYPTION_KEYS" in line
    from sim.demo_data import build_demo_business

    secrets = [v for s in build_demo_business(pti.url).pti_sites.values() for v in (s["site_key"], s["password"])]
    assert not any(secret in caplog.text for secret in secrets)


def test_the_account_lock_is_short_and_kept_alive_through_one_pti_call_longer_than_it(business, pti, monkeypatch):
    """The lock lives LOCK_TTL_S and a heartbeat keeps it while the push runs, even through one PTI call that lasts
    longer than that; so a killed job's lock lapses within LOCK_TTL_S (it was 300 s: a SIGKILLed bulk batch left its
    in-flight accounts locked for five minutes, each job for them waiting 30 s and coming back; tests/chaos)."""
    assert engine.LOCK_TTL_S <= 15 and engine.LOCK_BEAT_S * 3 <= engine.LOCK_TTL_S
    monkeypatch.setattr(engine, "LOCK_TTL_S", 1)
    monkeypatch.setattr(engine, "LOCK_BEAT_S", 0.2)
    account_id = dirty_account()
    key, conn = engine.lock_key(account_id), get_redis()
    pti.faults(latency_ms=2500, operations=["create_user"])  # one call, two and a half times the lock's life
    held_through = []
    real = SiteGuard.call

    def watched(self, operation, fn, *args, **kwargs):
        try:
            return real(self, operation, fn, *args, **kwargs)
        finally:
            if operation == "create_user":
                held_through.append(conn.exists(key) == 1)

    monkeypatch.setattr(SiteGuard, "call", watched)
    try:
        result = engine.reconcile(account_id, "test")
    finally:
        pti.faults()
    assert held_through == [True], "the lock lapsed during a long PTI call"
    assert (result.outcome, result.reason) == ("ok", None), result
    assert not conn.exists(key)
