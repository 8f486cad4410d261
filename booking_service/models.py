"""Database models. The invariants live here, as table constraints, not in Python."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from booking_service.usernames import MAX_KEY_LENGTH


class Base(DeclarativeBase):
    # Fetch server-set columns (updated_at's onupdate) during the flush: services return
    # objects after their session closes, and an expired column there cannot be loaded.
    __mapper_args__ = {"eager_defaults": True}


class Role(enum.StrEnum):
    ORGANIZER = "organizer"
    CUSTOMER = "customer"
    ADMIN = "admin"


class BookingStatus(enum.StrEnum):
    ACTIVE = "active"
    CANCELLED = "cancelled"


def _created_at() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


def _updated_at() -> Mapped[datetime]:
    return mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now(), onupdate=func.now()
    )


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('organizer', 'customer', 'admin')", name="role_known"),
        CheckConstraint(
            "role <> 'organizer' OR organization_name IS NOT NULL",
            name="organizer_has_organization",
        ),
        # One account per normalized name (booking_service.usernames): "Alice", "alice " and
        # fullwidth "alice" are one.
        Index("uq_users_username_key", "username_key", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    username: Mapped[str] = mapped_column(String(150), nullable=False)  # as shown
    # usernames.username_key(username): what sign-in looks up and uniqueness is decided on.
    username_key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), nullable=False)
    email: Mapped[str] = mapped_column(String(254), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(256), nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    first_name: Mapped[str] = mapped_column(String(150), nullable=False, server_default="")
    last_name: Mapped[str] = mapped_column(String(150), nullable=False, server_default="")
    organization_name: Mapped[str | None] = mapped_column(String(200))
    business_address: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    def __repr__(self) -> str:
        return f"<User {self.id} {self.username} ({self.role})>"


class ApiToken(Base):
    __tablename__ = "api_tokens"
    __table_args__ = (
        # What flask purge-tokens looks for, batch by batch.
        Index("ix_api_tokens_expires_at", "expires_at"),
        Index(
            "ix_api_tokens_revoked_at",
            "revoked_at",
            postgresql_where=text("revoked_at IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # SHA-256 of the token: a database leak does not leak usable tokens.
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = _created_at()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship(lazy="joined")


class LoginDevice(Base):
    """A device that signed in: its token moves its logins off the per-username limit.

    The device-token scheme against lockout (OWASP, "Slow brute force attacks, lockout of a
    user"): attempts with a live device token of the account are counted per device token,
    so an attacker without one cannot lock the owner's known devices out.
    """

    __tablename__ = "login_devices"
    __table_args__ = (Index("ix_login_devices_last_used_at", "last_used_at"),)  # the purge

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # SHA-256 of the device token, as for bearer tokens: a database leak leaks no token.
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[datetime] = _created_at()
    last_used_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint("capacity >= 1", name="capacity_positive"),
        CheckConstraint("booked_count BETWEEN 0 AND capacity", name="booked_within_capacity"),
        CheckConstraint("end_time > start_time", name="ends_after_start"),
        Index("ix_events_start_time", "start_time", "id"),
        Index("ix_events_end_time", "end_time"),
        Index("ix_events_organizer_start", "organizer_id", "start_time"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organizer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    title: Mapped[str] = mapped_column(String(200), nullable=False)
    description: Mapped[str] = mapped_column(Text, nullable=False, server_default="")
    start_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    end_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    capacity: Mapped[int] = mapped_column(Integer, nullable=False)
    # Maintained in the same transaction as every booking state change; the CHECK above
    # makes overbooking impossible even if two requests believe they hold the lock.
    booked_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    @property
    def available_slots(self) -> int:
        return self.capacity - self.booked_count

    @property
    def is_full(self) -> bool:
        return self.booked_count >= self.capacity

    def is_past_at(self, now: datetime) -> bool:
        return self.end_time <= now

    def is_ongoing_at(self, now: datetime) -> bool:
        return self.start_time <= now < self.end_time

    def has_started_at(self, now: datetime) -> bool:
        return self.start_time <= now

    def takes_bookings_at(self, now: datetime) -> bool:
        """Not started and not full: a booking may get a seat (the seat statement decides)."""
        return not self.has_started_at(now) and not self.is_full

    def __repr__(self) -> str:
        return f"<Event {self.id} {self.title!r} {self.booked_count}/{self.capacity}>"


# Its name is how the services tell "already booked" from other integrity errors.
ONE_ACTIVE_BOOKING_INDEX = "uq_bookings_active_event_customer"


class Booking(Base):
    __tablename__ = "bookings"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'cancelled')", name="status_known"),
        # At most one active booking per customer and event; cancelled ones may pile up.
        Index(
            ONE_ACTIVE_BOOKING_INDEX,
            "event_id",
            "customer_id",
            unique=True,
            postgresql_where=text("status = 'active'"),
        ),
        Index("ix_bookings_customer_created", "customer_id", "created_at", "id"),
        Index("ix_bookings_event_created", "event_id", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[int] = mapped_column(
        ForeignKey("events.id", ondelete="CASCADE"), nullable=False
    )
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    event: Mapped[Event] = relationship(lazy="raise")

    def __repr__(self) -> str:
        return (
            f"<Booking {self.id} event={self.event_id} customer={self.customer_id} {self.status}>"
        )


class HistoryEntry(Base):
    __tablename__ = "history_entries"
    __table_args__ = (Index("ix_history_user_created", "user_id", "created_at", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    entity_type: Mapped[str] = mapped_column(String(32), nullable=False)
    # No foreign key: the entry must outlive the event or booking it describes.
    entity_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    details: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'::jsonb")
    )
    created_at: Mapped[datetime] = _created_at()

    def __repr__(self) -> str:
        return f"<HistoryEntry {self.id} {self.action} {self.entity_type}:{self.entity_id}>"


class IdempotencyRecord(Base):
    """An Idempotency-Key claim and, once the request finished, the answer to replay."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (
        CheckConstraint("state IN ('in_progress', 'completed')", name="idempotency_state_known"),
        CheckConstraint(
            "state <> 'completed' OR response_status IS NOT NULL",
            name="idempotency_completed_has_response",
        ),
        Index("ix_idempotency_keys_expires_at", "expires_at"),
    )

    # Keys are scoped to the user: two users may pick the same key independently.
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA-256 of method, path and canonical JSON body: the same key with another request is 422.
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False)
    # Fences completion and release: a claim taken over after its lease ran out cannot be
    # completed or released by the request that abandoned it.
    claim_token: Mapped[str] = mapped_column(String(32), nullable=False)
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[str | None] = mapped_column(Text)
    response_headers: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _created_at()
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
