"""Sale flows: several seats per booking, holds that expire, a waitlist

Revision ID: 0006
Revises: 0005

A booking takes `seats` (existing bookings take 1, so every counter stays right). Holds count
against capacity as soon as they are made: `events.held_count` is kept in the same transaction
as the hold rows, and one CHECK covers both counters: booked_count + held_count <= capacity.
Waitlist entries wait in order of joining; `events.waitlist_length` counts those waiting.

Downgrading drops holds and the waitlist; it stops (and says why) while a booking holds more
than one seat, a hold is live or anyone waits, since the old schema can count none of them.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

from booking_service.migrate import MigrationRefused

# revision identifiers, used by Alembic.
revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('events', sa.Column('held_count', sa.Integer(), server_default='0', nullable=False))
    op.add_column('events', sa.Column('waitlist_length', sa.Integer(), server_default='0', nullable=False))
    op.add_column('events', sa.Column('max_seats_per_booking', sa.Integer(), server_default='10', nullable=False))
    op.add_column('events', sa.Column('hold_ttl_seconds', sa.Integer(), nullable=True))
    op.drop_constraint('booked_within_capacity', 'events', type_='check')
    op.create_check_constraint(
        'seats_within_capacity', 'events',
        'booked_count >= 0 AND held_count >= 0 AND booked_count + held_count <= capacity',
    )
    op.create_check_constraint('waitlist_length_not_negative', 'events', 'waitlist_length >= 0')
    op.create_check_constraint('max_seats_positive', 'events', 'max_seats_per_booking >= 1')
    op.create_check_constraint(
        'hold_ttl_positive', 'events', 'hold_ttl_seconds IS NULL OR hold_ttl_seconds >= 1'
    )

    op.add_column('bookings', sa.Column('seats', sa.Integer(), server_default='1', nullable=False))
    op.create_check_constraint('booking_seats_positive', 'bookings', 'seats >= 1')

    op.create_table('waitlist_entries',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('customer_id', sa.BigInteger(), nullable=False),
    sa.Column('seats', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('passed_over', sa.Integer(), server_default='0', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('waiting', 'offered', 'converted', 'left', 'expired')", name='waitlist_status_known'),
    sa.CheckConstraint('seats >= 1', name='waitlist_seats_positive'),
    sa.ForeignKeyConstraint(['customer_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('uq_waitlist_live_event_customer', 'waitlist_entries', ['event_id', 'customer_id'], unique=True, postgresql_where=sa.text("status IN ('waiting', 'offered')"))
    op.create_index('ix_waitlist_event_waiting', 'waitlist_entries', ['event_id', 'id'], unique=False, postgresql_where=sa.text("status IN ('waiting', 'offered')"))
    op.create_index('ix_waitlist_customer_created', 'waitlist_entries', ['customer_id', 'created_at', 'id'], unique=False)

    op.create_table('holds',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('customer_id', sa.BigInteger(), nullable=False),
    sa.Column('seats', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('booking_id', sa.BigInteger(), nullable=True),
    sa.Column('waitlist_entry_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('held', 'confirmed', 'released', 'expired')", name='hold_status_known'),
    sa.CheckConstraint('seats >= 1', name='hold_seats_positive'),
    sa.ForeignKeyConstraint(['booking_id'], ['bookings.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['customer_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['event_id'], ['events.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['waitlist_entry_id'], ['waitlist_entries.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('uq_holds_live_event_customer', 'holds', ['event_id', 'customer_id'], unique=True, postgresql_where=sa.text("status = 'held'"))
    op.create_index('ix_holds_live_expiry', 'holds', ['expires_at'], unique=False, postgresql_where=sa.text("status = 'held'"))
    op.create_index('ix_holds_event_live_expiry', 'holds', ['event_id', 'expires_at'], unique=False, postgresql_where=sa.text("status = 'held'"))
    op.create_index('ix_holds_customer_created', 'holds', ['customer_id', 'created_at', 'id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    connection = op.get_bind()
    several = connection.scalar(sa.text("SELECT count(*) FROM bookings WHERE seats > 1"))
    live = connection.scalar(sa.text("SELECT count(*) FROM holds WHERE status = 'held'"))
    waiting = connection.scalar(
        sa.text("SELECT count(*) FROM waitlist_entries WHERE status IN ('waiting', 'offered')")
    )
    if several or live or waiting:
        raise MigrationRefused(
            f"Cannot go below 0006: {several} booking(s) hold several seats, {live} hold(s) "
            f"are live and {waiting} customer(s) wait on a waitlist; the older schema counts "
            "one seat per booking and knows no holds or waitlists. Release the holds, empty "
            "the waitlists and cancel or reduce those bookings to one seat first."
        )
    op.drop_index('ix_holds_customer_created', table_name='holds')
    op.drop_index('ix_holds_event_live_expiry', table_name='holds', postgresql_where=sa.text("status = 'held'"))
    op.drop_index('ix_holds_live_expiry', table_name='holds', postgresql_where=sa.text("status = 'held'"))
    op.drop_index('uq_holds_live_event_customer', table_name='holds', postgresql_where=sa.text("status = 'held'"))
    op.drop_table('holds')
    op.drop_index('ix_waitlist_customer_created', table_name='waitlist_entries')
    op.drop_index('ix_waitlist_event_waiting', table_name='waitlist_entries', postgresql_where=sa.text("status IN ('waiting', 'offered')"))
    op.drop_index('uq_waitlist_live_event_customer', table_name='waitlist_entries', postgresql_where=sa.text("status IN ('waiting', 'offered')"))
    op.drop_table('waitlist_entries')
    op.drop_constraint('booking_seats_positive', 'bookings', type_='check')
    op.drop_column('bookings', 'seats')
    op.drop_constraint('hold_ttl_positive', 'events', type_='check')
    op.drop_constraint('max_seats_positive', 'events', type_='check')
    op.drop_constraint('waitlist_length_not_negative', 'events', type_='check')
    op.drop_constraint('seats_within_capacity', 'events', type_='check')
    op.create_check_constraint('booked_within_capacity', 'events', 'booked_count BETWEEN 0 AND capacity')
    op.drop_column('events', 'hold_ttl_seconds')
    op.drop_column('events', 'max_seats_per_booking')
    op.drop_column('events', 'waitlist_length')
    op.drop_column('events', 'held_count')
