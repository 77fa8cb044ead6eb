"""A pooled database connection is asked whether it still answers only when it has rested (extensions.
ping_when_rested): a job's check-outs a few milliseconds apart, and a busy receiver's, go without the round trip,
while a connection the database dropped during a rest (a restart, an idle time-out) is replaced before use."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from dashboard.extensions import ping_when_rested

REST_S = 0.3


@pytest.fixture
def engine(app):
    """An engine on the test database with a short rest, its pings counted."""
    options = app.config["SQLALCHEMY_ENGINE_OPTIONS"]
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"], connect_args=options.get("connect_args", {}))
    ping_when_rested(engine, rest_s=REST_S)
    ping = engine.dialect.do_ping
    engine.pings = []

    def counted(dbapi_connection):
        engine.pings.append(dbapi_connection)
        return ping(dbapi_connection)

    engine.dialect.do_ping = counted
    yield engine
    engine.dispose()


def use(engine):
    """Check a connection out, run a statement, check it in; the DBAPI connection it was."""
    with engine.connect() as connection:
        assert connection.execute(text("SELECT 1")).scalar() == 1
        return connection.connection.dbapi_connection


def test_a_connection_back_a_moment_ago_goes_out_unpinged_and_a_rested_one_is_pinged(engine):
    first = use(engine)  # opened just now: nothing to ask
    assert use(engine) is first and engine.pings == []
    time.sleep(REST_S + 0.05)
    assert use(engine) is first
    assert engine.pings == [first]


def test_a_connection_dropped_while_it_rested_is_replaced_before_use(engine):
    dropped = use(engine)
    dropped.close()  # what a server restart or an idle time-out does to it, underneath the pool
    time.sleep(REST_S + 0.05)
    assert use(engine) is not dropped
    assert engine.pings == [dropped]


def test_a_connection_dropped_a_moment_ago_fails_once_as_a_disconnect_and_the_pool_starts_afresh(engine):
    """The window the rest leaves: the statement fails as a disconnect (a job's retry or the relay runs it again, the
    receiver writes its row again), and the next check-out gets a new connection."""
    dropped = use(engine)
    dropped.close()
    with pytest.raises(DBAPIError) as failed:
        use(engine)
    assert failed.value.connection_invalidated
    assert use(engine) is not dropped
