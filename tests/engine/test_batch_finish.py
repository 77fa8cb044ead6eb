"""A bulk batch records its plain pushes several at a time (engine/finishes.py, jobs/reconcile.Finishes): each
account ends recorded exactly as a single push records it; a newer intent that lands before the record keeps the
account owed; a push whose lock lapsed is left owed, not recorded over a newer push; a group the database refuses is
recorded one by one; what stood against the accounts is closed."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from dashboard.engine import problems
from dashboard.engine.finishes import finish_many
from dashboard.engine.intent import mark_dirty
from dashboard.engine.reconcile import lock_key, reconcile
from dashboard.extensions import db
from dashboard.jobqueue import get_redis
from dashboard.models import OpenProblem, PtiAccount, Rental, SyncAttempt, SyncState
from dashboard.sync import is_valid_unit_name
from jobs import reconcile as batch_jobs
from jobs.reconcile import reconcile_batch
from tests.engine.conftest import site
from tests.engine.test_reliability import assert_pti_matches_mirror, pushable

pytestmark = pytest.mark.db


def plain(count: int) -> list[int]:
    """`count` accounts of Northgate marked for a first push whose every unit PTI knows: each push ends plainly."""
    accounts = []
    for account_id in pushable("northgate", 40):
        account = db.session.get(PtiAccount, account_id)
        if all(is_valid_unit_name(r.unit.pti_unit_name) for r in db.session.scalars(select(Rental).where(
                Rental.customer_id == account.customer_id, Rental.site_id == account.site_id)) if r.active):
            accounts.append(account_id)
    assert len(accounts) >= count
    return accounts[:count]


@pytest.fixture
def groups(monkeypatch):
    """The groups the batch's finishing thread recorded, in order (account ids), the real recording done."""
    seen: list[list[int]] = []

    def counted(pushes):
        seen.append([p.account_id for p in pushes])
        return finish_many(pushes)

    monkeypatch.setattr(batch_jobs, "finish_many", counted)
    monkeypatch.setattr(batch_jobs, "FINISH_GATHER_S", 2.0)  # pushes of a short test batch go together
    return seen


def recorded(account_id: int) -> dict:
    """How an account, its rentals and its last journal row stand: what a push records."""
    db.session.expire_all()
    account = db.session.get(PtiAccount, account_id)
    journal = db.session.scalars(select(SyncAttempt).where(SyncAttempt.account_id == account_id)
                                 .order_by(SyncAttempt.id.desc())).first()
    rentals = db.session.scalars(select(Rental).where(Rental.customer_id == account.customer_id,
                                                      Rental.site_id == account.site_id)).all()
    return {
        "state": account.state, "in_step": account.synced_generation == account.generation,
        "urgent": account.urgent, "owed_since": account.owed_since, "attempts": account.attempts,
        "last_error": account.last_error, "next_attempt_at": account.next_attempt_at,
        "synced_at_set": account.last_synced_at is not None,
        "pushed_user": (account.pushed or {}).get("user", {}).get("id") == account.pti_user_id,
        "pushed_units": sorted((account.pushed or {}).get("units", {})),
        "units": sorted(r.unit.pti_unit_name for r in rentals if r.active),
        "rentals": sorted((r.sync_state, r.last_error, r.pti_synced is not None) for r in rentals if r.active),
        "journal": (journal.outcome, journal.generation == account.generation, journal.gate_ms is not None,
                    journal.duration_ms is not None, bool(journal.operations), journal.trigger),
    }


def test_a_batch_records_its_plain_pushes_together_as_a_single_push_records_one(business, pti, groups):
    accounts = plain(7)
    single, batch = accounts[0], accounts[1:]
    assert reconcile(single, "test").outcome == "ok"
    assert reconcile_batch(batch, "test") == {"ok": 6}

    assert sorted(i for group in groups for i in group) == sorted(batch)
    assert max(len(group) for group in groups) > 1, "the pushes were recorded one by one"
    assert_pti_matches_mirror(pti, accounts)
    alone = recorded(single)
    assert alone["state"] == SyncState.IN_SYNC and alone["in_step"] and alone["pushed_units"] == alone["units"]
    for account_id in batch:
        together = recorded(account_id)
        assert together["pushed_units"] == together["units"]
        assert {k: v for k, v in together.items() if k not in ("pushed_units", "units", "rentals")} == \
            {k: v for k, v in alone.items() if k not in ("pushed_units", "units", "rentals")}
        assert set(together["rentals"]) == {(SyncState.IN_SYNC, None, True)}
    # What the next lock plans from: a record as a single push leaves it.
    assert db.session.get(PtiAccount, batch[0]).pushed.keys() == db.session.get(PtiAccount, single).pushed.keys()


def test_a_newer_intent_that_lands_before_the_record_keeps_the_account_owed_and_urgent(app, business, pti,
                                                                                      monkeypatch):
    """A lockout marks the account while its bulk push waits to be recorded: the record says what the push carried,
    and the account stays pending, urgent and owed since the lockout's mark, for the lockout's own push."""
    accounts = plain(3)
    late = accounts[1]

    def a_lockout_first(pushes):
        if any(p.account_id == late for p in pushes):
            with app.app_context():
                account = db.session.get(PtiAccount, late)
                mark_dirty(account.customer_id, account.site_id, urgent=True)
                db.session.commit()
        return finish_many(pushes)

    monkeypatch.setattr(batch_jobs, "finish_many", a_lockout_first)
    assert reconcile_batch(accounts, "test") == {"ok": 3}
    db.session.expire_all()
    account = db.session.get(PtiAccount, late)
    assert account.synced_generation == account.generation - 1
    assert (account.state, account.urgent) == (SyncState.PENDING, True)
    assert account.owed_since is not None
    for other in set(accounts) - {late}:
        account = db.session.get(PtiAccount, other)
        assert (account.state, account.urgent, account.owed_since) == (SyncState.IN_SYNC, False, None)


def test_a_push_whose_lock_lapsed_before_its_record_is_left_owed(business, pti, monkeypatch, caplog):
    """Another push may hold the account by then and record what it did: the lapsed one records nothing (its
    account stays owed, and the next push finds PTI as wanted), and lets go of nothing it does not hold."""
    accounts = plain(3)
    lapsed = accounts[2]
    real_put = batch_jobs.Finishes.put

    def lapsing(self, pushed):
        if pushed.account_id == lapsed:
            get_redis().delete(lock_key(lapsed))  # the lock's time ran out
        real_put(self, pushed)

    monkeypatch.setattr(batch_jobs.Finishes, "put", lapsing)
    with caplog.at_level(logging.WARNING):
        assert reconcile_batch(accounts, "test") == {"ok": 3}
    assert f"the lock of account {lapsed} lapsed before its push was recorded" in caplog.text
    db.session.expire_all()
    account = db.session.get(PtiAccount, lapsed)
    assert account.synced_generation < account.generation and account.state == SyncState.PENDING
    assert db.session.scalar(select(SyncAttempt.id).where(SyncAttempt.account_id == lapsed)) is None
    for other in accounts[:2]:
        assert recorded(other)["state"] == SyncState.IN_SYNC
    assert reconcile(lapsed, "relay").outcome == "noop"  # PTI holds what the lapsed push did
    assert recorded(lapsed)["state"] == SyncState.IN_SYNC


def test_pushes_the_database_refuses_to_record_together_are_recorded_one_by_one(business, pti, monkeypatch,
                                                                                 caplog):
    accounts = plain(4)
    tried: list[int] = []

    def refusing_groups(pushes):
        tried.append(len(pushes))
        if len(pushes) > 1:
            raise OperationalError("UPDATE pti_accounts", {}, Exception("deadlock detected"))
        return finish_many(pushes)

    monkeypatch.setattr(batch_jobs, "finish_many", refusing_groups)
    monkeypatch.setattr(batch_jobs, "FINISH_GATHER_S", 2.0)
    with caplog.at_level(logging.WARNING):
        assert reconcile_batch(accounts, "test") == {"ok": 4}
    assert max(tried) > 1 and "could not be recorded together" in caplog.text
    for account_id in accounts:
        assert recorded(account_id)["state"] == SyncState.IN_SYNC


def test_what_stood_against_a_batchs_accounts_their_site_and_units_is_closed(business, pti, groups):
    accounts = plain(3)
    northgate = site("northgate")
    first = db.session.get(PtiAccount, accounts[0])
    rental = db.session.scalars(select(Rental).where(Rental.customer_id == first.customer_id,
                                                     Rental.site_id == first.site_id)).first()
    other = db.session.scalar(select(PtiAccount).where(PtiAccount.id.not_in(accounts)))
    problems.open_problem(problems.site_problem(northgate, "invalid_credentials", "refused"))
    problems.open_problem(problems.unit_problem(rental.unit, northgate, "unit_not_found", first.id))
    problems.open_problem(problems.account_problem(first, "foreign_pti_user"))
    problems.open_problem(problems.account_problem(other, "foreign_pti_user"))
    db.session.commit()

    assert reconcile_batch(accounts, "test") == {"ok": 3}
    assert max(len(group) for group in groups) > 1
    db.session.expire_all()
    assert db.session.scalars(select(OpenProblem.cause)).all() == [
        f"user:{other.customer.sg_id}:{other.site.sg_id}:foreign_pti_user"]
