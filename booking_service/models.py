"""Database models. The invariants live here, as table constraints, not in Python."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    case,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    aliased,
    column_property,
    mapped_column,
    relationship,
)

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


class HoldStatus(enum.StrEnum):
    HELD = "held"
    CONFIRMED = "confirmed"
    RELEASED = "released"
    EXPIRED = "expired"


class WaitlistStatus(enum.StrEnum):
    WAITING = "waiting"
    OFFERED = "offered"
    CONVERTED = "converted"
    LEFT = "left"
    EXPIRED = "expired"


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
        # One account per look (usernames.username_skeleton): "carol", and "carol" with U+0430.
        Index("uq_users_username_skeleton", "username_skeleton", unique=True),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    username: Mapped[str] = mapped_column(String(150), nullable=False)  # as shown
    # usernames.username_key(username): what sign-in looks up and uniqueness is decided on.
    username_key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), nullable=False)
    # usernames.username_skeleton(username). NULL only for an account registered before
    # look-alikes were refused that looks like an older one, which holds the skeleton
    # (migration 0008); every new account has one.
    username_skeleton: Mapped[str | None] = mapped_column(String(MAX_KEY_LENGTH))
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
        # Held seats count against capacity as soon as they are held.
        CheckConstraint(
            "booked_count >= 0 AND held_count >= 0 AND booked_count + held_count <= capacity",
            name="seats_within_capacity",
        ),
        CheckConstraint("waitlist_length >= 0", name="waitlist_length_not_negative"),
        CheckConstraint("max_seats_per_booking >= 1", name="max_seats_positive"),
        CheckConstraint(
            "hold_ttl_seconds IS NULL OR hold_ttl_seconds >= 1", name="hold_ttl_positive"
        ),
        CheckConstraint("end_time > start_time", name="ends_after_start"),
        CheckConstraint(
            "admit_per_minute IS NULL OR admit_per_minute >= 1", name="admit_rate_positive"
        ),
        CheckConstraint("admission_minutes >= 1", name="admission_minutes_positive"),
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
    # Seats of active bookings, and of live holds: maintained in the same transaction as every
    # booking or hold change; the CHECK above makes overbooking impossible even if two requests
    # believe they hold the lock.
    booked_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    held_count: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    # Waitlist entries waiting for an offer (not those holding one).
    waitlist_length: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    max_seats_per_booking: Mapped[int] = mapped_column(Integer, nullable=False, server_default="10")
    # How long a hold lasts on this event; None: HOLD_TTL_SECONDS.
    hold_ttl_seconds: Mapped[int | None] = mapped_column(Integer)
    # The waiting room (services/waitroom.py): before sale_starts_at holds and bookings are
    # refused; while waiting_room is on, holding or booking needs an admission from the queue,
    # paced at admit_per_minute (None: by what the event's lock serves) and valid for
    # admission_minutes.
    sale_starts_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    waiting_room: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=text("false")
    )
    admit_per_minute: Mapped[int | None] = mapped_column(Integer)
    admission_minutes: Mapped[int] = mapped_column(Integer, nullable=False, server_default="10")
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    @property
    def seats_held(self) -> int:
        """Seats in holds still live now (held_count less holds past expiry, not yet swept)."""
        return self.held_count - (self.lapsed_hold_seats or 0)

    @property
    def available_slots(self) -> int:
        return self.capacity - self.booked_count - self.seats_held

    @property
    def is_full(self) -> bool:
        return self.available_slots <= 0

    def is_past_at(self, now: datetime) -> bool:
        return self.end_time <= now

    def is_ongoing_at(self, now: datetime) -> bool:
        return self.start_time <= now < self.end_time

    def has_started_at(self, now: datetime) -> bool:
        return self.start_time <= now

    def takes_bookings_at(self, now: datetime, seats: int = 1) -> bool:
        """A newcomer's booking of ``seats`` may get them: not started, that many free, and
        nobody waiting (freed seats go to the waitlist first). The seat statement decides."""
        return (
            not self.has_started_at(now)
            and self.available_slots >= seats
            and self.waitlist_length == 0
            and seats <= self.max_seats_per_booking
        )

    def __repr__(self) -> str:
        return f"<Event {self.id} {self.title!r} {self.booked_count}/{self.capacity}>"


# Its name is how the services tell "already booked" from other integrity errors.
ONE_ACTIVE_BOOKING_INDEX = "uq_bookings_active_event_customer"


class Booking(Base):
    __tablename__ = "bookings"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'cancelled')", name="status_known"),
        CheckConstraint("seats >= 1", name="booking_seats_positive"),
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
    seats: Mapped[int] = mapped_column(Integer, nullable=False, server_default="1")
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


class SeatIntent(Base):
    """A seat change the ledger applied, with its outcome (services/ledger.py): how a request
    whose change another instance carried out learns what happened, and why a replayed batch
    changes nothing."""

    __tablename__ = "seat_intents"
    __table_args__ = (Index("ix_seat_intents_created_at", "created_at"),)  # the purge

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # No foreign key: the entry outlives its event.
    event_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    outcome: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = _created_at()


# Their names are how the services tell these conflicts from other integrity errors.
ONE_LIVE_HOLD_INDEX = "uq_holds_live_event_customer"
ONE_LIVE_ENTRY_INDEX = "uq_waitlist_live_event_customer"


class WaitlistEntry(Base):
    """A customer waiting for seats of a sold-out event, served in order of joining."""

    __tablename__ = "waitlist_entries"
    __table_args__ = (
        CheckConstraint(
            "status IN ('waiting', 'offered', 'converted', 'left', 'expired')",
            name="waitlist_status_known",
        ),
        CheckConstraint("seats >= 1", name="waitlist_seats_positive"),
        Index(
            ONE_LIVE_ENTRY_INDEX,
            "event_id",
            "customer_id",
            unique=True,
            postgresql_where=text("status IN ('waiting', 'offered')"),
        ),
        Index(
            "ix_waitlist_event_waiting",
            "event_id",
            "id",
            postgresql_where=text("status IN ('waiting', 'offered')"),
        ),
        Index("ix_waitlist_customer_created", "customer_id", "created_at", "id"),
    )

    # Order of joining is the id's order.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[int] = mapped_column(
        ForeignKey("events.id", ondelete="CASCADE"), nullable=False
    )
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    seats: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    # Offers that went to later, smaller entries while this one did not fit (starvation bound).
    passed_over: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    def __repr__(self) -> str:
        return f"<WaitlistEntry {self.id} event={self.event_id} seats={self.seats} {self.status}>"


class Hold(Base):
    """Seats held for a customer until ``expires_at``: confirmed into a booking, released, or
    expired (by the sweeper, or by whoever next takes the event's lock)."""

    __tablename__ = "holds"
    __table_args__ = (
        CheckConstraint(
            "status IN ('held', 'confirmed', 'released', 'expired')", name="hold_status_known"
        ),
        CheckConstraint("seats >= 1", name="hold_seats_positive"),
        Index(
            ONE_LIVE_HOLD_INDEX,
            "event_id",
            "customer_id",
            unique=True,
            postgresql_where=text("status = 'held'"),
        ),
        # The sweeper's scan, and the lapsed seats of one event.
        Index("ix_holds_live_expiry", "expires_at", postgresql_where=text("status = 'held'")),
        Index(
            "ix_holds_event_live_expiry",
            "event_id",
            "expires_at",
            postgresql_where=text("status = 'held'"),
        ),
        Index("ix_holds_customer_created", "customer_id", "created_at", "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    event_id: Mapped[int] = mapped_column(
        ForeignKey("events.id", ondelete="CASCADE"), nullable=False
    )
    customer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    seats: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # The booking a confirmation went into; the waitlist entry an offer was made for.
    booking_id: Mapped[int | None] = mapped_column(ForeignKey("bookings.id", ondelete="SET NULL"))
    waitlist_entry_id: Mapped[int | None] = mapped_column(
        ForeignKey("waitlist_entries.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    def __repr__(self) -> str:
        return f"<Hold {self.id} event={self.event_id} seats={self.seats} {self.status}>"


# Seats of an event's holds past their expiry that no sweep has released yet: every read of an
# event leaves them out of held_count (Event.seats_held), so that an expired hold's seats show
# as free at once, whenever the sweeper gets to them. One probe of a partial index, usually
# empty.
LAPSED_HOLD_SEATS = (
    select(func.coalesce(func.sum(Hold.seats), 0))
    .where(
        Hold.event_id == Event.id,
        Hold.status == HoldStatus.HELD.value,
        Hold.expires_at <= func.now(),
    )
    .correlate_except(Hold)
    .scalar_subquery()
)
Event.lapsed_hold_seats = column_property(LAPSED_HOLD_SEATS)


# A waiting or offered entry's place in its event's queue (1: next), None once it has ended;
# and the hold of its offer while that is live.
_ahead = aliased(WaitlistEntry)
_LIVE_ENTRY = ("waiting", "offered")
WaitlistEntry.position = column_property(
    case(
        (
            WaitlistEntry.status.in_(_LIVE_ENTRY),
            select(func.count() + 1)
            .where(
                _ahead.event_id == WaitlistEntry.event_id,
                _ahead.status.in_(_LIVE_ENTRY),
                _ahead.id < WaitlistEntry.id,
            )
            .correlate_except(_ahead)
            .scalar_subquery(),
        ),
        else_=None,
    )
)
_offer = select(Hold).where(
    Hold.waitlist_entry_id == WaitlistEntry.id, Hold.status == HoldStatus.HELD.value
)
WaitlistEntry.offer_hold_id = column_property(
    _offer.with_only_columns(Hold.id).correlate_except(Hold).scalar_subquery()
)
WaitlistEntry.offer_expires_at = column_property(
    _offer.with_only_columns(Hold.expires_at).correlate_except(Hold).scalar_subquery()
)


class WebhookEndpoint(Base):
    """An organizer's receiver of webhooks: the event types it wants, for one event or all of
    the organizer's, and the secret its messages are signed with (Standard Webhooks)."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (
        # What the seat ledger's statement looks up once per batch: the enabled endpoints of
        # the event's organizer.
        Index(
            "ix_webhook_endpoints_organizer_enabled",
            "organizer_id",
            postgresql_where=text("enabled"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    organizer_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    url: Mapped[str] = mapped_column(Text, nullable=False)
    event_types: Mapped[list[str]] = mapped_column(ARRAY(Text), nullable=False)
    # None: every event of the organizer. No foreign key: event.deleted still reaches it.
    event_id: Mapped[int | None] = mapped_column(BigInteger)
    # whsec_<base64>: needed in clear to sign; never logged, shown on create and rotate only.
    secret: Mapped[str] = mapped_column(String(64), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    # Why the relay disabled it (a 410 Gone), None when enabled or disabled by its owner.
    disabled_reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = _created_at()
    updated_at: Mapped[datetime] = _updated_at()

    def __repr__(self) -> str:  # no secret, no URL (it may carry credentials)
        return f"<WebhookEndpoint {self.id} organizer={self.organizer_id} enabled={self.enabled}>"


class MessageStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookMessage(Base):
    """The outbox: one message for one endpoint, written in the transaction of the change it
    reports; the relay delivers it (services/relay.py)."""

    __tablename__ = "webhook_messages"
    __table_args__ = (
        CheckConstraint(
            "status IN ('pending', 'delivered', 'failed')", name="webhook_message_status_known"
        ),
        # The relay's scan: the oldest pending message of each endpoint and event.
        Index(
            "ix_webhook_messages_pending",
            "endpoint_id",
            "event_id",
            "id",
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_webhook_messages_created_at", "created_at"),  # the purge
    )

    # Order of the messages of one endpoint and event is the id's order: they are written
    # under the event's row lock.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # No foreign key: its check would lock the endpoint's row (FOR KEY SHARE, a heap write)
    # in every sale's transaction. Deleting an endpoint deletes its messages; the purge
    # removes any written meanwhile (services/webhooks.py).
    endpoint_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    event_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    # The resource as stored at commit; the relay renders it with the API's schema.
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), nullable=False, server_default=func.now()
    )
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = _created_at()

    @property
    def webhook_id(self) -> str:
        """The ``webhook-id`` header: the same on every attempt."""
        return f"msg_{self.id}"


class WebhookDelivery(Base):
    """One attempt to deliver a message: when, what came back, how long it took."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_endpoint", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_attempted_at", "attempted_at"),  # the purge
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    message_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_messages.id", ondelete="CASCADE"), nullable=False, index=True
    )
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), nullable=False
    )
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    # success, http_error, timeout, connection_error, refused_target
    result: Mapped[str] = mapped_column(String(32), nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    # The first 1 KB of the answer, or what went wrong before there was one.
    response_body: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)

    message: Mapped[WebhookMessage] = relationship(lazy="joined")
