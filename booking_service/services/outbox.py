"""The webhook outbox: messages written in the transaction of the change they report.

Two writers, one shape (docs/architecture.md, "Webhooks: the outbox and the relay"):

- the seat ledger's statement (services/ledger_sql.py) looks up, once per batch, which
  enabled endpoints of the event's organizer want which types (``HOOKS_SQL``, into the
  variable ``hooks``), and each change it makes inserts its message with ``emit_sql``, in the
  same statement: a batch's messages commit with its seats, group commit included. With no
  endpoint ``hooks`` is NULL and every ``emit_sql`` is one test of a NULL variable;
- ``emit`` adds a message to the caller's session, for the changes made in Python (an
  event's edit or deletion), in the caller's transaction.

A message stores the resource as it was at commit (its row, plus the few computed fields the
API shows); the relay renders it with the API's schema when it sends it, so ``data`` is the
resource as ``GET`` answered right after the change.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from booking_service.models import Event

EVENT_TYPES = (
    "booking.created",
    "booking.cancelled",
    "booking.reactivated",
    "booking.seats_changed",
    "hold.created",
    "hold.confirmed",
    "hold.released",
    "hold.expired",
    "waitlist.offered",
    "waitlist.offer_lapsed",
    "event.updated",
    "event.sold_out",
    "event.deleted",
)

# Which resource each type carries in ``data`` (the API's schema for it renders the message).
RESOURCE_OF_TYPE = {type_: type_.partition(".")[0] for type_ in EVENT_TYPES}
RESOURCE_OF_TYPE.update({"waitlist.offered": "waitlist_entry"})
RESOURCE_OF_TYPE.update({"waitlist.offer_lapsed": "waitlist_entry"})

# ``hooks``: {endpoint id: [type, ...]} of the event ``ev``, NULL when nobody subscribes. One
# probe of ix_webhook_endpoints_organizer_enabled per batch.
HOOKS_SQL = """
    SELECT jsonb_object_agg(e.id, to_jsonb(e.event_types)) INTO hooks
      FROM webhook_endpoints e
     WHERE e.organizer_id = ev.organizer_id AND e.enabled
       AND (e.event_id IS NULL OR e.event_id = ev.id);"""


def check_type(type_: str) -> None:
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {type_!r}")


def emit_sql(type_: str, data: str) -> str:
    """PL/pgSQL writing one message of ``type_`` per subscribed endpoint of ``ev``; ``data`` is
    a jsonb SQL expression, evaluated only when someone subscribes."""
    check_type(type_)
    return f"""IF hooks IS NOT NULL THEN
                    INSERT INTO webhook_messages (endpoint_id, event_id, type, data)
                    SELECT key::bigint, ev.id, '{type_}', {data}
                      FROM jsonb_each(hooks) WHERE value ? '{type_}';
                END IF;"""


_EMIT = text(
    """
    INSERT INTO webhook_messages (endpoint_id, event_id, type, data)
    SELECT id, :event_id, :type, CAST(:data AS jsonb) FROM webhook_endpoints
     WHERE organizer_id = :organizer_id AND enabled AND :type = ANY(event_types)
       AND (event_id IS NULL OR event_id = :event_id)
    """
)


def emit(session: Session, *, event: Event, type_: str) -> None:
    """Add the messages of ``type_`` about ``event`` (as it is in ``session`` now) to the
    caller's transaction, one per subscribed endpoint."""
    check_type(type_)
    parameters = {
        "event_id": event.id,
        "organizer_id": event.organizer_id,
        "type": type_,
        "data": json.dumps(event_data(event)),
    }
    session.execute(_EMIT, parameters)


def event_data(event: Event) -> dict[str, Any]:
    """An event's row and its lapsed hold seats, as a message stores them."""
    row = {column.key: getattr(event, column.key) for column in Event.__table__.columns}
    row["lapsed_hold_seats"] = event.lapsed_hold_seats or 0
    return {
        key: value.isoformat() if isinstance(value, datetime) else value
        for key, value in row.items()
    }
