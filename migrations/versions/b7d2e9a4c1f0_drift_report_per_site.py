"""What each site's last drift sweep found, for its page's drift report

Revision ID: b7d2e9a4c1f0
Revises: e4f1c2a7b9d3
Create Date: 2026-12-01 05:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b7d2e9a4c1f0'
down_revision = 'e4f1c2a7b9d3'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.add_column(sa.Column('drift_report', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.drop_column('drift_report')
