"""Staff actions from the CLI: each changes the desired state, is audited, and its push lands in PTI."""

from __future__ import annotations

from rq import Queue, SimpleWorker
from sqlalchemy import select

from dashboard.extensions import db
from dashboard.jobqueue import QUEUE_NAMES, get_redis
from dashboard.models import AuditEntry, PtiAccount
from tests.engine.conftest import account_of, customer_with


def run_jobs() -> None:
    """Drain the queues in this process, as a worker would (jobs the tests do not care about may fail)."""
    conn = get_redis()
    SimpleWorker([Queue(n, connection=conn) for n in QUEUE_NAMES], connection=conn).work(burst=True)


def test_suspend_from_the_cli_overlocks_the_unit_and_is_audited(runner, business, pti):
    customer = customer_with(1, overdue=False)
    rental = customer.rentals[0]
    result = runner.invoke(args=["sync", "suspend", rental.sg_id])
    assert result.exit_code == 0, result.output
    run_jobs()
    assert pti.unit("NG01", rental.unit.pti_unit_name)["locked"] is True
    assert db.session.scalars(select(AuditEntry.action)).all() == ["suspend"]
    runner.invoke(args=["sync", "unsuspend", rental.sg_id])
    run_jobs()
    assert pti.unit("NG01", rental.unit.pti_unit_name)["locked"] is False


def test_regenerate_code_replaces_the_code_for_every_unit(runner, business, pti):
    customer = customer_with(2)
    runner.invoke(args=["sync", "resync", "customer", customer.email])
    run_jobs()
    old = account_of(customer).access_code
    result = runner.invoke(args=["sync", "regenerate-code", customer.sg_id])
    assert result.exit_code == 0, result.output
    run_jobs()
    db.session.expire_all()
    user = pti.user_with_marker("NG01", customer.sg_id)
    assert user["access_code"] == account_of(customer).access_code != old
    assert len(user["units"]) == 2
    assert str(old) not in result.output and str(user["access_code"]) not in result.output


def test_set_access_overrides_level_and_zone_at_the_next_push(runner, business, pti):
    customer = customer_with(1)
    assert runner.invoke(args=["sync", "set-access", customer.sg_id, "--level", "2", "--zone", "3"]).exit_code == 0
    run_jobs()
    user = pti.user_with_marker("NG01", customer.sg_id)
    assert (user["access_level"], user["time_zone"]) == (2, 3)


def test_resync_site_pushes_every_customer_of_the_site(runner, business, pti):
    result = runner.invoke(args=["sync", "resync", "site", "riverside"])
    assert result.exit_code == 0, result.output
    run_jobs()
    db.session.expire_all()
    owed = db.session.scalars(select(PtiAccount).where(PtiAccount.generation > PtiAccount.synced_generation)).all()
    assert owed == []
    assert len(pti.site("RS02")["users"]) > 30


def test_unknown_records_and_bad_values_are_clear_errors(runner, business):
    assert "No rental matches 'nope'" in runner.invoke(args=["sync", "suspend", "nope"]).output
    customer = customer_with(1)
    result = runner.invoke(args=["sync", "set-access", customer.sg_id, "--level", "0"])
    assert result.exit_code != 0 and "access level must be a PTI number of 1 or more" in result.output


def test_status_names_failures_with_their_fix(runner, business, pti):
    runner.invoke(args=["sync", "resync", "site", "hilltop"])
    run_jobs()
    output = runner.invoke(args=["sync", "status"]).output
    assert "hilltop:" in output and "PTI refused the site's credentials." in output
