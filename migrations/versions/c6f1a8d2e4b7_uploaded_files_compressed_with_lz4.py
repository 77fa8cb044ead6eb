"""An uploaded file is stored compressed with LZ4 on PostgreSQL (14 or later, built with LZ4)

PostgreSQL compresses a large value with pglz by default, which took ~0.5 s of the upload request for a
100,000-row export (17 MB); LZ4 stores it as small in a fifth of the time. Other databases, and a PostgreSQL
without LZ4, keep their default: nothing else depends on it.

Revision ID: c6f1a8d2e4b7
Revises: d3b8e5a1c7f2
Create Date: 2026-12-01 18:00:00.000000

"""
import logging

from alembic import op
from sqlalchemy.exc import DBAPIError

# revision identifiers, used by Alembic.
revision = 'c6f1a8d2e4b7'
down_revision = 'd3b8e5a1c7f2'
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")


def _compression(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or bind.dialect.server_version_info < (14,):
        return
    try:
        with bind.begin_nested():
            bind.exec_driver_sql(f"ALTER TABLE uploads ALTER COLUMN data SET COMPRESSION {method}")
    except DBAPIError as exc:  # a server built without LZ4: the default stays, uploads only store slower
        log.warning("uploads.data keeps PostgreSQL's default compression (%s)", exc.orig)


def upgrade():
    _compression("lz4")


def downgrade():
    _compression("default")
