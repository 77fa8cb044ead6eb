"""How far sync is behind: each account's `owed_since`, the stale banner on every page and its /metrics gauges."""

from datetime import timedelta

import pytest
from sqlalchemy import update

import dashboard.engine.reconcile as engine
from dashboard.engine import lag
from dashboard.engine.intent import mark_dirty, mark_site_dirty
from dashboard.engine.reconcile import reconcile
from dashboard.extensions import db
from dashboard.jobqueue import URGENT, get_queue
from dashboard.models import PtiAccount, utcnow
from tests.engine.conftest import customer_with, site


def owed_since(account_id: int):
    db.session.expire_all()
    return db.session.get(PtiAccount, account_id).owed_since


def backdate(account_id: int, seconds: float) -> None:
    db.session.execute(update(PtiAccount).where(PtiAccount.id == account_id)
                       .values(owed_since=utcnow() - timedelta(seconds=seconds)))
    db.session.commit()


def test_a_mark_starts_the_clock_a_second_mark_keeps_it_and_the_push_stops_it(business):
    before = utcnow()
    account = mark_dirty(customer_with(1), site("northgate").id)
    db.session.commit()
    first = owed_since(account.id)
    assert first is not None and first >= before - timedelta(seconds=1)
    backdate(account.id, 120)
    older = owed_since(account.id)
    mark_dirty(account.customer_id, account.site_id)
    db.session.commit()
    assert owed_since(account.id) == older  # still the change made two minutes ago that PTI lacks
    assert reconcile(account.id, "test").outcome == "ok"
    assert owed_since(account.id) is None
    mark_dirty(account.customer_id, account.site_id)
    db.session.commit()
    assert owed_since(account.id) >= older + timedelta(seconds=100)  # a new change, a new clock


def test_a_push_that_finishes_while_a_newer_change_is_owed_keeps_the_clock(business, monkeypatch):
    account = mark_dirty(customer_with(1), site("northgate").id)
    db.session.commit()
    backdate(account.id, 300)
    real = engine._finish

    def marked_meanwhile(*args, **kwargs):  # a webhook marks the customer while the push is at PTI
        db.session.execute(update(PtiAccount).where(PtiAccount.id == account.id)
                           .values(generation=PtiAccount.generation + 1))
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "_finish", marked_meanwhile)
    reconcile(account.id, "test")
    since = owed_since(account.id)
    assert since is not None and (utcnow() - since).total_seconds() >= 290


def test_a_site_wide_mark_starts_the_clock_of_new_and_in_sync_accounts_alike(business):
    northgate = site("northgate")
    synced = mark_dirty(customer_with(1), northgate.id)
    db.session.commit()
    reconcile(synced.id, "test")
    fresh = customer_with(1)
    db.session.commit()
    ids = mark_site_dirty(northgate.id, {synced.customer_id, fresh.id})
    db.session.commit()
    assert all(owed_since(i) is not None for i in ids)


def test_nothing_owed_is_not_stale(business):
    found = lag.measure(utcnow())
    assert (found.owed_s, found.urgent_owed_s, found.delivery_s, found.urgent_job_s) == (None, None, None, None)
    assert lag.stale_reasons(found) == [] and found.worst_s == 0.0


@pytest.mark.parametrize(("urgent", "age_s", "reason"), [
    (False, 30, None),
    (False, 1000, "the oldest change owed to PTI was made 16 min 40 s ago"),
    (True, 30, None),
    (True, 90, "a lock or unlock has been owed to PTI for 1 min 30 s"),
])
def test_an_owed_change_is_stale_past_its_threshold(business, urgent, age_s, reason):
    account = mark_dirty(customer_with(1), site("northgate").id, urgent=urgent)
    db.session.commit()
    backdate(account.id, age_s)
    reasons = lag.stale_reasons(lag.measure(utcnow()))
    assert (reason in reasons) if reason else reasons == []


def test_a_parked_failure_does_not_keep_sync_stale(business):
    account = mark_dirty(customer_with(1), site("northgate").id)
    db.session.commit()
    backdate(account.id, 5000)
    db.session.execute(update(PtiAccount).where(PtiAccount.id == account.id).values(state="failed"))
    db.session.commit()
    assert lag.measure(utcnow()).owed_s is None


def test_an_urgent_job_waiting_past_its_threshold_is_stale(business):
    get_queue(URGENT).enqueue("jobs.reconcile.reconcile_account", 1, "test")
    now = utcnow()
    assert lag.stale_reasons(lag.measure(now)) == []
    later = lag.measure(now + timedelta(seconds=75))
    assert later.urgent_job_s >= 75
    assert "the urgent queue's oldest job has waited 1 min 15 s" in lag.stale_reasons(later)


def test_every_page_shows_the_banner_while_stale_and_metrics_say_so(business, client, auth):
    auth.login("staff")
    assert b"data-stale" not in client.get("/").data
    account = mark_dirty(customer_with(1), site("northgate").id, urgent=True)
    db.session.commit()
    backdate(account.id, 600)
    for path in ("/", "/sites/", "/rentals/", "/activity/"):
        page = client.get(path)
        assert page.status_code == 200
        assert b'data-stale="true"' in page.data and b"a lock or unlock has been owed to PTI for 10 min" in page.data
    metrics = client.get("/metrics").data.decode()
    assert "pti_sync_stale 1.0" in metrics
    assert 'pti_sync_lag_seconds{what="urgent_owed"} 6' in metrics  # 600 s and a little


def test_the_banner_is_not_shown_to_someone_logged_out(business, client, demo_users):
    account = mark_dirty(customer_with(1), site("northgate").id, urgent=True)
    db.session.commit()
    backdate(account.id, 600)
    assert b"data-stale" not in client.get("/login").data


def test_a_push_records_its_event_to_gate_time_in_the_journal_and_a_push_with_nothing_owed_none(business):
    from sqlalchemy import select

    from dashboard.models import SyncAttempt

    account = mark_dirty(customer_with(1), site("northgate").id)
    db.session.commit()
    backdate(account.id, 120)
    assert reconcile(account.id, "test").outcome == "ok"
    assert reconcile(account.id, "again").outcome == "noop"
    took = dict(db.session.execute(select(SyncAttempt.trigger, SyncAttempt.gate_ms)
                                   .where(SyncAttempt.account_id == account.id)).all())
    assert 120_000 <= took["test"] < 180_000  # from the change's mark to PTI's confirmation
    assert took["again"] is None  # PTI took nothing: no event to time
