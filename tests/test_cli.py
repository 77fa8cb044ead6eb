"""Operator commands: staff accounts and the demo seed."""

from sqlalchemy import func, select

from dashboard.extensions import db
from dashboard.models import Customer, Rental, Site, StaffUser, Unit


def test_users_create_makes_an_account_that_can_log_in(runner, client):
    result = runner.invoke(args=["users", "create", "Ops@Example.com", "--role", "support", "--password", "pw-1"])
    assert result.exit_code == 0, result.output
    assert "Created ops@example.com (support)." in result.output
    user = db.session.scalar(select(StaffUser))
    assert user.role == "support" and user.check_password("pw-1")


def test_demo_seed_refuses_outside_demo_mode(runner):
    result = runner.invoke(args=["demo", "seed"])
    assert result.exit_code != 0
    assert "only loaded in demo mode" in result.output


def test_demo_seed_is_idempotent_and_loads_the_promised_business(app, runner):
    app.config["DEMO_MODE"] = True
    first = runner.invoke(args=["demo", "seed"])
    second = runner.invoke(args=["demo", "seed"])
    assert first.exit_code == 0 and second.exit_code == 0, first.output + second.output
    assert "4 new accounts" in first.output and "0 new accounts" in second.output
    assert db.session.scalar(select(func.count(Site.id))) >= 3
    assert db.session.scalar(select(func.count(Unit.id))) >= 300
    occupied = select(func.count(Rental.id)).where(Rental.state == "occupied")
    assert db.session.scalar(occupied) >= 150
    assert db.session.scalar(select(func.count(Customer.id))) >= 100
    multi = select(Rental.customer_id).group_by(Rental.customer_id).having(func.count() > 1)
    assert db.session.execute(multi).first() is not None
    assert db.session.scalar(select(func.count(Rental.id)).where(Rental.overdue.is_(True))) > 0
    assert db.session.scalar(select(func.count(StaffUser.id))) == 4


def test_cron_runs_the_relay_on_the_urgent_queue_where_no_backlog_delays_it(runner, monkeypatch):
    import dashboard.cli as cli
    from dashboard.jobqueue import RELAY, URGENT

    registered = {}

    class Recorder:
        def __init__(self, **_options):
            pass

        def register(self, fn, queue, interval):
            registered[f"{fn.__module__}.{fn.__name__}"] = (queue, interval)

        def start(self):
            pass

    monkeypatch.setattr(cli, "CronScheduler", Recorder)
    result = runner.invoke(args=["cron"])
    assert result.exit_code == 0, result.output
    assert registered[RELAY] == (URGENT, cli.RELAY_EVERY_S)


def test_cron_outlives_a_redis_that_hangs_and_goes_on_enqueueing_the_relay(app, tmp_path):
    """RQ's scheduler loop ends on the first Redis error: the cron process drives the relay that recovers from
    outages, so a Redis that stops answering for longer than the time-out must not end it."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    import redis as redis_lib
    from rq import Queue

    import dashboard.cli as cli
    from dashboard.jobqueue import RELAY, URGENT
    from tests.conftest import RedisServer

    server = RedisServer(tmp_path)
    server.start()
    env = {k: v for k, v in os.environ.items() if k != "PTI_SYNC_DEMO"}
    env.update(DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"], REDIS_URL=server.url,
               SECRET_KEY="test-secret", ENCRYPTION_KEYS=app.config["ENCRYPTION_KEYS"], PTI_SYNC_INSTANCE=str(tmp_path))
    log = (tmp_path / "cron.log").open("wb")
    cron = subprocess.Popen([str(Path(sys.executable).with_name("flask")), "--app", "dashboard", "cron"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    conn = redis_lib.Redis(port=server.port)
    urgent = Queue(URGENT, connection=conn)

    def relays() -> int:
        return sum(1 for job in urgent.jobs if job.func_name == RELAY)

    def wait_for(condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert cron.poll() is None, "cron exited:\n" + (tmp_path / "cron.log").read_text(errors="replace")
            assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
            time.sleep(0.2)

    try:
        wait_for(lambda: relays() >= 1, "the first relay")
        urgent.empty()
        os.kill(server.proc.pid, signal.SIGSTOP)  # Redis hangs past the next relay: its calls time out after 2 s
        time.sleep(cli.RELAY_EVERY_S + 4)
        os.kill(server.proc.pid, signal.SIGCONT)
        # The enqueue that hung reaches Redis when it answers again, so a relay may show before the cron has logged
        # its restart: wait for both, the restart's line first.
        wait_for(lambda: "starting again" in (tmp_path / "cron.log").read_text(errors="replace"),
                 "the cron to start its scheduler again (Redis failed it)")
        urgent.empty()
        wait_for(lambda: relays() >= 1, "a relay after Redis answered again")
        assert cron.poll() is None
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
        cron.terminate()
        cron.wait(timeout=10)
        log.close()
        conn.close()
        server.stop()
