"""credits ledger: entries, balances; refunds know a partial (quantity) refund

Revision ID: 0006
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('credit_balances',
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('balance', sa.BigInteger(), nullable=False),
    sa.Column('granted', sa.BigInteger(), nullable=False),
    sa.Column('used', sa.BigInteger(), nullable=False),
    sa.Column('adjusted', sa.BigInteger(), nullable=False),
    sa.Column('clawed_back', sa.BigInteger(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('account_id')
    )
    op.create_table('credit_entries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('balance_after', sa.BigInteger(), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=True),
    sa.Column('reference', sa.String(length=600), nullable=True),
    sa.Column('idempotency_key', sa.String(length=700), nullable=True),
    sa.Column('source', sa.String(length=600), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('actor', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account_id', 'idempotency_key', name='uq_credit_entries_key')
    )
    with op.batch_alter_table('credit_entries', schema=None) as batch_op:
        batch_op.create_index('ix_credit_entries_account', ['account_id', 'id'], unique=False)
        batch_op.create_index('ix_credit_entries_source', ['source'], unique=False)
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('partial', sa.Boolean(), server_default=sa.false(),
                                      nullable=False))
        batch_op.add_column(sa.Column('quantity', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('refunds', schema=None) as batch_op:
        batch_op.drop_column('quantity')
        batch_op.drop_column('partial')
    with op.batch_alter_table('credit_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_credit_entries_source')
        batch_op.drop_index('ix_credit_entries_account')
    op.drop_table('credit_entries')
    op.drop_table('credit_balances')
