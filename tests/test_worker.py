"""The worker process: its long wait on the queues never lifts the short Redis time-out the jobs rely on."""

from __future__ import annotations

from dashboard.jobqueue import REDIS_SOCKET_TIMEOUT_S, get_redis
from jobs.worker import build_worker


def test_jobs_keep_the_apps_redis_time_out_while_the_worker_waits_long(app):
    jobs_connection = get_redis()  # what the work horses inherit and every job uses
    worker = build_worker()
    assert worker.connection.connection_pool.connection_kwargs["socket_timeout"] > 60  # RQ's wait on the queues
    assert jobs_connection.connection_pool.connection_kwargs["socket_timeout"] == REDIS_SOCKET_TIMEOUT_S
    assert get_redis() is jobs_connection


def test_the_urgent_lane_takes_urgent_work_only_and_runs_it_warm_with_a_fresh_session_each(app):
    """While every general worker is busy with bulk batches, the urgent lane still runs a payment's work; it never
    takes a bulk batch itself, and nothing one job left in the session reaches the next."""
    from rq import Queue

    from dashboard.jobqueue import BULK, URGENT

    bulk = Queue(BULK, connection=get_redis()).enqueue("tests.test_worker.session_probe", "bulk")
    urgent = [Queue(URGENT, connection=get_redis()).enqueue("tests.test_worker.session_probe", f"urgent-{n}")
              for n in range(2)]
    worker = build_worker("urgent")
    assert [q.name for q in worker.queues] == [URGENT]
    assert worker.work(burst=True, with_scheduler=False)
    assert [job.get_status(refresh=True) for job in urgent] == ["finished", "finished"]
    assert [job.return_value() for job in urgent] == [[], []]  # each started with an empty session
    assert bulk.get_status(refresh=True) == "queued"  # left for the general workers


def test_one_event_jobs_run_warm_and_whole_site_jobs_in_a_forked_work_horse(app, monkeypatch):
    """A payment's handler, reconcile and write-back run in the worker's own process (no fork, no fresh PTI login);
    a job over a whole site gets a work horse of its own, so its memory and any crash end with it."""
    import os

    from rq import Queue

    from dashboard.jobqueue import BULK, DEFAULT, FORKED_JOBS, HANDLE_DELIVERY, RECONCILE, RECONCILE_BATCH, WRITE_BACK

    assert {HANDLE_DELIVERY, RECONCILE, WRITE_BACK}.isdisjoint(FORKED_JOBS) and RECONCILE_BATCH in FORKED_JOBS
    monkeypatch.setattr("jobs.worker.FORKED_JOBS", FORKED_JOBS | {"tests.test_worker.forked_probe"})
    warm = Queue(DEFAULT, connection=get_redis()).enqueue("tests.test_worker.pid_probe")
    forked = Queue(BULK, connection=get_redis()).enqueue("tests.test_worker.forked_probe")
    assert build_worker().work(burst=True, with_scheduler=False)
    assert warm.get_status(refresh=True) == "finished" and warm.return_value() == os.getpid()
    assert forked.get_status(refresh=True) == "finished"
    assert forked.return_value() not in (None, os.getpid())


def pid_probe() -> int:
    import os

    return os.getpid()


forked_probe = pid_probe


def niceness_probe() -> int:
    import os

    return os.nice(0)


forked_niceness_probe = niceness_probe


def test_a_whole_site_job_steps_back_in_cpu_priority_and_an_event_job_does_not(app, monkeypatch):
    """On a busy machine a bulk batch must not take the CPU from a payment's unlock: its horse runs at a lower
    priority (HORSE_NICENESS), while warm jobs and the worker itself keep theirs."""
    import os

    from rq import Queue

    from dashboard.jobqueue import BULK, DEFAULT, FORKED_JOBS

    before = os.nice(0)
    monkeypatch.setattr("jobs.worker.FORKED_JOBS", FORKED_JOBS | {"tests.test_worker.forked_niceness_probe"})
    app.config["HORSE_NICENESS"] = 7
    warm = Queue(DEFAULT, connection=get_redis()).enqueue("tests.test_worker.niceness_probe")
    forked = Queue(BULK, connection=get_redis()).enqueue("tests.test_worker.forked_niceness_probe")
    assert build_worker().work(burst=True, with_scheduler=False)
    assert warm.return_value() == before
    assert forked.return_value() == min(19, before + 7)
    assert os.nice(0) == before


def test_a_worker_writes_back_what_its_jobs_handed_over_before_it_ends_and_its_horses_hand_over_nothing(
        app, monkeypatch, tmp_path):
    """A worker process starts its write-back thread (jobs/after_gate.py) for its warm jobs, and on its way out
    (here the end of a burst; a SIGTERM's warm shutdown the same) finishes what they handed over. A forked work horse
    has no such thread: its parent's is not in it."""
    from rq import Queue

    from dashboard.jobqueue import BULK, FORKED_JOBS, URGENT
    from jobs.after_gate import AFTER_GATE_EXTENSION
    from jobs.worker import run_worker

    monkeypatch.setattr("jobs.worker.FORKED_JOBS", FORKED_JOBS | {"tests.test_worker.forked_after_gate_probe"})
    written = tmp_path / "written"
    handed = Queue(URGENT, connection=get_redis()).enqueue("tests.test_worker.hand_over_probe", str(written))
    forked = Queue(BULK, connection=get_redis()).enqueue("tests.test_worker.forked_after_gate_probe")
    run_worker(burst=True)
    assert handed.return_value() is True  # handed over: the job did not write it itself
    assert written.read_text() == "written"  # and written before the worker ended
    assert forked.get_status(refresh=True) == "finished" and forked.return_value() is False
    assert AFTER_GATE_EXTENSION not in app.extensions


def hand_over_probe(path: str) -> bool:
    import time
    from pathlib import Path

    from jobs.after_gate import hand_over

    def write_back() -> None:
        time.sleep(0.3)  # the job has long ended by now
        Path(path).write_text("written")

    return hand_over(write_back)


def forked_after_gate_probe() -> bool:
    from flask import current_app

    from jobs.after_gate import AFTER_GATE_EXTENSION

    return AFTER_GATE_EXTENSION in current_app.extensions


def session_probe(label: str) -> list[str]:
    """What the session already held when the job began; then leaves an uncommitted object behind."""
    from dashboard.extensions import db
    from dashboard.models import WebhookDelivery

    held = [obj.id for obj in db.session.new] + [str(obj) for obj in db.session.identity_map.values()]
    db.session.add(WebhookDelivery(id=f"probe-{label}", type="probe", status="queued", payload={}))
    return held


WARM_UP_PROBE = """
import json, sys
from dashboard import create_app
from dashboard.extensions import db
from jobs.worker import warm_up

app = create_app({"SECRET_KEY": "probe", "ENCRYPTION_KEYS": "ZGVtby1vbmx5LWtleS1kZW1vLW9ubHkta2V5LWRlbW8=",
                  "SQLALCHEMY_DATABASE_URI": sys.argv[1], "REDIS_URL": sys.argv[2]})
with app.app_context():
    def ready():
        return {"httpx transport": "httpcore" in sys.modules,
                "mappers": all(m.configured for m in db.Model.registry.mappers),
                "connection": db.engine.pool.checkedin() > 0}
    before = ready()
    warm_up()
    print(json.dumps({"before": before, "after": ready()}))
"""


def test_a_worker_is_ready_for_its_first_event_before_it_takes_one(tmp_path, redis_url):
    """A fresh worker process loads httpx's transport, configures the ORM and opens a database connection before its
    first job, not during it: on an idle stack those took a fresh urgent process's first payment from 0.08 s to
    0.2-0.6 s."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    probe = subprocess.run([sys.executable, "-c", WARM_UP_PROBE, f"sqlite:///{tmp_path / 'probe.db'}", redis_url],
                           capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert probe.returncode == 0, probe.stderr
    states = json.loads(probe.stdout.strip().splitlines()[-1])
    assert not any(states["before"].values()), states  # a fresh process: none of it is done at import
    assert all(states["after"].values()), states


def test_a_worker_starts_while_the_database_does_not_answer(app, monkeypatch, caplog):
    """The warm-up is a head start, never a condition: a database not answering yet is logged and the worker starts."""
    import logging

    from sqlalchemy.exc import OperationalError

    from dashboard.extensions import db
    from jobs.worker import warm_up

    def refused():
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(db.engine, "connect", refused)
    with caplog.at_level(logging.WARNING, logger="jobs.worker"):
        warm_up()
    assert "worker starting without a database connection (OperationalError)" in caplog.text
