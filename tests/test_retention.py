"""Old history is pruned on a documented schedule, in bounded batches, and a delivery still owed is never deleted."""

from datetime import timedelta

from sqlalchemy import event, func, select

from dashboard.extensions import db
from dashboard.models import SyncAttempt, WebhookDelivery, utcnow
from dashboard.retention import prune


def journal(days_ago: float, count: int = 1) -> None:
    from dashboard.engine.intent import mark_dirty
    from tests.engine.conftest import customer_with, site

    account = mark_dirty(customer_with(1), site("northgate").id)
    db.session.flush()
    for _ in range(count):
        db.session.add(SyncAttempt(account_id=account.id, trigger="test", generation=1, outcome="ok",
                                   started_at=utcnow() - timedelta(days=days_ago)))
    db.session.commit()


def delivery(key: str, days_ago: float, status: str) -> None:
    db.session.add(WebhookDelivery(id=key, type="unitRental.updated", status=status, payload={},
                                   received_at=utcnow() - timedelta(days=days_ago)))
    db.session.commit()


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def test_journal_rows_older_than_their_retention_are_pruned_and_newer_ones_kept(app, demo_business):
    app.config["JOURNAL_RETENTION_DAYS"] = 30
    journal(31, count=3)
    journal(29, count=2)
    assert prune().attempts == 3
    assert count(SyncAttempt) == 2


def test_a_delivery_still_queued_is_never_pruned_however_old(app):
    app.config["DELIVERY_RETENTION_DAYS"] = 30
    delivery("old-queued", 400, "queued")
    for status in ("processed", "ignored", "failed"):
        delivery(f"old-{status}", 31, status)
    delivery("new-processed", 1, "processed")
    assert prune().deliveries == 3
    assert sorted(db.session.scalars(select(WebhookDelivery.id))) == ["new-processed", "old-queued"]


def test_pruning_deletes_in_bounded_batches_and_a_run_stops_after_its_last_batch(app):
    app.config["DELIVERY_RETENTION_DAYS"] = 1
    for i in range(7):
        delivery(f"d{i}", 5, "processed")
    deletes = []

    def seen(_conn, _cursor, statement, *_args):
        if statement.lstrip().upper().startswith("DELETE FROM WEBHOOK_DELIVERIES"):
            deletes.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        assert prune(batch=3, max_batches=2).deliveries == 6
        assert len(deletes) == 2 and count(WebhookDelivery) == 1
        assert prune(batch=3, max_batches=2).deliveries == 1  # the next run carries on
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)


def test_a_retention_of_zero_days_keeps_everything(app):
    app.config["DELIVERY_RETENTION_DAYS"] = 0
    delivery("ancient", 4000, "processed")
    assert prune().deliveries == 0 and count(WebhookDelivery) == 1


def test_the_pruning_job_is_registered_by_cron(runner, monkeypatch):
    import dashboard.cli as cli
    from dashboard.jobqueue import PRUNE

    registered = []

    class Recorder:
        def __init__(self, **_options):
            pass

        def register(self, fn, queue, interval):
            registered.append(f"{fn.__module__}.{fn.__name__}")

        def start(self):
            pass

    monkeypatch.setattr(cli, "CronScheduler", Recorder)
    assert runner.invoke(args=["cron"]).exit_code == 0
    assert PRUNE in registered
