"""Indexes for the dashboard's pages on a large mirror: the sites' health, failures by cause, queued deliveries

Revision ID: d3b8e5a1c7f2
Revises: d4c8a1e7b2f9
Create Date: 2026-12-01 11:00:00.000000

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = 'd3b8e5a1c7f2'
down_revision = 'd4c8a1e7b2f9'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('rentals', schema=None) as batch_op:
        batch_op.create_index('ix_rentals_site_health', ['site_id', 'sync_state', 'state', 'overlocked', 'pti_synced'],
                              unique=False)
    with op.batch_alter_table('pti_accounts', schema=None) as batch_op:
        batch_op.create_index('ix_pti_accounts_state_error', ['state', 'last_error'], unique=False)
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_deliveries_status_received', ['status', 'received_at'], unique=False)


def downgrade():
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_deliveries_status_received')
    with op.batch_alter_table('pti_accounts', schema=None) as batch_op:
        batch_op.drop_index('ix_pti_accounts_state_error')
    with op.batch_alter_table('rentals', schema=None) as batch_op:
        batch_op.drop_index('ix_rentals_site_health')
