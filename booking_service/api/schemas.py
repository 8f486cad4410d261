"""Request and response schemas (marshmallow); they also drive the OpenAPI document."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import marshmallow as ma
from flask_smorest import Api

from booking_service.api.fields import encodable, id_field, no_nul, text_field, username_field
from booking_service.models import BookingStatus, Event, HoldStatus, WaitlistEntry, WaitlistStatus
from booking_service.services.events import WHEN_FILTERS
from booking_service.services.history import ACTIONS, ENTITY_TYPES
from booking_service.services.outbox import EVENT_TYPES


class UtcDateTime(ma.fields.AwareDateTime):
    """An aware timestamp, converted to UTC when loaded.

    RFC 3339 allows any offset up to ±23:59, PostgreSQL stores none beyond ±15:59; converted
    to UTC (what is stored anyway) every valid offset works. A moment that leaves the years
    Python can represent once in UTC (9999-12-31T23:00-05:00) is invalid, not an overflow.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(UTC)
        except OverflowError:
            raise ma.ValidationError("Must be between years 1 and 9999 in UTC.") from None


def timestamp(**kwargs: Any) -> ma.fields.AwareDateTime:
    """ISO 8601 with a timezone; a timestamp without one is taken as UTC."""
    return UtcDateTime(default_timezone=UTC, **kwargs)


# --- accounts ---------------------------------------------------------------------------


class UserSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    username = ma.fields.String()
    email = ma.fields.String()
    first_name = ma.fields.String()
    last_name = ma.fields.String()
    role = ma.fields.String(metadata={"enum": ["organizer", "customer", "admin"]})
    organization_name = ma.fields.String(allow_none=True)
    business_address = ma.fields.String(allow_none=True)
    created_at = timestamp()
    updated_at = timestamp()


class CustomerRegistrationSchema(ma.Schema):
    username = username_field(
        metadata={
            "description": (
                "Unique regardless of case and Unicode form: two names are one account when "
                "they match after Unicode NFKC, case folding (`str.casefold`) and trimming, "
                "so `Alice`, `alice `, `ALICE` and `alice` in fullwidth letters are one. "
                "Stored as sent without leading and trailing white space; any spelling that "
                "normalizes alike signs in. A name that looks like a taken one is taken too "
                "(`username_taken`): two names look alike when their keys have one Unicode "
                "UTS #39 skeleton, case folded, e.g. `carol` and `c\u0430rol` with a Cyrillic "
                "`\u0430`, or `paypal` and `paypa1`. Control characters (Unicode Cc, e.g. a "
                "newline), invisible formatting characters (Cf, e.g. U+200B zero-width space, "
                "U+00AD soft hyphen), line or paragraph separators, default-ignorable code "
                "points (e.g. U+034F, the variation selectors U+FE00 to U+FE0F and U+E0100 to "
                "U+E01EF) and characters that render blank (the Hangul fillers U+115F, U+1160, "
                "U+3164 and U+FFA0, U+2800 braille pattern blank) are refused, as is a name "
                "longer than 600 characters once normalized or as a skeleton. The pattern "
                "lists the refused characters up to U+FFFF; those beyond (e.g. the tag "
                "characters U+E0000 to U+E0FFF) are refused as well."
            )
        },
    )
    password = ma.fields.String(
        required=True,
        load_only=True,
        validate=[ma.validate.Length(min=8, max=128), encodable],
        metadata={"description": "8 to 128 characters."},
    )
    email = ma.fields.Email(required=True, validate=ma.validate.Length(max=254))
    first_name = text_field(max_length=150, load_default="")
    last_name = text_field(max_length=150, load_default="")


class OrganizerRegistrationSchema(CustomerRegistrationSchema):
    organization_name = text_field(max_length=200, required=True, blank=False)
    business_address = text_field(max_length=1000, load_default=None, allow_none=True)


DEVICE_TOKEN_DESCRIPTION = (
    "Device token: keep it on this device and send it with every login of this account "
    "(OWASP's device-token scheme against lockout). A login that presents a live device token "
    "of the account (used within DEVICE_TOKEN_TTL_DAYS, 90 days by default) is counted against "
    "RATE_LIMIT_LOGIN per device token instead of per username, so someone guessing the "
    "password cannot lock this device out; the limit per client address still applies. "
    "Without one, or with one that is not this account's, the login counts per username, "
    "so a new device may still wait while the username is under attack."
)


class LoginSchema(ma.Schema):
    username = text_field(
        max_length=150,
        required=True,
        metadata={"description": "As registered, in any spelling that normalizes alike."},
    )
    password = ma.fields.String(
        required=True, load_only=True, validate=[ma.validate.Length(max=128), encodable]
    )
    device_token = ma.fields.String(
        load_default=None,
        load_only=True,
        validate=[ma.validate.Length(max=128), encodable],
        metadata={
            "description": (
                "The `device_token` of an earlier sign-in on this device, if it has one. "
                + DEVICE_TOKEN_DESCRIPTION
            )
        },
    )


class SignedInSchema(ma.Schema):
    user = ma.fields.Nested(UserSchema)
    token = ma.fields.String(
        metadata={"description": "Bearer token: send as 'Authorization: Bearer <token>'."}
    )
    device_token = ma.fields.String(
        metadata={
            "description": (
                "Random and opaque; only its SHA-256 is stored. The one sent with the login if "
                "it was live, else a new one. " + DEVICE_TOKEN_DESCRIPTION
            )
        }
    )


# --- events -----------------------------------------------------------------------------


class EventSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    title = ma.fields.String()
    description = ma.fields.String()
    start_time = timestamp()
    end_time = timestamp()
    capacity = ma.fields.Integer()
    booked_count = ma.fields.Integer(metadata={"description": "Seats of active bookings."})
    held_count = ma.fields.Integer(
        attribute="seats_held",
        metadata={"description": "Seats in live holds (waitlist offers included)."},
    )
    available_slots = ma.fields.Integer(
        metadata={
            "description": "capacity - booked_count - held_count, exact at every read. While "
            "waitlist_length > 0 these seats are offered to the waitlist, not to newcomers."
        }
    )
    is_full = ma.fields.Boolean()
    waitlist_length = ma.fields.Integer(
        metadata={"description": "Waitlist entries waiting for an offer."}
    )
    max_seats_per_booking = ma.fields.Integer()
    hold_ttl_seconds = ma.fields.Integer(
        allow_none=True,
        metadata={"description": "How long a hold lasts on this event; null: the default."},
    )
    sale_starts_at = timestamp(
        allow_none=True,
        metadata={"description": "Holds and bookings before it: 409 sale_not_started."},
    )
    waiting_room = ma.fields.Boolean(
        metadata={
            "description": "Holding or booking needs an admission from the event's queue "
            "(POST /api/v1/events/{id}/queue); without one, 409 queue_required."
        }
    )
    admit_per_minute = ma.fields.Integer(
        allow_none=True,
        metadata={
            "description": "Admissions per minute; null: automatic, as fast as the event's "
            "lock serves while keeping lock waits under WAITING_ROOM_TARGET_LOCK_WAIT_MS."
        },
    )
    admission_minutes = ma.fields.Integer(
        metadata={"description": "How long an admission lasts; unused, it lapses."}
    )
    is_past = ma.fields.Method("_is_past", metadata={"type": "boolean"})
    is_ongoing = ma.fields.Method("_is_ongoing", metadata={"type": "boolean"})
    organizer_id = ma.fields.Integer()
    created_at = timestamp()
    updated_at = timestamp()

    def _is_past(self, event: Event) -> bool:
        return event.is_past_at(_shown_at(event))

    def _is_ongoing(self, event: Event) -> bool:
        return event.is_ongoing_at(_shown_at(event))


def _shown_at(event: Event) -> datetime:
    """Now; for a webhook message, the moment of the change it reports."""
    return getattr(event, "shown_at", None) or datetime.now(UTC)


CAPACITY = {"validate": ma.validate.Range(min=1, max=1_000_000), "strict": True}
SEATS = {"validate": ma.validate.Range(min=1, max=1_000), "strict": True}
HOLD_TTL = {"validate": ma.validate.Range(min=10, max=7 * 24 * 3600), "strict": True}
ADMIT_RATE = {"validate": ma.validate.Range(min=1, max=1_000_000), "strict": True}
ADMISSION_MINUTES = {"validate": ma.validate.Range(min=1, max=24 * 60), "strict": True}


class EventCreateSchema(ma.Schema):
    title = text_field(max_length=200, required=True, blank=False)
    description = text_field(max_length=10_000, load_default="")
    start_time = timestamp(required=True, metadata={"description": "Must be in the future."})
    end_time = timestamp(required=True, metadata={"description": "Must be after start_time."})
    capacity = ma.fields.Integer(required=True, **CAPACITY)
    max_seats_per_booking = ma.fields.Integer(
        load_default=10,
        metadata={"description": "Most seats one booking (or hold) may have."},
        **SEATS,
    )
    hold_ttl_seconds = ma.fields.Integer(
        load_default=None,
        allow_none=True,
        metadata={"description": "How long a hold lasts here; null: HOLD_TTL_SECONDS."},
        **HOLD_TTL,
    )
    sale_starts_at = timestamp(
        load_default=None,
        allow_none=True,
        metadata={"description": "Before start_time; null: on sale at once."},
    )
    waiting_room = ma.fields.Boolean(load_default=False)
    admit_per_minute = ma.fields.Integer(
        load_default=None,
        allow_none=True,
        metadata={"description": "Admissions per minute; null: automatic pacing."},
        **ADMIT_RATE,
    )
    admission_minutes = ma.fields.Integer(load_default=10, **ADMISSION_MINUTES)


class EventUpdateSchema(ma.Schema):
    title = text_field(max_length=200, blank=False)
    description = text_field(max_length=10_000)
    start_time = timestamp()
    end_time = timestamp()
    capacity = ma.fields.Integer(
        metadata={
            "description": "Cannot go below booked_count + held_count (409 "
            "capacity_below_bookings). Raising it offers the new seats to the waitlist first."
        },
        **CAPACITY,
    )
    max_seats_per_booking = ma.fields.Integer(**SEATS)
    hold_ttl_seconds = ma.fields.Integer(allow_none=True, **HOLD_TTL)
    sale_starts_at = timestamp(allow_none=True)
    waiting_room = ma.fields.Boolean()
    admit_per_minute = ma.fields.Integer(allow_none=True, **ADMIT_RATE)
    admission_minutes = ma.fields.Integer(**ADMISSION_MINUTES)

    @ma.validates_schema
    def _not_empty(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ma.ValidationError("Send at least one field to change.")


def document_schema_rules(api: Api) -> None:
    """Register the request schemas whose rules marshmallow cannot put in the document.

    Call before the blueprints, so that their references resolve to these components.
    """
    # The _not_empty rule: a PATCH must change something.
    api.spec.components.schema("EventUpdate", {"minProperties": 1}, schema=EventUpdateSchema)
    api.spec.components.schema("WebhookUpdate", {"minProperties": 1}, schema=WebhookUpdateSchema)


class EventQuerySchema(ma.Schema):
    when = ma.fields.String(validate=ma.validate.OneOf(WHEN_FILTERS))
    mine = ma.fields.Boolean(
        load_default=False, metadata={"description": "Only my events (organizers)."}
    )


# --- bookings ---------------------------------------------------------------------------

BOOKING_STATUSES = [status.value for status in BookingStatus]


class BookingSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    event_id = ma.fields.Integer()
    customer_id = ma.fields.Integer()
    status = ma.fields.String(metadata={"enum": BOOKING_STATUSES})
    seats = ma.fields.Integer()
    created_at = timestamp()
    updated_at = timestamp()


class BookingCreateSchema(ma.Schema):
    event_id = id_field(required=True)
    seats = ma.fields.Integer(
        load_default=1,
        metadata={
            "description": "All or nothing; at most the event's max_seats_per_booking (422 "
            "too_many_seats). Fewer free seats: 409 event_full with available_slots."
        },
        **SEATS,
    )


class BookingSeatsSchema(ma.Schema):
    seats = ma.fields.Integer(
        required=True,
        metadata={
            "description": "Fewer frees the difference at once; more takes it like a booking "
            "(409 event_full, 422 too_many_seats)."
        },
        **SEATS,
    )


# --- holds and the waitlist -------------------------------------------------------------

HOLD_STATUSES = [status.value for status in HoldStatus]
WAITLIST_STATUSES = [status.value for status in WaitlistStatus]


class HoldSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    event_id = ma.fields.Integer()
    customer_id = ma.fields.Integer()
    seats = ma.fields.Integer()
    status = ma.fields.String(metadata={"enum": HOLD_STATUSES})
    expires_at = timestamp(
        metadata={"description": "Confirm before this; afterwards the seats go back."}
    )
    booking_id = ma.fields.Integer(
        allow_none=True, metadata={"description": "The booking it was confirmed into."}
    )
    created_at = timestamp()


class HoldCreateSchema(ma.Schema):
    seats = ma.fields.Integer(load_default=1, **SEATS)


class HoldQuerySchema(ma.Schema):
    status = ma.fields.String(validate=ma.validate.OneOf(HOLD_STATUSES))


class OfferSchema(ma.Schema):
    hold_id = ma.fields.Integer()
    expires_at = timestamp()


class WaitlistEntrySchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    event_id = ma.fields.Integer()
    customer_id = ma.fields.Integer()
    seats = ma.fields.Integer()
    position = ma.fields.Integer(
        allow_none=True,
        metadata={
            "description": "Place in the event's queue (1: next), counting entries that wait "
            "or hold an offer; null once the entry has ended."
        },
    )
    status = ma.fields.String(metadata={"enum": WAITLIST_STATUSES})
    offer = ma.fields.Method(
        "_offer",
        allow_none=True,
        metadata={
            "description": "The hold offered to this entry while it is live: confirm it with "
            "POST /api/v1/holds/{hold_id}/confirm before expires_at.",
            "type": "object",
            "nullable": True,
            "properties": {
                "hold_id": {"type": "integer"},
                "expires_at": {"type": "string", "format": "date-time"},
            },
        },
    )
    created_at = timestamp()

    def _offer(self, entry: WaitlistEntry) -> dict[str, Any] | None:
        if entry.offer_hold_id is None:
            return None
        return OfferSchema().dump(
            {"hold_id": entry.offer_hold_id, "expires_at": entry.offer_expires_at}
        )


class WaitlistJoinSchema(ma.Schema):
    seats = ma.fields.Integer(load_default=1, **SEATS)


class EventWaitlistQuerySchema(ma.Schema):
    live = ma.fields.Boolean(
        load_default=True, metadata={"description": "Only entries waiting or holding an offer."}
    )


class BookingQuerySchema(ma.Schema):
    status = ma.fields.String(validate=ma.validate.OneOf(BOOKING_STATUSES))
    event_id = id_field(strict=False)


class EventBookingQuerySchema(ma.Schema):
    status = ma.fields.String(validate=ma.validate.OneOf(BOOKING_STATUSES))


# --- history ----------------------------------------------------------------------------


class HistoryEntrySchema(ma.Schema):
    id = ma.fields.Integer()
    action = ma.fields.String(metadata={"enum": list(ACTIONS)})
    entity_type = ma.fields.String(metadata={"enum": list(ENTITY_TYPES)})
    entity_id = ma.fields.Integer()
    details = ma.fields.Dict()
    created_at = timestamp()


class HistoryQuerySchema(ma.Schema):
    action = ma.fields.String(validate=ma.validate.OneOf(ACTIONS))
    entity_type = ma.fields.String(validate=ma.validate.OneOf(ENTITY_TYPES))
    since = timestamp(metadata={"description": "Entries at or after this time."})
    until = timestamp(metadata={"description": "Entries at or before this time."})

    @ma.validates_schema
    def _ordered(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise ma.ValidationError("Must not be before since.", "until")


# --- the waiting room -------------------------------------------------------------------


class QueueEntrySchema(ma.Schema):
    event_id = ma.fields.Integer()
    state = ma.fields.String(
        metadata={
            "enum": ["waiting", "admitted", "lapsed", "sold_out"],
            "description": "admitted: hold or book until admitted_until; lapsed: the "
            "admission ran out (join again, at the end); sold_out: no seats and no live "
            "holds: wait on the waitlist (admission resumes if seats come back).",
        }
    )
    position = ma.fields.Integer(
        allow_none=True, metadata={"description": "1: next in line; null unless waiting."}
    )
    eta_seconds = ma.fields.Integer(
        allow_none=True,
        metadata={"description": "Until admission at the current rate; null if unknown."},
    )
    admitted_until = timestamp(allow_none=True)
    waitlist = ma.fields.String(
        allow_none=True, metadata={"description": "The event's waitlist, once sold out."}
    )


class QueueStatsSchema(ma.Schema):
    depth = ma.fields.Integer(metadata={"description": "Entries waiting."})
    active = ma.fields.Integer(metadata={"description": "Admissions not lapsed yet."})
    admitted = ma.fields.Integer(metadata={"description": "Admissions so far."})
    admitted_last_minute = ma.fields.Integer()
    rate_per_minute = ma.fields.Float(
        allow_none=True, metadata={"description": "The pacer's current admission rate."}
    )
    eta_last_seconds = ma.fields.Float(
        allow_none=True,
        metadata={"description": "Until the last entry is admitted at that rate."},
    )
    sold_out = ma.fields.Boolean()
    lock_wait_ms = ma.fields.Float(
        allow_none=True,
        metadata={"description": "The pacer's estimate of the event's lock wait (Little's law)."},
    )


# --- webhooks ---------------------------------------------------------------------------

DELIVERY_RESULTS = [
    "success",
    "gone",
    "http_error",
    "timeout",
    "connection_error",
    "refused_target",
]
MESSAGE_STATUSES = ["pending", "delivered", "failed"]
_EVENT_TYPE = ma.fields.String(validate=ma.validate.OneOf(EVENT_TYPES))
_URL_DESCRIPTION = (
    "Where messages are POSTed: https (http only where WEBHOOK_ALLOW_HTTP is set), no "
    "credentials, a host whose every address is public (no loopback, private, link-local or "
    "metadata address, checked now and again before every delivery; 422 "
    "webhook_target_refused). Redirects are not followed."
)


def webhook_url(**kwargs: Any) -> ma.fields.Url:
    """An absolute http(s) URL (the address rules are the service's: webhook_target_refused)."""
    return ma.fields.Url(
        schemes={"http", "https"},
        require_tld=False,
        validate=[ma.validate.Length(max=2000), no_nul, encodable],
        metadata={"description": _URL_DESCRIPTION},
        **kwargs,
    )


class WebhookSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    url = ma.fields.String()
    event_types = ma.fields.List(ma.fields.String(metadata={"enum": list(EVENT_TYPES)}))
    event_id = ma.fields.Integer(
        allow_none=True, metadata={"description": "Only this event's messages; null: all mine."}
    )
    enabled = ma.fields.Boolean(
        metadata={"description": "False once a delivery was answered 410 Gone (or by PATCH)."}
    )
    disabled_reason = ma.fields.String(allow_none=True)
    created_at = timestamp()
    updated_at = timestamp()


class WebhookWithSecretSchema(WebhookSchema):
    secret = ma.fields.String(
        metadata={
            "description": "Standard Webhooks signing secret (whsec_...). Shown only in this "
            "answer: keep it to verify the webhook-signature header of every message."
        }
    )


class WebhookCreateSchema(ma.Schema):
    url = webhook_url(required=True)
    event_types = ma.fields.List(
        _EVENT_TYPE, required=True, validate=ma.validate.Length(min=1, max=len(EVENT_TYPES))
    )
    event_id = id_field(
        load_default=None,
        allow_none=True,
        metadata={"description": "One of my events; omitted or null: all of them."},
    )


class WebhookUpdateSchema(ma.Schema):
    url = webhook_url()
    event_types = ma.fields.List(
        _EVENT_TYPE, validate=ma.validate.Length(min=1, max=len(EVENT_TYPES))
    )
    enabled = ma.fields.Boolean(
        metadata={"description": "true enables it again: its pending messages go out."}
    )

    @ma.validates_schema
    def _not_empty(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ma.ValidationError("Send at least one field to change.")


class WebhookMessageSchema(ma.Schema):
    id = ma.fields.Integer()
    webhook_id = ma.fields.String(
        metadata={"description": "The webhook-id header it is sent with."}
    )
    type = ma.fields.String(metadata={"enum": list(EVENT_TYPES)})
    event_id = ma.fields.Integer()
    status = ma.fields.String(metadata={"enum": MESSAGE_STATUSES})
    attempts = ma.fields.Integer()
    next_attempt_at = timestamp()
    delivered_at = timestamp(allow_none=True)
    created_at = timestamp()


class WebhookDeliverySchema(ma.Schema):
    id = ma.fields.Integer()
    message_id = ma.fields.Integer()
    webhook_id = ma.fields.String(attribute="message.webhook_id")
    type = ma.fields.String(attribute="message.type", metadata={"enum": list(EVENT_TYPES)})
    message_status = ma.fields.String(
        attribute="message.status", metadata={"enum": MESSAGE_STATUSES}
    )
    attempt = ma.fields.Integer(metadata={"description": "1 for the first try."})
    attempted_at = timestamp()
    result = ma.fields.String(metadata={"enum": DELIVERY_RESULTS})
    status_code = ma.fields.Integer(allow_none=True, metadata={"description": "HTTP status."})
    latency_ms = ma.fields.Integer()
    response_body = ma.fields.String(
        allow_none=True, metadata={"description": "The first 1 KB of the answer."}
    )
    error = ma.fields.String(allow_none=True, metadata={"description": "Why there was none."})
