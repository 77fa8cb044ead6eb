"""A delivery's job ends at its gate; the worker process's write-back thread finishes what it owes Storeganise."""

from __future__ import annotations

import os
import threading

import pytest
from sqlalchemy import select

from dashboard.extensions import db
from dashboard.jobqueue import HANDLE_DELIVERY, WRITE_BACK
from dashboard.models import PtiAccount, Rental, WebhookDelivery
from dashboard.storeganise import StoreganiseClient
from jobs.after_gate import AFTER_GATE_EXTENSION, AfterGate, start_after_gate, stop_after_gate

from .conftest import queued_jobs
from .test_live import a_pushed_rental_at_the_gate


@pytest.fixture
def after_gate(app):
    """The write-back thread a worker process starts (jobs/worker.run_worker), stopped after the test."""
    runner = start_after_gate()
    yield runner
    stop_after_gate()
    assert AFTER_GATE_EXTENSION not in app.extensions


def blocked(runner: AfterGate) -> threading.Event:
    """Hold the thread on a first task until the returned event is set: what is handed over next waits behind it."""
    release = threading.Event()
    assert runner.hand_over(lambda: release.wait(10))
    return release


def test_the_thread_runs_what_it_is_handed_in_order_each_in_a_session_of_its_own_and_outlives_a_failure(app):
    runner = AfterGate(app, waiting_at_most=3)
    seen: list = []

    def failing() -> None:
        raise RuntimeError("Storeganise said no")

    def note(name: str) -> None:
        seen.append((name, threading.current_thread().name, id(db.session())))

    try:
        release = blocked(runner)
        assert runner.hand_over(lambda: note("first"))
        assert runner.hand_over(failing)
        assert not runner.hand_over(lambda: note("one too many"))  # behind: the caller writes its own
        release.set()
        runner.wait()
        assert runner.hand_over(lambda: note("after the failure"))
        runner.wait()
    finally:
        assert runner.stop()
    assert [name for name, *_ in seen] == ["first", "after the failure"]
    assert {thread for _, thread, _ in seen} == {"after-gate"}
    assert id(db.session()) not in {session for *_, session in seen}  # not the job's (this thread's) session
    assert not runner.hand_over(lambda: note("stopped"))


def test_a_forked_process_does_not_hand_over_to_its_parents_thread(app):
    runner = AfterGate(app)
    try:
        runner.pid = os.getpid() + 1  # as a work horse forked from the worker sees it
        assert not runner.hand_over(lambda: None)
    finally:
        runner.pid = os.getpid()
        assert runner.stop()


def test_stop_finishes_what_was_handed_over_before_the_process_ends(app):
    runner, done = AfterGate(app), []
    release = blocked(runner)
    assert runner.hand_over(lambda: done.append("written"))
    threading.Timer(0.1, release.set).start()
    assert runner.stop(timeout_s=10)
    assert done == ["written"]


def an_overdue_handled(sim, control, pti):
    """A rental of a pushed and written-back customer marked overdue; its delivery's job, queued. Returns (rental's
    sg_id, its gate as a callable, Storeganise's pti_overlocked as a callable, the account, the job)."""
    sg_id, account, gate_locked, storeganise_holds = a_pushed_rental_at_the_gate(sim, control, pti, overdue=False)
    control.post("/_sim/overdue", json={"unitRentalId": sg_id, "overdue": True}).raise_for_status()
    assert sim.wait_for_webhooks(10)
    [(_, job)] = queued_jobs(HANDLE_DELIVERY)
    return sg_id, gate_locked, storeganise_holds, account, job


def test_a_lockouts_job_ends_at_the_gate_and_its_write_back_follows_on_the_thread(live_with_pti, after_gate):
    sim, control, pti = live_with_pti
    sg_id, gate_locked, storeganise_holds, account, job = an_overdue_handled(sim, control, pti)
    writes = len(control.get("/_sim/state").json()["writes"])
    release = blocked(after_gate)

    assert job.perform() == "processed"
    job.delete()
    # The job is done and the gate locked, while the write-back still waits for the thread.
    assert gate_locked() is True
    assert storeganise_holds() is False
    assert len(control.get("/_sim/state").json()["writes"]) == writes
    db.session.expire_all()
    assert db.session.get(PtiAccount, account.id).write_back_owed is True  # owed in the database meanwhile

    release.set()
    after_gate.wait()
    assert storeganise_holds() is True
    puts = [w for w in control.get("/_sim/state").json()["writes"][writes:] if w["id"] == sg_id]
    assert len(puts) == 1 and puts[0]["fields"]["pti_overlocked"] is True  # one PUT carried the flip too
    db.session.expire_all()
    assert db.session.get(PtiAccount, account.id).write_back_owed is False
    assert queued_jobs() == []  # no write-back job, no delivery again


def test_a_flip_storeganise_refuses_on_the_thread_runs_the_delivery_again_and_keeps_the_lock(
        live_with_pti, after_gate, monkeypatch):
    monkeypatch.setattr(StoreganiseClient, "_back_off", lambda self, *args: None)
    sim, control, pti = live_with_pti
    sg_id, gate_locked, storeganise_holds, account, job = an_overdue_handled(sim, control, pti)
    release = blocked(after_gate)
    assert job.perform() == "processed"
    job.delete()
    assert gate_locked() is True

    sim.configure(faults={"error_rate": 1.0})  # Storeganise refuses every PUT the thread makes
    release.set()
    after_gate.wait()
    sim.configure(faults={"error_rate": 0.0})
    db.session.expire_all()
    delivery = db.session.get(WebhookDelivery, job.args[0])
    assert delivery.status == "queued" and delivery.error  # to run again, as the job's own failure would have
    assert db.session.get(PtiAccount, account.id).write_back_owed is True
    queued = {job.func_name: job for _, job in queued_jobs()}
    assert set(queued) == {HANDLE_DELIVERY, WRITE_BACK} and queued[HANDLE_DELIVERY].id == job.id
    assert storeganise_holds() is False and gate_locked() is True

    assert queued[HANDLE_DELIVERY].perform() == "processed"  # Storeganise answers again
    after_gate.wait()
    assert storeganise_holds() is True and gate_locked() is True
    db.session.expire_all()
    assert db.session.get(WebhookDelivery, job.args[0]).status == "processed"
    assert db.session.get(Rental, db.session.scalar(select(Rental.id).where(Rental.sg_id == sg_id))).overdue is True


def test_what_a_killed_process_had_not_written_back_is_written_by_the_relay(live_with_pti, app):
    """The thread's write-back is only in its memory; what it owes is in the database. A process killed before its
    thread wrote leaves the lockout's results owed, and the relay's job writes them, the flip with them."""
    from dashboard.engine.writeback import request_write_backs
    from dashboard.jobqueue import WRITE_BACK_OWED

    sim, control, pti = live_with_pti
    sg_id, gate_locked, storeganise_holds, account, job = an_overdue_handled(sim, control, pti)
    runner = AfterGate(app)
    app.extensions[AFTER_GATE_EXTENSION] = runner
    try:
        release = blocked(runner)
        assert job.perform() == "processed"
        job.delete()
        runner.tasks.get_nowait()  # the process dies: the write-back its thread held is gone with it
        runner.tasks.task_done()
        release.set()
    finally:
        app.extensions.pop(AFTER_GATE_EXTENSION)
        assert runner.stop()
    assert gate_locked() is True and storeganise_holds() is False

    assert request_write_backs()  # the relay's question: anything owed to Storeganise?
    [(_, owed_job)] = queued_jobs(WRITE_BACK_OWED)
    assert owed_job.perform() == 1
    assert storeganise_holds() is True and gate_locked() is True
    db.session.expire_all()
    assert db.session.get(PtiAccount, account.id).write_back_owed is False
