"""Durable intent's hints to RQ: one queued job per account, an urgent one never stuck behind a slower queue."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import redis
from rq import Queue
from rq.job import Job, JobStatus
from sqlalchemy import event, select, update

import dashboard.engine.intent as intent
from dashboard.engine.intent import HOLDER_KEY, PENDING_KEY, Hint, mark_dirty, push_site, relay, request_reconcile
from dashboard.extensions import db
from dashboard.jobqueue import BULK, DEFAULT, URGENT, get_redis
from dashboard.models import PtiAccount, Rental, Site, SyncState, utcnow
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
    assert Hint.parse(get_redis().get(PENDING_KEY.format(account_id=account.id))).queue == URGENT


def test_the_relay_leaves_accounts_a_site_push_already_holds(business):
    count = push_site(site("riverside"), "test")
    assert count > 30
    assert relay() == 0
    assert queued(DEFAULT) == [] and len(Queue(BULK, connection=get_redis()).jobs) >= 1


def test_a_site_push_is_one_bulk_job_so_a_push_of_many_sites_runs_them_all_at_once(business):
    """A batch runs as many threads as its site has PTI slots: two batches of one site would only share them while
    another site's push waited for a worker behind them."""
    count = push_site(site("riverside"), "test")
    [job] = Queue(BULK, connection=get_redis()).jobs
    assert len(job.args[0]) == count and len(set(job.args[0])) == count


def test_a_site_bigger_than_a_batch_is_pushed_in_batches_of_batch_size(business, monkeypatch):
    monkeypatch.setattr(intent, "BATCH_SIZE", 10)
    count = push_site(site("riverside"), "test")
    sizes = [len(job.args[0]) for job in Queue(BULK, connection=get_redis()).jobs]
    assert sum(sizes) == count and max(sizes) == 10 and len(sizes) == -(-count // 10)


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


def held_by_batches() -> dict[str, list[int]]:
    """The site push's batch jobs and the accounts each holds."""
    return {job.id: job.args[0] for job in Queue(BULK, connection=get_redis()).jobs}


def killed(job_id: str, seconds_ago: float = 30) -> None:
    """What RQ shows for a batch whose worker was SIGKILLed: started a while ago, still "started", no heartbeat."""
    conn = get_redis()
    job = Job.fetch(job_id, connection=conn)
    Queue(BULK, connection=conn).remove(job)
    job.set_status(JobStatus.STARTED)
    job.started_at = utcnow() - timedelta(seconds=seconds_ago)
    job.save()


def test_the_relay_re_drives_the_accounts_a_killed_batch_still_held(business):
    push_site(site("riverside"), "test")
    batches = held_by_batches()
    victim, stranded = next(iter(batches.items()))
    killed(victim)
    assert len(stranded) >= intent.RELAY_BATCH_MIN
    assert relay() == len(stranded)
    again = [job for job in Queue(BULK, connection=get_redis()).jobs if job.id not in batches]
    # a batch again (it reads the site's PTI once), on the bulk queue, holding each of them
    assert [(job.func_name, sorted(job.args[0])) for job in again] == [(intent.RECONCILE_BATCH, sorted(stranded))]
    assert {Hint.parse(get_redis().get(PENDING_KEY.format(account_id=a))).job_id for a in stranded} == {again[0].id}
    assert relay() == 0, "the jobs just enqueued hold the accounts now"


def test_the_relay_re_drives_a_few_stranded_accounts_one_job_each(business):
    push_site(site("riverside"), "test")
    batches = held_by_batches()
    victim, stranded = next(iter(batches.items()))
    conn = get_redis()
    for account_id in stranded[intent.RELAY_BATCH_MIN - 1:]:  # the batch had reached all but a few
        conn.delete(PENDING_KEY.format(account_id=account_id))
        db.session.get(PtiAccount, account_id).synced_generation = db.session.get(PtiAccount, account_id).generation
    db.session.commit()
    killed(victim)
    few = stranded[:intent.RELAY_BATCH_MIN - 1]
    assert relay() == len(few)
    assert sorted(queued(BULK)[len(batches) - 1:]) == sorted(few)  # single jobs, in the queue they were in


def test_the_relay_leaves_the_accounts_of_a_running_batch_with_a_heartbeat(business):
    push_site(site("riverside"), "test")
    victim = next(iter(held_by_batches()))
    killed(victim)
    get_redis().set(HOLDER_KEY.format(job_id=victim), 1, ex=intent.HOLDER_TTL_S)
    assert relay() == 0


def test_a_killed_batch_is_noticed_within_two_relay_periods():
    from dashboard.cli import RELAY_EVERY_S

    # the heartbeat expires HOLDER_TTL_S after the last beat; the next relay run comes at most a period later
    assert intent.HOLDER_BEAT_S < intent.HOLDER_TTL_S and intent.HOLDER_TTL_S + RELAY_EVERY_S <= 2 * RELAY_EVERY_S


def test_a_batch_beats_while_it_runs_and_stops_when_it_ends(app):
    conn = get_redis()
    key = HOLDER_KEY.format(job_id="batch-1")
    with intent.holding(conn, "batch-1"):
        assert conn.exists(key) and 0 < conn.ttl(key) <= intent.HOLDER_TTL_S
    assert not conn.exists(key)


def test_an_account_whose_enqueue_failed_after_its_key_was_set_is_re_driven_by_the_relay(business, monkeypatch):
    account = mark_dirty(customer_with(1), site("northgate").id)
    db.session.commit()

    def refused(*_args, **_kwargs):
        raise redis.ConnectionError("Redis went away between the key and the job")

    monkeypatch.setattr(intent, "enqueue", refused)
    assert request_reconcile([account], trigger="staff") == 0
    assert get_redis().exists(PENDING_KEY.format(account_id=account.id)), "the key was set, the job was not"
    monkeypatch.undo()
    assert relay() == 0, "a key this young may name a job being enqueued"
    monkeypatch.setattr(intent, "ENQUEUE_GRACE_S", 0)
    assert relay() == 1
    assert queued(DEFAULT) == [account.id]


def test_the_relay_looks_past_accounts_held_by_queued_jobs_to_the_next_ones(business, monkeypatch):
    push_site(site("riverside"), "test")  # every riverside account held by a queued batch
    lost = mark_dirty(customer_with(1), site("northgate").id)
    db.session.commit()
    assert lost.id > max(a for ids in held_by_batches().values() for a in ids)
    runs = []
    for _ in range(10):
        runs.append(relay(limit=20))
        if runs[-1]:
            break
    assert runs[-1] == 1 and queued(DEFAULT) == [lost.id], runs


class RoundTrips:
    """Counts what reaches Redis (single commands and pipelines) and the database (statements)."""

    def __init__(self, monkeypatch):
        self.redis = self.sql = 0
        command, execute = redis.Redis.execute_command, redis.client.Pipeline.execute

        def counted_command(client, *args, **options):
            if not isinstance(client, redis.client.Pipeline):
                self.redis += 1
            return command(client, *args, **options)

        def counted_execute(pipe, *args, **options):
            self.redis += 1
            return execute(pipe, *args, **options)

        monkeypatch.setattr(redis.Redis, "execute_command", counted_command)
        monkeypatch.setattr(redis.client.Pipeline, "execute", counted_execute)
        event.listen(db.engine, "before_cursor_execute", self._statement)

    def _statement(self, *_args):
        self.sql += 1

    def close(self):
        event.remove(db.engine, "before_cursor_execute", self._statement)


def owed_in_three_kinds(count: int) -> None:
    """`count` owed accounts: a third free, a third held by a live queued job, a third held by a job lost."""
    customers = db.session.scalars(select(Rental.customer_id).distinct().order_by(Rental.customer_id)).all()
    pairs = [(c, s) for c in customers for s in db.session.scalars(select(Site.id).order_by(Site.id))][:count]
    assert len(pairs) == count
    accounts = [mark_dirty(c, s) for c, s in pairs]
    db.session.commit()
    request_reconcile(accounts[count // 3:], trigger="test")
    conn = get_redis()
    for account in accounts[2 * count // 3:]:  # their jobs lost
        hint = Hint.parse(conn.get(PENDING_KEY.format(account_id=account.id)))
        Job.fetch(hint.job_id, connection=conn).delete()
        conn.set(PENDING_KEY.format(account_id=account.id), str(Hint(DEFAULT, hint.job_id, 0)))


@pytest.mark.parametrize("count", [9, 300])
def test_the_relay_makes_a_fixed_number_of_round_trips_however_many_accounts_are_owed(business, monkeypatch, count):
    owed_in_three_kinds(count)
    trips = RoundTrips(monkeypatch)
    try:
        enqueued = relay()
    finally:
        trips.close()
    assert enqueued == count - (2 * count // 3 - count // 3)  # the free ones and the lost ones
    # the sites' guards, cursor read and write, the pending keys, the jobs they name, their heartbeats, the claim,
    # the enqueue; in SQL the sites, the owed ids (twice when the cursor wraps)
    assert trips.redis <= 8, trips.redis
    assert trips.sql <= 4, trips.sql


def test_one_relay_run_re_drives_a_backlog_bigger_than_one_pass(business):
    """10,000 accounts a Redis restart left owed must not wait five relay periods: one run makes as many passes of
    `limit` as its time budget allows."""
    owed_in_three_kinds(90)
    get_redis().flushdb()  # Redis restarted empty: every one of them is owed and held by nothing
    assert relay(limit=20) == 90
    assert relay(limit=20, budget_s=0) == 0, "all held by the jobs just enqueued"


def test_once_a_sites_probe_got_through_its_outage_retries_stop_waiting_out_their_backoff(business):
    """A push that failed on PTI's outage waits up to minutes for its retry; PTI back (the probe got through), it
    goes at the next relay, not minutes later."""
    from datetime import timedelta

    from dashboard.jobqueue import RECONCILE, get_queue

    northgate = site("northgate")
    waiting = mark_dirty(customer_with(1), northgate.id)
    waiting.last_error, waiting.next_attempt_at = "pti_server_error", utcnow() + timedelta(seconds=300)
    db.session.commit()
    conn = get_redis()
    job = get_queue(DEFAULT).enqueue_in(timedelta(seconds=300), RECONCILE, waiting.id, "retry")
    conn.set(PENDING_KEY.format(account_id=waiting.id), str(Hint(DEFAULT, job.id, 0)))
    assert relay() == 0, "its retry is scheduled and its wait not over"

    conn.set(f"pti-sync:site:{northgate.id}:recovered", 1, ex=60)  # what the probe's success leaves
    assert relay() == 1
    assert queued(DEFAULT) == [waiting.id]
    db.session.expire_all()
    assert db.session.get(PtiAccount, waiting.id).next_attempt_at is None


def test_a_delivery_job_holds_the_urgent_accounts_it_pushes_itself_and_enqueues_the_rest(business):
    """A payment's delivery job pushes the unlock itself: its key names that job and no second job is queued; a
    change that is not urgent still gets its own job; an urgent account already held by a queued urgent job is
    left to it."""
    paying = mark_dirty(customer_with(1), site("northgate").id, urgent=True)
    renamed = mark_dirty(customer_with(2), site("northgate").id)
    db.session.commit()
    held: list[int] = []
    assert request_reconcile([paying, renamed], trigger="unitRental.unmarkOverdue", hold="sg-delivery-1",
                             held=held) == 2
    assert held == [paying.id]
    assert (queued(URGENT), queued(DEFAULT)) == ([], [renamed.id])
    assert Hint.parse(get_redis().get(PENDING_KEY.format(account_id=paying.id))).job_id == "sg-delivery-1"
    assert relay() == 0, "a key naming the running delivery job is that job's"

    again: list[int] = []
    other = mark_dirty(customer_with(1, site_code="riverside"), site("riverside").id, urgent=True)
    db.session.commit()
    request_reconcile([other], trigger="first")  # an urgent job is queued for it already
    assert request_reconcile([other], trigger="second", hold="sg-delivery-2", held=again) == 0
    assert again == [] and queued(URGENT) == [other.id]


def test_a_mark_on_an_account_the_session_read_before_a_push_finished_is_written_whole(business):
    """Staff's requeue and the foreign-user decisions load the account before they mark it, and FOR UPDATE does not
    refresh a loaded account. When a push finished in between (its account now failed, three attempts, no longer
    urgent), the mark still makes it pending, urgent and retried from nought: the values equal to the stale copy
    are not left out of the UPDATE."""
    account = mark_dirty(customer_with(1), site("northgate").id, urgent=True)
    db.session.commit()
    account_id = account.id
    account = db.session.get(PtiAccount, account_id)
    assert (account.state, account.urgent, account.attempts) == (SyncState.PENDING, True, 0)  # the caller's copy
    table = PtiAccount.__table__
    with db.engine.connect() as other:  # a push's finish, from a worker
        other.execute(update(table).where(table.c.id == account_id)
                      .values(state=SyncState.FAILED, urgent=False, attempts=3, next_attempt_at=utcnow()))
        other.commit()
    mark_dirty(account.customer_id, account.site_id, urgent=True)
    db.session.commit()
    db.session.expire_all()
    account = db.session.get(PtiAccount, account_id)
    assert (account.state, account.urgent, account.attempts, account.next_attempt_at) == \
        (SyncState.PENDING, True, 0, None)
