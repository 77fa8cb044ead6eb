"""Foreign PTI users on an account and staff's decision about them (adopt one, or create a separate user)

Revision ID: 8b8acb7db5c2
Revises: bd347812c814
Create Date: 2026-11-30 11:39:38.035464

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '8b8acb7db5c2'
down_revision = 'bd347812c814'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('pti_accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('foreign_pti_users', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('adopt_pti_user_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('separate_from_foreign', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))


def downgrade():
    with op.batch_alter_table('pti_accounts', schema=None) as batch_op:
        batch_op.drop_column('separate_from_foreign')
        batch_op.drop_column('adopt_pti_user_id')
        batch_op.drop_column('foreign_pti_users')
