"""Problems register (replaces reported_problems), switched-off units, PTI's lists per site, product settings

Standing problems are found again and re-reported by the next push of their account; units start switched on.

Revision ID: bd347812c814
Revises: 85057e96c5f6
Create Date: 2026-11-30 11:54:48.069490

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'bd347812c814'
down_revision = '85057e96c5f6'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('product_settings',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('problems',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cause', sa.String(length=200), nullable=False),
    sa.Column('reason', sa.String(length=64), nullable=False),
    sa.Column('entity', sa.String(length=16), nullable=False),
    sa.Column('record_sg_id', sa.String(length=64), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=True),
    sa.Column('account_id', sa.Integer(), nullable=True),
    sa.Column('target_type', sa.String(length=16), nullable=False),
    sa.Column('target_id', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('opened_at', sa.DateTime(), nullable=False),
    sa.Column('reported_at', sa.DateTime(), nullable=True),
    sa.Column('sg_task_id', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['pti_accounts.id'], ),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('cause')
    )
    with op.batch_alter_table('problems', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_problems_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_problems_record_sg_id'), ['record_sg_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_problems_reported_at'), ['reported_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_problems_site_id'), ['site_id'], unique=False)

    with op.batch_alter_table('reported_problems', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reported_problems_account_id'))

    op.drop_table('reported_problems')
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pti_access_levels', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('pti_time_zones', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('pti_lists_read_at', sa.DateTime(), nullable=True))

    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pti_switched_off', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))



def downgrade():
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.drop_column('pti_switched_off')

    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.drop_column('pti_lists_read_at')
        batch_op.drop_column('pti_time_zones')
        batch_op.drop_column('pti_access_levels')

    op.create_table('reported_problems',
    sa.Column('id', sa.INTEGER(), nullable=False),
    sa.Column('cause', sa.VARCHAR(length=200), nullable=False),
    sa.Column('account_id', sa.INTEGER(), nullable=True),
    sa.Column('reason', sa.VARCHAR(length=64), nullable=False),
    sa.Column('sg_task_id', sa.VARCHAR(length=64), nullable=True),
    sa.Column('reported_at', sa.DATETIME(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['pti_accounts.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('cause')
    )
    with op.batch_alter_table('reported_problems', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reported_problems_account_id'), ['account_id'], unique=False)

    with op.batch_alter_table('problems', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_problems_site_id'))
        batch_op.drop_index(batch_op.f('ix_problems_reported_at'))
        batch_op.drop_index(batch_op.f('ix_problems_record_sg_id'))
        batch_op.drop_index(batch_op.f('ix_problems_account_id'))

    op.drop_table('problems')
    op.drop_table('product_settings')
