"""webhook deliveries: a partial index of the pending ones, in order per endpoint

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index('ix_webhook_deliveries_pending', 'webhook_deliveries',
                    ['endpoint_id', 'position'], unique=False,
                    postgresql_where=PENDING, sqlite_where=PENDING)


def downgrade() -> None:
    op.drop_index('ix_webhook_deliveries_pending', table_name='webhook_deliveries')
