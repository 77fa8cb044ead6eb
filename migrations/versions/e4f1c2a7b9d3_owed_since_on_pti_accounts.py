"""When each account's oldest change still owed to PTI was marked: how far sync is behind

Revision ID: e4f1c2a7b9d3
Revises: 8767fd5eb4ef
Create Date: 2026-12-01 01:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e4f1c2a7b9d3'
down_revision = '8767fd5eb4ef'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('pti_accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('owed_since', sa.DateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_pti_accounts_owed_since'), ['owed_since'], unique=False)
    # Accounts owed a push when this runs: owed since now, as far as anyone can tell.
    op.execute("UPDATE pti_accounts SET owed_since = CURRENT_TIMESTAMP WHERE generation > synced_generation")


def downgrade():
    with op.batch_alter_table('pti_accounts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pti_accounts_owed_since'))
        batch_op.drop_column('owed_since')
