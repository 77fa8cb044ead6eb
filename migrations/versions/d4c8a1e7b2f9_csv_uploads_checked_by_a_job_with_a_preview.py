"""CSV uploads checked by a job, with a preview to confirm: the file, the check's progress, each row's planned action

Revision ID: d4c8a1e7b2f9
Revises: a9c4e7f2b3d1
Create Date: 2026-12-02 09:00:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'd4c8a1e7b2f9'
down_revision = 'a9c4e7f2b3d1'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        batch_op.add_column(sa.Column('data', sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column('checked', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('attempt', sa.Integer(), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('progress_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('problem', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('preview', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('confirmed_by', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('confirmed_at', sa.DateTime(), nullable=True))
    with op.batch_alter_table('upload_rows', schema=None) as batch_op:
        batch_op.add_column(sa.Column('action', sa.String(length=16), nullable=True))
        batch_op.create_index('ix_upload_rows_upload_rental', ['upload_id', 'rental_id'], unique=False)


def downgrade():
    with op.batch_alter_table('upload_rows', schema=None) as batch_op:
        batch_op.drop_index('ix_upload_rows_upload_rental')
        batch_op.drop_column('action')
    with op.batch_alter_table('uploads', schema=None) as batch_op:
        for name in ('confirmed_at', 'confirmed_by', 'preview', 'problem', 'progress_at', 'attempt', 'checked',
                     'data'):
            batch_op.drop_column(name)
