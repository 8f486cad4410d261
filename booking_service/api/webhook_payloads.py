"""Webhook messages as receivers get them: ``{"type", "timestamp", "data"}``, where ``data``
is the resource as the API shows it, rendered by the API's own schema from what the outbox
stored at commit (services/outbox.py), and the payloads' OpenAPI components."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import marshmallow as ma
from flask_smorest import Api
from sqlalchemy import inspect

from booking_service.api.schemas import (
    BookingSchema,
    EventSchema,
    HoldSchema,
    WaitlistEntrySchema,
    timestamp,
)
from booking_service.models import Base, Booking, Event, Hold, WaitlistEntry
from booking_service.services.outbox import EVENT_TYPES, RESOURCE_OF_TYPE

_RESOURCES: dict[str, tuple[str, type[ma.Schema], type[Base]]] = {
    "booking": ("Booking", BookingSchema, Booking),
    "hold": ("Hold", HoldSchema, Hold),
    "waitlist_entry": ("WaitlistEntry", WaitlistEntrySchema, WaitlistEntry),
    "event": ("Event", EventSchema, Event),
}
_SCHEMAS = {resource: schema() for resource, (_, schema, _) in _RESOURCES.items()}
_TIMES = ("created_at", "updated_at", "expires_at", "start_time", "end_time", "offer_expires_at")


def render_data(type_: str, stored: dict[str, Any], occurred_at: datetime) -> dict[str, Any]:
    """A message's ``data``: the stored row dumped by the resource's schema, as a ``GET``
    right after the change answered (an event's is_past and is_ongoing as of the change)."""
    resource = RESOURCE_OF_TYPE[type_]
    _, _, model = _RESOURCES[resource]
    mapped = inspect(model).attrs.keys()
    fields = {
        key: datetime.fromisoformat(value) if key in _TIMES and value else value
        for key, value in stored.items()
        if key in mapped
    }
    item: Any = model(**fields)
    if isinstance(item, Event):
        item.shown_at = occurred_at
    return _SCHEMAS[resource].dump(item)


def document_payloads(api: Api) -> None:
    """One component per resource, ``<Resource>WebhookPayload``: what each type's body is."""
    for resource, (name, schema, _) in _RESOURCES.items():
        types = [type_ for type_ in EVENT_TYPES if RESOURCE_OF_TYPE[type_] == resource]
        payload = ma.Schema.from_dict(
            {
                "type": ma.fields.String(required=True, metadata={"enum": types}),
                "timestamp": timestamp(
                    required=True, metadata={"description": "When the change was committed."}
                ),
                "data": ma.fields.Nested(
                    schema,
                    required=True,
                    metadata={"description": f"The {name} as GET answered after the change."},
                ),
            },
            name=f"{name}WebhookPayload",
        )
        description = (
            f"The body POSTed for {', '.join(types)}; signed per Standard Webhooks "
            "(webhook-id, webhook-timestamp, webhook-signature headers)."
        )
        api.spec.components.schema(
            f"{name}WebhookPayload", {"description": description}, schema=payload
        )
