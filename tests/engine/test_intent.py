"""Durable intent's hints to RQ: one queued job per account, an urgent one never stuck behind a slower queue."""

import threading
from concurrent.futures import ThreadPoolExecutor

from rq import Queue
from sqlalchemy import event, select

from dashboard.engine.intent import PENDING_KEY, mark_dirty, push_site, relay, request_reconcile
from dashboard.extensions import db
from dashboard.jobqueue import BULK, DEFAULT, URGENT, get_redis
from dashboard.models import PtiAccount
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


def test_two_first_marks_of_one_customer_at_once_make_one_account_and_both_succeed(app, business):
    """The first mark of a customer at a site creates its account: two at once (two staff actions, a CSV and a
    webhook) must not both insert it. Both reach the INSERT before either commits; both then commit."""
    customer = customer_with(1)
    site_id = site("riverside").id
    assert db.session.scalar(select(PtiAccount).where(PtiAccount.customer_id == customer.id,
                                                      PtiAccount.site_id == site_id)) is None
    customer_id = customer.id
    db.session.commit()
    start, inserting = threading.Barrier(2), threading.Barrier(2)
    waited = threading.local()

    def meet_at_the_insert(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("INSERT INTO PTI_ACCOUNTS") and not getattr(waited, "done", False):
            waited.done = True
            inserting.wait(timeout=10)

    def first_mark() -> int:
        with app.app_context():
            start.wait(timeout=10)
            try:
                account = mark_dirty(customer_id, site_id)
                db.session.commit()
                return account.id
            finally:
                db.session.remove()

    event.listen(db.engine, "before_cursor_execute", meet_at_the_insert)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            ids = [f.result() for f in [pool.submit(first_mark), pool.submit(first_mark)]]
    finally:
        event.remove(db.engine, "before_cursor_execute", meet_at_the_insert)
    assert inserting.n_waiting == 0 and not inserting.broken, "the two marks did not race to the insert"
    accounts = db.session.scalars(select(PtiAccount).where(PtiAccount.customer_id == customer_id,
                                                           PtiAccount.site_id == site_id)).all()
    assert len(accounts) == 1 and ids == [accounts[0].id] * 2
    assert accounts[0].generation == 3  # created at 1, marked twice
