"""What the last push left in PTI, per account (pti_accounts.pushed)

A lock or unlock owed to a customer whose last push succeeded is planned from what that push left in PTI and costs
one PTI call (the lock), not a read of the user and of every unit first. Empty until each account's next push.

Revision ID: e2b9c7d4a6f1
Revises: c6f1a8d2e4b7
Create Date: 2026-12-02 04:30:00.000000

"""
import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = 'e2b9c7d4a6f1'
down_revision = 'c6f1a8d2e4b7'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('pti_accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pushed', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('pti_accounts', schema=None) as batch_op:
        batch_op.drop_column('pushed')
