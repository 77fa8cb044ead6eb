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
