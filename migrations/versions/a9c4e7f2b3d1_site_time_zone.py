"""A site's local time zone, for the times its pages show

Revision ID: a9c4e7f2b3d1
Revises: a9c4e2f7b1d3
Create Date: 2026-12-01 11:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a9c4e7f2b3d1'
down_revision = 'a9c4e2f7b1d3'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.add_column(sa.Column('time_zone', sa.String(length=64), nullable=True))


def downgrade():
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.drop_column('time_zone')
