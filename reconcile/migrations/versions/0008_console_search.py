"""console search and overview on indexes: payment ids of the history, refund order ids,
lookups by store id and account, partial indexes for waiting and failed work

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")
FAILED = sa.text("status = 'failed'")
WAITING = sa.text("acknowledged_at IS NULL")
# The same values the models' defaults derive for new rows, for the rows already there.
BACKFILL = {
    'sqlite': (
        "UPDATE subscription_events SET payment_id = substr(NULLIF(COALESCE("
        "CAST(json_extract(detail, '$.transaction_id') AS TEXT), "
        "CAST(json_extract(detail, '$.order_id') AS TEXT)), ''), 1, 128) "
        "WHERE instr(detail, 'transaction_id') > 0 OR instr(detail, 'order_id') > 0",
        "UPDATE refunds SET order_id = substr(NULLIF(substr(refund_key, "
        "instr(refund_key, ':') + 1), ''), 1, 128) WHERE instr(refund_key, ':') > 0",
    ),
    'postgresql': (
        "UPDATE subscription_events SET payment_id = left(NULLIF(COALESCE("
        "detail ->> 'transaction_id', detail ->> 'order_id'), ''), 128) "
        "WHERE detail ? 'transaction_id' OR detail ? 'order_id'",
        "UPDATE refunds SET order_id = left(NULLIF(substr(refund_key, "
        "strpos(refund_key, ':') + 1), ''), 128) WHERE strpos(refund_key, ':') > 0",
    ),
}


def upgrade() -> None:
    op.add_column('subscription_events', sa.Column('payment_id', sa.String(length=128),
                                                   nullable=True))
    op.add_column('refunds', sa.Column('order_id', sa.String(length=128), nullable=True))
    for statement in BACKFILL.get(op.get_bind().dialect.name, ()):
        op.execute(statement)
    op.create_index('ix_subscription_events_payment', 'subscription_events', ['payment_id'],
                    unique=False)
    op.create_index('ix_refunds_order_id', 'refunds', ['order_id'], unique=False)
    op.create_index('ix_refunds_store_id', 'refunds', ['store_id'], unique=False)
    op.create_index('ix_refunds_account', 'refunds', ['account_id'], unique=False)
    op.create_index('ix_refunds_refunded_at', 'refunds', ['refunded_at'], unique=False)
    op.create_index('ix_outbox_store_id', 'outbox', ['store_id'], unique=False)
    op.create_index('ix_outbox_account', 'outbox', ['account_id'], unique=False)
    op.create_index('ix_inbox_waiting_age', 'inbox', ['channel', 'received_at'], unique=False,
                    postgresql_where=PENDING, sqlite_where=PENDING)
    op.create_index('ix_inbox_failed', 'inbox', ['id'], unique=False,
                    postgresql_where=FAILED, sqlite_where=FAILED)
    op.create_index('ix_acknowledgements_waiting', 'acknowledgements', ['first_seen_at'],
                    unique=False, postgresql_where=WAITING, sqlite_where=WAITING)
    op.create_index('ix_reconciliation_runs_started', 'reconciliation_runs',
                    ['started_at', 'id'], unique=False)
    op.create_index('ix_webhook_deliveries_event', 'webhook_deliveries', ['event_id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_webhook_deliveries_event', table_name='webhook_deliveries')
    op.drop_index('ix_reconciliation_runs_started', table_name='reconciliation_runs')
    op.drop_index('ix_acknowledgements_waiting', table_name='acknowledgements')
    op.drop_index('ix_inbox_failed', table_name='inbox')
    op.drop_index('ix_inbox_waiting_age', table_name='inbox')
    op.drop_index('ix_outbox_account', table_name='outbox')
    op.drop_index('ix_outbox_store_id', table_name='outbox')
    op.drop_index('ix_refunds_refunded_at', table_name='refunds')
    op.drop_index('ix_refunds_account', table_name='refunds')
    op.drop_index('ix_refunds_store_id', table_name='refunds')
    op.drop_index('ix_refunds_order_id', table_name='refunds')
    op.drop_index('ix_subscription_events_payment', table_name='subscription_events')
    with op.batch_alter_table('refunds') as batch:
        batch.drop_column('order_id')
    with op.batch_alter_table('subscription_events') as batch:
        batch.drop_column('payment_id')
