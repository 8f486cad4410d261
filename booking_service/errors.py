"""Domain exceptions carrying their HTTP mapping, and the one handler that renders them.

Every error leaves the service as RFC 9457 ``application/problem+json`` with a stable ``code``.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, json
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

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

    def retry_after_seconds(self) -> int | None:
        """The ``Retry-After`` this answer carries, if any."""
        return current_app.config["RETRY_AFTER_SECONDS"] if self.retry_after else None


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


class RateLimited(DomainError):
    status, code, title = 429, "rate_limited", "Too many requests"

    def __init__(self, detail: str, *, seconds: int):
        super().__init__(detail)
        self.seconds = seconds

    def retry_after_seconds(self) -> int | None:
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


# Codes for errors raised by Flask/werkzeug/webargs rather than by our services.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
}


def problem_response(
    *,
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: dict[str, Any] | None = None,
    retry_after: int | None = None,
    extensions: dict[str, Any] | None = None,
) -> Response:
    """Build an RFC 9457 problem response; every 503 carries ``Retry-After``."""
    body: dict[str, Any] = {
        "type": f"urn:booking-service:problem:{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
        **(extensions or {}),
    }
    if errors:
        body["errors"] = errors
    response = Response(json.dumps(body), status=status, content_type=PROBLEM_CONTENT_TYPE)
    if retry_after is None and status == 503:
        retry_after = current_app.config["RETRY_AFTER_SECONDS"]
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _flatten_webargs_messages(messages: dict[str, Any]) -> dict[str, Any]:
    """webargs nests messages by location ({"json": {...}}); clients want field → messages."""
    flat: dict[str, Any] = {}
    for location_messages in messages.values():
        if isinstance(location_messages, dict):
            flat.update(location_messages)
        else:
            flat.setdefault("_schema", []).extend(location_messages)
    return flat


def handle_domain_error(error: DomainError) -> Response:
    if error.status >= 500:
        log.warning("%s: %s", error.code, error.detail)
    return problem_response(
        status=error.status,
        code=error.code,
        title=error.title,
        detail=error.detail,
        errors=error.errors,
        retry_after=error.retry_after_seconds(),
        extensions=error.extensions,
    )


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    errors = None
    if "messages" in data:
        errors = _flatten_webargs_messages(data["messages"])
    code = _HTTP_CODES.get(status, "http_error")
    detail = error.description or error.name
    if status == 422:
        detail = "Some fields are missing or invalid; see errors."
    elif status == 400 and errors:
        detail = "The request could not be parsed; see errors."
    response = problem_response(
        status=status, code=code, title=error.name, detail=detail, errors=errors
    )
    for name, value in (data.get("headers") or {}).items():
        response.headers[name] = value
    if status == 405 and error.get_response().headers.get("Allow"):
        response.headers["Allow"] = error.get_response().headers["Allow"]
    return response


def handle_unexpected(error: Exception) -> Response:
    log.exception("unhandled error")
    return problem_response(
        status=500,
        code="internal_error",
        title="Internal Server Error",
        detail="The server failed; the request was not applied.",
    )


def init_app(app: Flask) -> None:
    """Register the handlers; call after the Api so these replace its HTTP handler."""
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
