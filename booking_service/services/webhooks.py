"""Webhook endpoints: an organizer's receivers, their secrets, their deliveries.

An endpoint receives the event types it names, about one of the organizer's events or all of
them. Messages are written by the changes themselves (services/outbox.py) and delivered by the
relay (services/relay.py); here are the endpoints, the log of attempts, a manual retry and the
purge. The secret (Standard Webhooks, ``whsec_`` and base64 of 32 random bytes) is returned by
``create_endpoint`` and ``rotate_secret`` only, and never logged.
"""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, exists, func, select, update
from sqlalchemy.orm import Session

from booking_service.database import db
from booking_service.errors import (
    EventNotFound,
    Forbidden,
    WebhookDeliveryNotFound,
    WebhookNotFound,
)
from booking_service.models import (
    Event,
    MessageStatus,
    User,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
)
from booking_service.services import MAX_ID, Page, PageRequest, paginate, webhook_http
from booking_service.services.outbox import EVENT_TYPES

EDITABLE_FIELDS = ("url", "event_types", "enabled")
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def create_endpoint(
    *, organizer: User, url: str, event_types: list[str], event_id: int | None = None
) -> WebhookEndpoint:
    """Register a receiver; the answer is the only place its secret is shown."""
    webhook_http.resolve(url)  # refused before anything is written
    with db.transaction() as session:
        if event_id is not None:
            _own_event(session, organizer, event_id)
        endpoint = WebhookEndpoint(
            organizer_id=organizer.id,
            url=url,
            event_types=_ordered(event_types),
            event_id=event_id,
            secret=new_secret(),
            enabled=True,
        )
        session.add(endpoint)
        session.flush()
        session.refresh(endpoint)
    return endpoint


def list_endpoints(*, organizer: User, page: PageRequest) -> Page[WebhookEndpoint]:
    query = select(WebhookEndpoint).where(WebhookEndpoint.organizer_id == organizer.id)
    with db.read_transaction() as session:
        return paginate(session, query.order_by(WebhookEndpoint.id), page)


def get_endpoint(*, organizer: User, endpoint_id: int) -> WebhookEndpoint:
    with db.read_transaction() as session:
        return _own_endpoint(session, organizer, endpoint_id)


def update_endpoint(
    *, organizer: User, endpoint_id: int, changes: dict[str, Any]
) -> WebhookEndpoint:
    """Change the URL, the event types, or enable it again (its pending messages resume)."""
    changes = {key: value for key, value in changes.items() if key in EDITABLE_FIELDS}
    if "url" in changes:
        webhook_http.resolve(changes["url"])
    with db.transaction() as session:
        endpoint = _own_endpoint(session, organizer, endpoint_id, for_update=True)
        if "event_types" in changes:
            changes["event_types"] = _ordered(changes["event_types"])
        for key, value in changes.items():
            setattr(endpoint, key, value)
        if changes.get("enabled"):
            endpoint.disabled_reason = None
        session.flush()
        session.refresh(endpoint)
    return endpoint


def delete_endpoint(*, organizer: User, endpoint_id: int) -> None:
    """Delete the endpoint with its messages and their attempts."""
    with db.transaction() as session:
        session.delete(_own_endpoint(session, organizer, endpoint_id, for_update=True))
        session.execute(delete(WebhookMessage).where(WebhookMessage.endpoint_id == endpoint_id))


def rotate_secret(*, organizer: User, endpoint_id: int) -> WebhookEndpoint:
    """A new secret, at once: the next attempt of every message is signed with it."""
    with db.transaction() as session:
        endpoint = _own_endpoint(session, organizer, endpoint_id, for_update=True)
        endpoint.secret = new_secret()
        session.flush()
        session.refresh(endpoint)
    return endpoint


def list_deliveries(
    *, organizer: User, endpoint_id: int, page: PageRequest
) -> Page[WebhookDelivery]:
    """The endpoint's delivery attempts, newest first."""
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    with db.read_transaction() as session:
        _own_endpoint(session, organizer, endpoint_id)
        return paginate(session, query.order_by(WebhookDelivery.id.desc()), page)


def retry_delivery(*, organizer: User, endpoint_id: int, delivery_id: int) -> WebhookMessage:
    """Send the attempt's message again at the relay's next round, with the same
    ``webhook-id``: a failed one gets one more try, a delivered one is sent once more."""
    with db.transaction() as session:
        _own_endpoint(session, organizer, endpoint_id)
        message_id = (
            session.scalar(
                select(WebhookDelivery.message_id).where(
                    WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint_id
                )
            )
            if delivery_id <= MAX_ID
            else None
        )
        if message_id is None:
            raise WebhookDeliveryNotFound(f"Delivery {delivery_id} does not exist.")
        message = session.execute(
            update(WebhookMessage)
            .where(WebhookMessage.id == message_id)
            .values(status=MessageStatus.PENDING.value, next_attempt_at=func.now())
            .returning(WebhookMessage)
        ).scalar_one()
    return message


def purge_settled(*, older_than: timedelta, batch_size: int = 1000) -> int:
    """Delete delivered and failed messages (with their attempts) and attempts older than
    ``older_than``, and messages whose endpoint is gone, a batch per transaction; how many
    rows."""
    deleted = 0
    settled = (MessageStatus.DELIVERED.value, MessageStatus.FAILED.value)
    for table, old in (
        (WebhookMessage, WebhookMessage.created_at),
        (WebhookDelivery, WebhookDelivery.attempted_at),
    ):
        while True:
            with db.transaction() as session:
                old_enough = old < func.now() - older_than
                oldest = select(table.id).where(old_enough)
                if table is WebhookMessage:
                    # A sale that read an endpoint just before its deletion may have left a
                    # message to nobody: it goes whatever its age.
                    oldest = select(table.id).where(
                        (WebhookMessage.status.in_(settled) & old_enough)
                        | ~exists().where(WebhookEndpoint.id == WebhookMessage.endpoint_id)
                    )
                count = session.execute(
                    delete(table).where(table.id.in_(oldest.limit(batch_size)))
                ).rowcount
            deleted += count
            if count < batch_size:
                break
    return deleted


def _ordered(event_types: list[str]) -> list[str]:
    return [type_ for type_ in EVENT_TYPES if type_ in set(event_types)]


def _own_endpoint(
    session: Session, organizer: User, endpoint_id: int, *, for_update: bool = False
) -> WebhookEndpoint:
    endpoint = (
        session.get(WebhookEndpoint, endpoint_id, with_for_update=for_update)
        if endpoint_id <= MAX_ID
        else None
    )
    # Someone else's endpoint does not exist, as far as this organizer can tell.
    if endpoint is None or endpoint.organizer_id != organizer.id:
        raise WebhookNotFound(f"Webhook endpoint {endpoint_id} does not exist.")
    return endpoint


def _own_event(session: Session, organizer: User, event_id: int) -> None:
    event = session.get(Event, event_id) if event_id <= MAX_ID else None
    if event is None:
        raise EventNotFound(f"Event {event_id} does not exist.")
    if event.organizer_id != organizer.id:
        raise Forbidden("Only the event's organizer may subscribe to it.")
