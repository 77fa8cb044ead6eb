"""The Work page answers "is PTI Sync keeping up?" from RQ's own queues, workers and registries and from what the
database says is owed; it refreshes itself, survives a Redis that does not answer, and lets admins run the relay."""

from __future__ import annotations

import re
from datetime import timedelta

from rq import Queue, SimpleWorker, Worker
from rq.registry import FailedJobRegistry
from sqlalchemy import select

from dashboard.engine.intent import BATCH_JOB_TIMEOUT_S, account_for
from dashboard.extensions import db
from dashboard.jobqueue import BULK, DEFAULT, RECONCILE, RECONCILE_BATCH, RELAY, URGENT, enqueue, get_queue, get_redis
from dashboard.models import AuditEntry, PtiAccount, Rental, SyncAttempt, WebhookDelivery, utcnow
from dashboard.views.work import last_line, summarise_args
from sim.server import free_port


def queue_row(html: str, name: str) -> dict[str, str]:
    match = re.search(rf'<tr data-queue="{name}" data-depth="(\d+)">(.*?)</tr>', html, re.S)
    assert match, f"no row for the {name} queue"
    return {"depth": match.group(1), "row": match.group(2)}


def fail_a_job(queue: str = DEFAULT, message: str = "invalid literal for int() with base 10: 'x'"):
    """A job that really fails in a worker, so RQ keeps it in its failed registry with its exception."""
    q = Queue(queue, connection=get_redis())
    job = q.enqueue("builtins.int", "not a number")
    SimpleWorker([q], connection=get_redis()).work(burst=True, with_scheduler=False)
    assert job.id in FailedJobRegistry(queue=q)
    return job


def busy_worker(minutes_ago: float, job_name: str = RECONCILE, *args, queue: str = URGENT, **options) -> Worker:
    """A worker registered in Redis as busy with a job that started `minutes_ago`."""
    conn = get_redis()
    q = Queue(queue, connection=conn)
    job = enqueue(job_name, *args, queue=queue, **options)
    q.remove(job)
    worker = Worker([q], connection=conn, name=f"test-{queue}")
    worker.register_birth()
    worker.prepare_execution(job)
    worker.prepare_job_execution(job)
    conn.hset(job.key, "started_at", (utcnow() - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    return worker


def test_every_role_reads_the_queues_with_their_depth_and_oldest_job(client, auth, demo_business):
    auth.login("manager")
    for n in range(3):
        enqueue(RECONCILE, n + 1, queue=URGENT)
    enqueue(RECONCILE, 9, queue=BULK)
    html = client.get("/work/").get_data(as_text=True)
    assert queue_row(html, URGENT)["depth"] == "3"
    assert queue_row(html, DEFAULT)["depth"] == "0"
    assert queue_row(html, BULK)["depth"] == "1"
    assert re.search(r"<td>\d+ s</td>", queue_row(html, URGENT)["row"]) or " s<" in queue_row(html, URGENT)["row"]
    assert "3 queues, in the order workers drain them" in html
    assert 'aria-current="page">Work</a>' in html


def test_an_urgent_job_waiting_too_long_says_the_system_is_not_keeping_up(client, auth, demo_business):
    auth.login("staff")
    job = enqueue(RECONCILE, 1, queue=URGENT)
    get_redis().hset(job.key, "enqueued_at", (utcnow() - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    html = client.get("/work/").get_data(as_text=True)
    assert 'data-health="bad"' in html
    assert "The urgent queue's oldest job has waited 3 min" in html.replace("&#39;", "'")


def test_no_worker_is_said_plainly(client, auth, demo_business):
    auth.login("manager")
    html = client.get("/work/").get_data(as_text=True)
    assert 'data-outage="workers"' in html and "No worker is running" in html


def test_a_busy_worker_shows_its_job_its_arguments_and_how_long_it_has_run(client, auth, demo_business):
    auth.login("manager")
    busy_worker(7, RECONCILE, 42, "staff:staff@demo.test")
    html = client.get("/work/").get_data(as_text=True)
    row = re.search(r'<tr data-worker="test-urgent" data-state="busy">(.*?)</tr>', html, re.S)
    assert row, "the worker is listed as busy"
    assert "reconcile_account</strong>(42, staff:staff@demo.test)" in row.group(1)
    assert "make PTI match Storeganise for one customer at one site" in row.group(1)
    assert "7 min" in row.group(1) and "badge-warn" in row.group(1)
    assert 'data-long-running="1"' in html and 'data-health="warn"' in html


def test_a_batch_is_not_long_until_half_its_time_out(client, auth, demo_business):
    auth.login("manager")
    busy_worker(7, RECONCILE_BATCH, list(range(1, 201)), "bulk", queue=BULK, job_timeout=BATCH_JOB_TIMEOUT_S)
    html = client.get("/work/").get_data(as_text=True)
    assert "reconcile_batch</strong>([1, 2, 3, … 200 in all], bulk)" in html
    assert "data-long-running" not in html


def test_arguments_that_are_not_ids_or_labels_are_summarised_not_shown():
    class Fake:
        args = ("a secret with spaces", 5, {"password": "x"})
        kwargs = {"trigger": "relay"}

    assert summarise_args(Fake()) == "text, 5, dict, trigger=relay"


def test_a_failed_job_shows_with_the_last_line_of_its_error_and_its_digits_masked(client, auth, demo_business):
    auth.login("manager")
    fail_a_job()
    html = client.get("/work/").get_data(as_text=True)
    assert 'data-failed-jobs="1"' in html
    assert "ValueError: invalid literal for int() with base 10: &#39;not a number&#39;" in html
    assert last_line("Traceback…\n  File x\nPtiError: code 123456 refused by https://u:pw@pti/x\n") == \
        "PtiError: code ••• refused by https://•••@pti/x"


def test_scheduled_retries_are_counted_with_the_next_due(client, auth, demo_business):
    auth.login("manager")
    get_queue(DEFAULT).enqueue_in(timedelta(minutes=5), RECONCILE, 1)
    get_queue(DEFAULT).enqueue_in(timedelta(minutes=9), RECONCILE, 2)
    html = client.get("/work/").get_data(as_text=True)
    assert '<td data-scheduled="2">2</td>' in queue_row(html, DEFAULT)["row"]
    assert "<time" in queue_row(html, DEFAULT)["row"]


def some_accounts(n: int) -> list[PtiAccount]:
    """The PTI accounts of the first n rentals' customers (the demo business has none before a push)."""
    pairs = dict.fromkeys((r.customer_id, r.site_id) for r in db.session.scalars(select(Rental).order_by(Rental.id)))
    accounts = [account_for(customer_id, site_id) for customer_id, site_id in list(pairs)[:n]]
    db.session.commit()
    return accounts


def test_owed_work_comes_from_the_database(client, auth, demo_business):
    auth.login("manager")
    accounts = some_accounts(5)
    for a in accounts:
        a.generation, a.synced_generation, a.state = 3, 2, "pending"
        a.next_attempt_at, a.write_back_owed = None, False
    accounts[0].urgent = True
    accounts[1].next_attempt_at = utcnow() + timedelta(minutes=2)
    accounts[4].state = "failed"
    accounts[2].write_back_owed = True
    db.session.add(WebhookDelivery(id="evt-1", type="unitRental.updated", status="queued", payload={},
                                   received_at=utcnow() - timedelta(minutes=2)))
    db.session.add(WebhookDelivery(id="evt-2", type="unitRental.updated", status="processed", payload={}))
    db.session.commit()
    html = client.get("/work/").get_data(as_text=True)
    owed = {k: int(v) for k, v in re.findall(r'data-owed="(\w+)" data-count="(\d+)"', html)}
    assert owed == {"accounts": 4, "retrying": 1, "parked": 1, "write_backs": 1, "overrides": 0, "deliveries": 1}
    assert "<strong>1 urgent</strong>" in html
    assert re.search(r"oldest 2 min( \d+ s)?<", html)


def test_throughput_counts_the_journal_per_minute(client, auth, demo_business):
    auth.login("manager")
    account = some_accounts(1)[0]
    now = utcnow()
    minute = now.replace(second=0, microsecond=0)
    rows = [("ok", minute), ("ok", minute), ("failed", minute), ("noop", minute - timedelta(seconds=30)),
            ("ok", minute - timedelta(minutes=11))]
    for outcome, at in rows:
        db.session.add(SyncAttempt(account_id=account.id, trigger="test", started_at=at, generation=1,
                                   outcome=outcome))
    db.session.commit()
    html = client.get("/work/").get_data(as_text=True)
    lines = re.findall(r'data-minute="([\d:]+)" data-attempts="(\d+)" data-ok="(\d+)"', html)
    assert len(lines) == 10
    by_minute = {label: (attempts, ok) for label, attempts, ok in lines}
    assert by_minute[minute.strftime("%H:%M")] == ("3", "2")
    assert by_minute[(minute - timedelta(minutes=1)).strftime("%H:%M")] == ("1", "0")
    assert sum(int(n) for _, n, _ in lines) == 4, "the attempt 11 minutes ago is out of the window"


def test_the_refresh_answers_htmx_with_the_figures_only(client, auth, demo_business):
    auth.login("manager")
    page = client.get("/work/").get_data(as_text=True)
    assert 'hx-trigger="every 2s' in page and 'id="work-now"' in page
    enqueue(RECONCILE, 1, queue=URGENT)
    fragment = client.get("/work/", headers={"HX-Request": "true", "HX-Target": "work-now"}).get_data(as_text=True)
    assert queue_row(fragment, URGENT)["depth"] == "1"
    assert "<html" not in fragment and 'id="work-now"' not in fragment and "<nav" not in fragment


def test_a_redis_that_does_not_answer_is_a_notice_not_an_error(app, client, auth, demo_business):
    auth.login("manager")
    app.config["REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    app.extensions.pop("pti_sync_redis", None)
    for headers in ({}, {"HX-Request": "true", "HX-Target": "work-now"}):
        response = client.get("/work/", headers=headers)
        html = response.get_data(as_text=True)
        assert response.status_code == 200
        assert 'data-outage="redis"' in html and "Redis is not answering" in html
        assert 'data-owed="accounts"' in html, "the database's figures still show"


def test_an_admin_runs_the_relay_on_the_urgent_queue_and_it_is_audited(client, auth, demo_business):
    auth.login("admin")
    assert "Run the relay now" in client.get("/work/").get_data(as_text=True)
    response = client.post("/work/relay", data={"csrf_token": auth.csrf_token("/work/")},
                           headers={"HX-Request": "true"})
    assert response.status_code == 200 and "Relay queued on the urgent queue" in response.get_data(as_text=True)
    assert response.headers["HX-Trigger"] == "syncChanged"
    jobs = get_queue(URGENT).get_jobs()
    assert [j.func_name for j in jobs] == [RELAY]
    entry = db.session.scalars(select(AuditEntry).where(AuditEntry.action == "run relay")).one()
    assert entry.actor == "admin@demo.test" and entry.detail == {"job": jobs[0].id}


def test_an_admin_requeues_then_clears_failed_jobs_audited(client, auth, demo_business):
    auth.login("admin")
    token = auth.csrf_token("/work/")
    job = fail_a_job(DEFAULT)
    assert client.post("/work/failed/requeue", data={"csrf_token": token}).status_code == 302
    assert get_queue(DEFAULT).get_job_ids() == [job.id]
    assert FailedJobRegistry(queue=get_queue(DEFAULT)).count == 0
    get_queue(DEFAULT).empty()
    fail_a_job(BULK)
    assert client.post("/work/failed/clear", data={"csrf_token": token}).status_code == 302
    assert FailedJobRegistry(queue=get_queue(BULK)).count == 0
    actions = db.session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
    assert actions[-2:] == ["requeue failed jobs", "clear failed jobs"]


def test_nothing_failed_is_said_not_audited(client, auth, demo_business):
    auth.login("admin")
    client.post("/work/failed/requeue", data={"csrf_token": auth.csrf_token("/work/")})
    with client.session_transaction() as session:
        assert session["_flashes"] == [("error", "No failed RQ job to requeue.")]
    assert not db.session.scalars(select(AuditEntry).where(AuditEntry.action == "requeue failed jobs")).all()


def test_only_admins_act_and_others_do_not_see_the_buttons(client, auth, demo_business):
    for role in ("manager", "staff", "support"):
        auth.login(role)
        assert "Run the relay now" not in client.get("/work/").get_data(as_text=True)
        token = auth.csrf_token("/work/")
        for path in ("/work/relay", "/work/failed/requeue", "/work/failed/clear"):
            assert client.post(path, data={"csrf_token": token}).status_code == 403, (role, path)
        auth.logout()
    assert get_queue(URGENT).count == 0
    assert not db.session.scalars(select(AuditEntry).where(AuditEntry.action == "run relay")).all()
