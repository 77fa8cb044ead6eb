"""Durable intent's hints to RQ: one queued job per account, an urgent one never stuck behind a slower queue."""

from rq import Queue

from dashboard.engine.intent import PENDING_KEY, mark_dirty, push_site, relay, request_reconcile
from dashboard.extensions import db
from dashboard.jobqueue import BULK, DEFAULT, URGENT, get_redis
from tests.engine.conftest import customer_with, site


def queued(name: str) -> list:
    return [job.args[0] for job in Queue(name, connection=get_redis()).jobs]


def test_a_second_request_for_a_queued_account_adds_no_job(business):
    account = mark_dirty(customer_with(1), site("northgate").id)
    db.session.commit()
    assert request_reconcile([account], trigger="a") == 1
    assert request_reconcile([account], trigger="b") == 0
    assert queued(DEFAULT) == [account.id]


def test_an_urgent_request_is_not_left_behind_a_job_in_a_slower_queue(business):
    account = mark_dirty(customer_with(1), site("northgate").id)
    db.session.commit()
    request_reconcile([account], trigger="csv", bulk=True)
    account = mark_dirty(account.customer_id, account.site_id, urgent=True)
    db.session.commit()
    assert request_reconcile([account], trigger="payment") == 1
    assert (queued(BULK), queued(URGENT)) == ([account.id], [account.id])
    assert request_reconcile([account], trigger="payment again") == 0
    assert get_redis().get(PENDING_KEY.format(account_id=account.id)) == URGENT.encode()


def test_the_relay_leaves_accounts_a_site_push_already_holds(business):
    count = push_site(site("riverside"), "test")
    assert count > 30
    assert relay() == 0
    assert queued(DEFAULT) == [] and len(Queue(BULK, connection=get_redis()).jobs) >= 1
