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
