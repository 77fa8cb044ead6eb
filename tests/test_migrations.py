"""The Alembic migrations build exactly the schema the models describe."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import upgrade

from dashboard.extensions import db


def test_migrations_and_models_agree(app):
    db.drop_all()
    upgrade()
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, db.metadata)
    assert diff == []
    with db.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE alembic_version")
