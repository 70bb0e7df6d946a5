"""jsonb documents on PostgreSQL, a partial due-work index, keyset indexes for discrepancies

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

# Every column holding a document; SQLite keeps JSON as text, so only PostgreSQL changes type.
DOCUMENTS = (
    ('subscriptions', 'clock'),
    ('subscription_events', 'detail'),
    ('purchases', 'clock'),
    ('outbox', 'payload'),
    ('reconciliation_runs', 'filters'),
    ('reconciliation_runs', 'checkpoint'),
)
PENDING = sa.text("status = 'pending'")


def _retype(kind: str) -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    for table, column in DOCUMENTS:
        op.execute(f'ALTER TABLE {table} ALTER COLUMN {column} TYPE {kind} USING {column}::{kind}')


def upgrade() -> None:
    _retype('jsonb')
    op.drop_index('ix_inbox_due', table_name='inbox')
    op.create_index('ix_inbox_due', 'inbox', ['next_attempt_at', 'id'], unique=False,
                    postgresql_where=PENDING, sqlite_where=PENDING)
    op.drop_index('ix_discrepancies_run_id', table_name='discrepancies')
    op.create_index('ix_discrepancies_run', 'discrepancies', ['run_id', 'id'], unique=False)
    op.create_index('ix_discrepancies_run_kind', 'discrepancies', ['run_id', 'kind', 'id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_discrepancies_run_kind', table_name='discrepancies')
    op.drop_index('ix_discrepancies_run', table_name='discrepancies')
    op.create_index('ix_discrepancies_run_id', 'discrepancies', ['run_id'], unique=False)
    op.drop_index('ix_inbox_due', table_name='inbox')
    op.create_index('ix_inbox_due', 'inbox', ['status', 'next_attempt_at'], unique=False)
    _retype('json')
