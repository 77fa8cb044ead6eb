"""The Trends rollup (per site and hour or day) and each push's event-to-gate time in the journal

Revision ID: a9c4e2f7b1d3
Revises: f7a2d9c4e1b6
Create Date: 2026-12-02 05:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a9c4e2f7b1d3'
down_revision = 'f7a2d9c4e1b6'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('sync_trends',
    sa.Column('site_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('span', sa.String(length=8), nullable=False),
    sa.Column('start', sa.DateTime(), nullable=False),
    sa.Column('ok', sa.Integer(), nullable=False),
    sa.Column('noop', sa.Integer(), nullable=False),
    sa.Column('retried', sa.Integer(), nullable=False),
    sa.Column('failed', sa.Integer(), nullable=False),
    sa.Column('gate_counts', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('site_id', 'span', 'start')
    )
    with op.batch_alter_table('sync_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gate_ms', sa.BigInteger(), nullable=True))


def downgrade():
    with op.batch_alter_table('sync_attempts', schema=None) as batch_op:
        batch_op.drop_column('gate_ms')
    op.drop_table('sync_trends')
