"""Each webhook delivery names the rental it is about and when it was handled: the rental page's journey

Revision ID: c8e3f0b5d2a1
Revises: b7d2e9a4c1f0
Create Date: 2026-12-01 05:10:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c8e3f0b5d2a1'
down_revision = 'b7d2e9a4c1f0'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rental_sg_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('handled_at', sa.DateTime(), nullable=True))
        batch_op.create_index(batch_op.f('ix_webhook_deliveries_rental_sg_id'), ['rental_sg_id'], unique=False)


def downgrade():
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_webhook_deliveries_rental_sg_id'))
        batch_op.drop_column('handled_at')
        batch_op.drop_column('rental_sg_id')
