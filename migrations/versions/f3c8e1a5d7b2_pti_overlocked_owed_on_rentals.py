"""A rental's pti_overlocked still owed to Storeganise (rentals.overlock_owed_at)

A flip of the overdue flag, or a suspend by staff or by a file, is owed to Storeganise from the change's own
transaction until Storeganise accepted it: a worker killed before its PUT leaves it to the relay, and a copy of the
rental read meanwhile is not taken for a person's (un)suspend. Empty when this runs: nothing is known to be owed.

Revision ID: f3c8e1a5d7b2
Revises: e2b9c7d4a6f1
Create Date: 2026-12-07 08:00:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'f3c8e1a5d7b2'
down_revision = 'e2b9c7d4a6f1'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('rentals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('overlock_owed_at', sa.DateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_rentals_overlock_owed_at'), ['overlock_owed_at'], unique=False)


def downgrade():
    with op.batch_alter_table('rentals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rentals_overlock_owed_at'))
        batch_op.drop_column('overlock_owed_at')
