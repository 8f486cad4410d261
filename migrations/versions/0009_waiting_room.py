"""Waiting room: an event's sale start, queue switch, admission rate and admission length

Revision ID: 0009
Revises: 0008

`sale_starts_at` (null: on sale at once) refuses holds and bookings before it; `waiting_room`
makes holding and booking need an admission from the event's queue (kept in Redis), paced at
`admit_per_minute` (null: automatic, by what the event's lock serves) and valid for
`admission_minutes`. Existing events keep selling as before (no sale start, no queue).
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('events', sa.Column('sale_starts_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        'events',
        sa.Column('waiting_room', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    )
    op.add_column('events', sa.Column('admit_per_minute', sa.Integer(), nullable=True))
    op.add_column(
        'events',
        sa.Column('admission_minutes', sa.Integer(), server_default='10', nullable=False),
    )
    op.create_check_constraint(
        'admit_rate_positive', 'events', 'admit_per_minute IS NULL OR admit_per_minute >= 1'
    )
    op.create_check_constraint('admission_minutes_positive', 'events', 'admission_minutes >= 1')


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_constraint('admission_minutes_positive', 'events', type_='check')
    op.drop_constraint('admit_rate_positive', 'events', type_='check')
    op.drop_column('events', 'admission_minutes')
    op.drop_column('events', 'admit_per_minute')
    op.drop_column('events', 'waiting_room')
    op.drop_column('events', 'sale_starts_at')
