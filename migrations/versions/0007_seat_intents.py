"""Seat intents: the journal of every seat change the ledger applied, with its outcome

Revision ID: 0007
Revises: 0006

Each seat change (book, hold, confirm, cancel, ...) carries an id, written here with its
outcome in the same transaction as the change. A request whose change was carried out by
another instance reads its outcome here after a crash, and a batch replayed by a holder whose
lease ran out changes nothing (the id is the primary key). No foreign key: the entry outlives
its event. `flask purge-seat-intents` deletes entries older than SEAT_INTENT_RETENTION_HOURS.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('seat_intents',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('outcome', sa.dialects.postgresql.JSONB(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_seat_intents_created_at', 'seat_intents', ['created_at'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('ix_seat_intents_created_at', table_name='seat_intents')
    op.drop_table('seat_intents')
