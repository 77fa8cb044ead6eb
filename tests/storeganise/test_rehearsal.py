"""A worker rehearses a lockout and a payment before its first job (jobs/rehearsal.py): a made-up customer taken
through the delivery's own path, against the simulators in the process and in a transaction rolled back, so that
the first real event finds its statements compiled. Nothing of the rehearsal is kept."""

from __future__ import annotations

import pytest
from rq import Queue
from sqlalchemy import event, func, select
from sqlalchemy.engine.default import CACHE_MISS

from dashboard.clients import PTI_CLIENTS_EXTENSION
from dashboard.extensions import db
from dashboard.jobqueue import QUEUE_NAMES, get_redis
from dashboard.mirror.importer import import_business
from dashboard.models import Rental
from dashboard.pti import PtiClientRegistry
from jobs.events import handle_delivery
from jobs.rehearsal import rehearse
from tests.conftest import flush_redis

from .conftest import sole_rental


def on_postgresql() -> None:
    if db.engine.dialect.name != "postgresql":
        pytest.skip("the rehearsal runs on PostgreSQL only (on SQLite it is skipped: see the next test)")


def rows() -> dict[str, int]:
    return {table.name: db.session.scalar(select(func.count()).select_from(table))
            for table in db.metadata.sorted_tables}


def test_on_sqlite_a_worker_does_not_rehearse(app):
    if db.engine.dialect.name != "sqlite":
        pytest.skip("the SQLite case")
    before = rows()
    assert rehearse() is False
    assert rows() == before


def test_a_rehearsal_takes_its_customer_through_a_lockout_and_a_payment_and_keeps_nothing(app, redis_url):
    on_postgresql()
    flush_redis(redis_url)
    kept_registry = app.extensions.get(PTI_CLIENTS_EXTENSION)
    before = rows()
    assert rehearse() is True  # False had it not ended with the unit locked, then unlocked
    db.session.rollback()
    assert rows() == before, "the rehearsal left rows in the database"
    conn = get_redis()
    assert all(conn.ttl(key) > 0 for key in conn.keys("*")), "the rehearsal left a Redis key that never expires"
    assert sum(Queue(name, connection=conn).count for name in QUEUE_NAMES) == 0, "the rehearsal enqueued a job"
    assert app.extensions.get(PTI_CLIENTS_EXTENSION) is kept_registry


def test_after_the_rehearsal_a_real_lockout_finds_its_statements_compiled(app, sg, sim, hooks, redis_url):
    """A fresh engine has compiled nothing; the rehearsal compiles what a delivery's landing sends, so the first real
    overdue event sends them from the cache (without the rehearsal, each of its statements is a miss)."""
    on_postgresql()
    import_business(sg)
    flush_redis(redis_url)
    assert rehearse() is True
    target = sole_rental(sim, overdue=False)
    sim.set_overdue(target["id"], True)
    [record] = hooks.deliver_new()
    compiled: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany) -> None:
        if context is not None and context.cache_hit == CACHE_MISS:
            compiled.append(" ".join(statement.split())[:160])

    event.listen(db.engine, "after_cursor_execute", note)
    try:
        assert handle_delivery(record["id"]) == "processed"
    finally:
        event.remove(db.engine, "after_cursor_execute", note)
    assert db.session.scalar(select(Rental.overlocked).where(Rental.sg_id == target["id"])) is True
    assert compiled == [], compiled


@pytest.mark.parametrize("where", ["in the rehearsal", "setting it up"])
def test_a_rehearsal_that_fails_is_logged_and_puts_the_apps_clients_and_session_back(app, monkeypatch, caplog, where):
    """Whatever fails, the worker's own PTI clients and database session are its own again: a worker that went on
    with the rehearsal's would push to the simulator inside it."""
    import logging

    import jobs.rehearsal as rehearsal

    on_postgresql()
    own_clients, own_session = PtiClientRegistry(), db.session()
    app.extensions[PTI_CLIENTS_EXTENSION] = own_clients

    def broken(*args, **kwargs):
        raise RuntimeError("broken on purpose")

    monkeypatch.setattr(rehearsal, "mark_dirty" if where == "in the rehearsal" else "Session", broken)
    before = rows()
    with caplog.at_level(logging.WARNING, logger="jobs.rehearsal"):
        assert rehearse() is False
    assert "the worker's rehearsal of a payment failed (RuntimeError: broken on purpose)" in caplog.text
    assert app.extensions[PTI_CLIENTS_EXTENSION] is own_clients
    assert db.session() is own_session
    assert rows() == before
