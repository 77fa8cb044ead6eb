"""PTI Sync: keeps a Storeganise business and its PTI Storlogix access control in agreement.

`create_app()` builds the web app (and the app context jobs run in); importing this package does nothing else.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SQLITE_BUSY_TIMEOUT_S = 30


def _sqlite_wal(dbapi_connection, _record) -> None:
    """Readers never block the writer (pages stay fast while workers push), on the default SQLite database."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


def create_app(test_config: dict | None = None):
    """Build the Flask app. Imports live here so `import dashboard.sync` (the pure core) never loads Flask."""
    from flask import Flask

    from . import cli, jobqueue, security, views
    from . import config as settings
    from .extensions import csrf, db, htmx, login_manager, migrate, ping_when_rested

    app = Flask(
        __name__,
        instance_path=os.environ.get("PTI_SYNC_INSTANCE") or str(ROOT / "instance"),
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    app.config.update(settings.BASE)
    app.config.update(settings.from_env(app.instance_path))
    if test_config:
        app.config.update(test_config)
    settings.check(app.config)
    settings.postgres_timeouts(app.config)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for chatty in ("httpx", "httpcore"):  # every request is already logged once, by the PTI client or the job
        logging.getLogger(chatty).setLevel(logging.WARNING)

    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        # Workers and web write at once: wait for SQLite's lock instead of failing after 5 s (WAL: see below).
        options = app.config["SQLALCHEMY_ENGINE_OPTIONS"] = dict(app.config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        options["connect_args"] = {**options.get("connect_args", {}), "timeout": SQLITE_BUSY_TIMEOUT_S}
    db.init_app(app)
    with app.app_context():
        ping_when_rested(db.engine)
        if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
            from sqlalchemy import event

            event.listen(db.engine, "connect", _sqlite_wal)
    migrate.init_app(app, db, directory=str(ROOT / "migrations"))
    csrf.init_app(app)
    htmx.init_app(app)
    login_manager.init_app(app)
    jobqueue.init_app(app)

    security.init_app(app)
    views.init_app(app)
    cli.init_app(app)
    return app
