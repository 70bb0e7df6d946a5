"""outbound events: events, counters, entitlement marks, webhook endpoints and deliveries

Revision ID: 0005
Revises: 0001
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Documents are jsonb on PostgreSQL, like every other document column (0002).
DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('entitlement_marks',
    sa.Column('account_id', sa.String(length=128), nullable=False),
    sa.Column('entitlement', sa.String(length=128), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('grant', DOCUMENT, nullable=False),
    sa.PrimaryKeyConstraint('account_id', 'entitlement')
    )
    with op.batch_alter_table('entitlement_marks', schema=None) as batch_op:
        batch_op.create_index('ix_entitlement_marks_due', ['due_at'], unique=False)

    op.create_table('event_counters',
    sa.Column('name', sa.String(length=160), nullable=False),
    sa.Column('value', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('events',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('position', sa.BigInteger(), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=True),
    sa.Column('sequence', sa.BigInteger(), nullable=True),
    sa.Column('subscription_id', sa.String(length=40), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('data', DOCUMENT, nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('position', name='uq_events_position')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_account_position', ['account_id', 'position'], unique=False)
        batch_op.create_index('ix_events_subscription', ['subscription_id'], unique=False)
        batch_op.create_index('ix_events_type_position', ['type', 'position'], unique=False)

    op.create_table('webhook_deliveries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('endpoint_id', sa.String(length=40), nullable=False),
    sa.Column('event_id', sa.String(length=40), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.String(length=128), nullable=True),
    sa.Column('position', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('endpoint_id', 'event_id', name='uq_webhook_deliveries_event')
    )
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_deliveries_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_webhook_deliveries_list', ['endpoint_id', 'position'], unique=False)
        batch_op.create_index('ix_webhook_deliveries_order', ['endpoint_id', 'account_id', 'status', 'position'], unique=False)

    op.create_table('webhook_endpoints',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('event_types', DOCUMENT, nullable=True),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('secret', sa.String(length=128), nullable=False),
    sa.Column('previous_secret', sa.String(length=128), nullable=True),
    sa.Column('previous_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('disabled_reason', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('webhook_endpoints')
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_deliveries_order')
        batch_op.drop_index('ix_webhook_deliveries_list')
        batch_op.drop_index('ix_webhook_deliveries_due')

    op.drop_table('webhook_deliveries')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_type_position')
        batch_op.drop_index('ix_events_subscription')
        batch_op.drop_index('ix_events_account_position')

    op.drop_table('events')
    op.drop_table('event_counters')
    with op.batch_alter_table('entitlement_marks', schema=None) as batch_op:
        batch_op.drop_index('ix_entitlement_marks_due')

    op.drop_table('entitlement_marks')
