"""Flask extensions, created here and initialised in create_app() (no side effects at import)."""

from flask_htmx import HTMX
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy.dialects import postgresql, sqlite
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
