"""Domain exceptions carrying their HTTP mapping (status, stable ``code``, title).

Rendered as RFC 9457 ``application/problem+json`` by ``booking_service.web.problems``; nothing
here knows about HTTP frameworks, so the services raise these freely.
"""

from __future__ import annotations

from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"


class DomainError(Exception):
    """Base for every expected failure; subclasses set status, code and title."""

    status: int = 400
    code: str = "bad_request"
    title: str = "Bad request"
    retry_after: bool = False

    def __init__(
        self, detail: str | None = None, *, errors: dict[str, Any] | None = None, **extensions: Any
    ):
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.errors = errors
        # RFC 9457 extension members: more facts for the client, e.g. available_slots.
        self.extensions = extensions

    def retry_after_seconds(self, configured: int) -> int | None:
        """The ``Retry-After`` this answer carries, if any (``configured``: RETRY_AFTER_SECONDS)."""
        return configured if self.retry_after else None


class ValidationFailed(DomainError):
    status, code, title = 422, "validation_error", "The request is not valid"


class UnsupportedMediaType(DomainError):
    status, code, title = 415, "unsupported_media_type", "The request body must be JSON"


class Unauthorized(DomainError):
    status, code, title = 401, "unauthorized", "Authentication required"


class InvalidCredentials(DomainError):
    status, code, title = 401, "invalid_credentials", "Username or password is wrong"


class Forbidden(DomainError):
    status, code, title = 403, "forbidden", "Not allowed"


class UsernameTaken(DomainError):
    status, code, title = 409, "username_taken", "That username is already registered"


class EventNotFound(DomainError):
    status, code, title = 404, "event_not_found", "No such event"


class BookingNotFound(DomainError):
    status, code, title = 404, "booking_not_found", "No such booking"


class HistoryEntryNotFound(DomainError):
    status, code, title = 404, "history_entry_not_found", "No such history entry"


class EventFull(DomainError):
    """Carries ``available_slots``: the seats a newcomer could take now (0 while anyone waits
    on the waitlist, whose turn freed seats are)."""

    status, code, title = 409, "event_full", "The event does not have the seats asked for"


class TooManySeats(DomainError):
    status, code, title = 422, "too_many_seats", "More seats than one booking may have"


class HoldLimitReached(DomainError):
    status, code, title = 409, "hold_limit_reached", "You hold as many seats as one customer may"


class HoldNotFound(DomainError):
    status, code, title = 404, "hold_not_found", "No such hold"


class HoldExpired(DomainError):
    status, code, title = 409, "hold_expired", "The hold has expired; its seats went back"


class HoldNotHeld(DomainError):
    status, code, title = 409, "hold_not_held", "The hold was already confirmed or released"


class HoldExists(DomainError):
    status, code, title = 409, "hold_exists", "You already hold seats on this event"


class WaitlistEntryNotFound(DomainError):
    status, code, title = 404, "waitlist_entry_not_found", "No such waitlist entry"


class SeatsAvailable(DomainError):
    status, code, title = 409, "seats_available", "Seats are free: book or hold them instead"


class AlreadyWaiting(DomainError):
    status, code, title = 409, "already_waiting", "You are already on this event's waitlist"


class AlreadyBooked(DomainError):
    status, code, title = 409, "already_booked", "You already hold an active booking here"


class EventStarted(DomainError):
    status, code, title = 422, "event_started", "The event has already started"


class EventEnded(DomainError):
    status, code, title = 422, "event_ended", "The event has already ended"


class NotActive(DomainError):
    status, code, title = 409, "not_active", "The booking is not active"


class AlreadyActive(DomainError):
    status, code, title = 409, "already_active", "The booking is already active"


class CapacityBelowBookings(DomainError):
    status, code, title = 409, "capacity_below_bookings", "Capacity below seats already booked"


class WebhookNotFound(DomainError):
    status, code, title = 404, "webhook_not_found", "No such webhook endpoint"


class WebhookDeliveryNotFound(DomainError):
    status, code, title = 404, "webhook_delivery_not_found", "No such webhook delivery"


class WebhookTargetRefused(DomainError):
    status, code, title = (
        422,
        "webhook_target_refused",
        "Webhooks are not sent to this URL (https only; no private, loopback or link-local "
        "addresses)",
    )


class RateLimited(DomainError):
    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, detail: str, *, seconds: int):
        super().__init__(detail)
        self.seconds = seconds

    def retry_after_seconds(self, configured: int) -> int | None:
        return self.seconds  # until the exceeded window resets


class LockTimeout(DomainError):
    status, code, title = 503, "lock_timeout", "The event is busy; try again shortly"
    retry_after = True


class LockUnavailable(DomainError):
    status, code, title = 503, "lock_unavailable", "The lock service is unreachable"
    retry_after = True


class SessionStoreUnavailable(DomainError):
    status, code, title = 503, "session_store_unavailable", "The session store is unreachable"
    retry_after = True


class DbUnavailable(DomainError):
    status, code, title = 503, "db_unavailable", "The database is unreachable"
    retry_after = True


class OutcomeUnknown(DomainError):
    status, code, title = (
        503,
        "outcome_unknown",
        "The database connection was lost while committing; the change may have been made",
    )
    retry_after = True


class InvalidIdempotencyKey(DomainError):
    status, code, title = 400, "invalid_idempotency_key", "The Idempotency-Key header is malformed"


class IdempotencyKeyMismatch(DomainError):
    status, code, title = (
        422,
        "idempotency_key_mismatch",
        "This Idempotency-Key was used for a different request",
    )


class IdempotencyInProgress(DomainError):
    status, code, title = (
        409,
        "idempotency_in_progress",
        "A request with this Idempotency-Key is still being processed",
    )
    retry_after = True


# The 503s any seat change can answer: the event's lock busy or unreachable, or the database
# unreachable (all three: nothing was written), or the connection lost at commit (the change
# may or may not have been made).
SEAT_CHANGE_UNAVAILABLE: tuple[type[DomainError], ...] = (
    LockTimeout,
    LockUnavailable,
    DbUnavailable,
    OutcomeUnknown,
)


class SaleNotStarted(DomainError):
    """Carries ``sale_starts_at``: holds and bookings open then (by Redis' clock)."""

    status, code, title = 409, "sale_not_started", "The sale has not started yet"


class QueueRequired(DomainError):
    """Carries ``queue``: where to join the event's waiting room, and the entry's ``state``
    when the customer has one (waiting, lapsed, sold_out)."""

    status, code, title = 409, "queue_required", "An admission from the waiting room is needed"


class NoWaitingRoom(DomainError):
    status, code, title = 409, "no_waiting_room", "This event has no waiting room"


class QueueEntryNotFound(DomainError):
    status, code, title = 404, "queue_entry_not_found", "You are not in this event's queue"
