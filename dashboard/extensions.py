"""Flask extensions, created here and initialised in create_app() (no side effects at import)."""

import time

from flask_htmx import HTMX
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate(render_as_batch=True, compare_type=True)
csrf = CSRFProtect()
login_manager = LoginManager()
htmx = HTMX()


def insert_or_skip(model, *key_columns):
    """INSERT ... ON CONFLICT (key) DO NOTHING for the database in use: a row another writer added first is kept,
    and neither transaction fails (PostgreSQL waits for the other to commit, then skips)."""
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[db.session.get_bind().dialect.name]
    return insert(model.__table__).on_conflict_do_nothing(index_elements=list(key_columns))


def commit_keeping_loaded() -> None:
    """Commit without expiring what the session has loaded, so nothing is read again after it.

    For the commits a push makes along the way to make one fact durable (the access code it chose, the PTI user it
    created) while it holds the account's lock: they need to see nobody else's changes, and reading the account,
    its site, its customer and every rental and unit again after each would cost a statement each. What another
    writer changed meanwhile still counts: it raised the account's generation, which the push's finish reads from
    the row, so the account stays owed and is pushed again. Also a delivery's landing, whose marked accounts are
    then asked for by what it wrote (a push reads its account fresh, under its lock)."""
    session = db.session()
    keep, session.expire_on_commit = session.expire_on_commit, False
    try:
        session.commit()
    finally:
        session.expire_on_commit = keep


PING_AFTER_REST_S = 1.0  # a pooled connection idle at least this long is asked whether it still answers


def ping_when_rested(engine, rest_s: float = PING_AFTER_REST_S) -> None:
    """Before handing out a pooled connection that has rested `rest_s` or more, ask the database whether it still
    answers (a server restart, an idle time-out, a dropped socket since); a dead one is replaced, and with it every
    connection opened before (the pool is invalidated, as SQLAlchemy's pre-ping does).

    In place of `pool_pre_ping`, which asks on every check-out: a delivery's job checks a connection out four times
    in a few hundred milliseconds, and the webhook receiver once per webhook, so the ping was a round trip to the
    database in every four of the job and every second of the receiver's. A connection checked in a moment ago is
    handed out as it is; should the database have gone in that moment, the statement fails as a disconnect, the
    pool is invalidated the same way, and the job is run again (RQ's retry, the relay) or the webhook receiver
    writes its row again on a new connection."""
    dialect = engine.dialect

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _rested_from_now(dbapi_connection, record) -> None:
        record.info["pti_sync_rest_from"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_rested(dbapi_connection, record, proxy) -> None:
        if time.monotonic() - record.info.get("pti_sync_rest_from", float("-inf")) < rest_s:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            if dialect.is_disconnect(exc, dbapi_connection, None):
                raise InvalidatePoolError(f"the database did not answer a rested connection's ping: {exc}") from exc
            raise
