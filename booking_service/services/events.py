"""Events: publishing, listing, editing (capacity under the event lock) and deletion."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, select

from booking_service.database import db
from booking_service.errors import (
    EventNotFound,
    Forbidden,
    ValidationFailed,
)
from booking_service.models import Booking, BookingStatus, Event, Role, User
from booking_service.services import MAX_ID, Page, PageRequest, history, ledger, outbox, paginate

WHEN_FILTERS = ("upcoming", "ongoing", "past")
EDITABLE_FIELDS = (
    "title",
    "description",
    "start_time",
    "end_time",
    "capacity",
    "max_seats_per_booking",
    "hold_ttl_seconds",
    "sale_starts_at",
    "waiting_room",
    "admit_per_minute",
    "admission_minutes",
)


def schedule_errors(
    *,
    start_time: datetime,
    end_time: datetime,
    now: datetime,
    start_changed: bool = True,
    sale_starts_at: datetime | None = None,
) -> dict[str, list[str]]:
    """Return field errors for an event's times (empty when the schedule is valid)."""
    errors: dict[str, list[str]] = {}
    if start_changed and start_time <= now:
        errors["start_time"] = ["Must be in the future."]
    if end_time <= start_time:
        errors["end_time"] = ["Must be after start_time."]
    if sale_starts_at is not None and sale_starts_at >= start_time:
        errors["sale_starts_at"] = ["Must be before start_time."]
    return errors


def _require_valid_schedule(**kwargs: Any) -> None:
    errors = schedule_errors(now=datetime.now(UTC), **kwargs)
    if errors:
        raise ValidationFailed("The event's times are not valid.", errors=errors)


def create_event(
    *,
    organizer: User,
    title: str,
    start_time: datetime,
    end_time: datetime,
    capacity: int,
    description: str = "",
    max_seats_per_booking: int = 10,
    hold_ttl_seconds: int | None = None,
    sale_starts_at: datetime | None = None,
    waiting_room: bool = False,
    admit_per_minute: int | None = None,
    admission_minutes: int = 10,
) -> Event:
    """Publish a new event owned by the organizer."""
    _require_valid_schedule(start_time=start_time, end_time=end_time, sale_starts_at=sale_starts_at)
    event = Event(
        organizer_id=organizer.id,
        title=title,
        description=description,
        start_time=start_time,
        end_time=end_time,
        capacity=capacity,
        booked_count=0,
        held_count=0,
        waitlist_length=0,
        max_seats_per_booking=max_seats_per_booking,
        hold_ttl_seconds=hold_ttl_seconds,
        sale_starts_at=sale_starts_at,
        waiting_room=waiting_room,
        admit_per_minute=admit_per_minute,
        admission_minutes=admission_minutes,
        lapsed_hold_seats=0,
    )
    with db.transaction() as session:
        session.add(event)
        session.flush()
        history.record(
            session,
            user_id=organizer.id,
            action="create",
            entity_type="event",
            entity_id=event.id,
            details={"title": title, "capacity": capacity},
        )
        session.refresh(event)  # every column, for the answer after the session closes
    return event


def list_events(
    *,
    when: str | None = None,
    organizer_id: int | None = None,
    page: PageRequest,
) -> Page[Event]:
    """List events, soonest first (most recent first for past events)."""
    now = func.now()
    query = select(Event)
    order = [Event.start_time.asc(), Event.id.asc()]
    if when == "upcoming":
        query = query.where(Event.start_time > now)
    elif when == "ongoing":
        query = query.where(Event.start_time <= now, Event.end_time > now)
    elif when == "past":
        query = query.where(Event.end_time <= now)
        order = [Event.start_time.desc(), Event.id.desc()]
    if organizer_id is not None:
        query = query.where(Event.organizer_id == organizer_id)
    with db.read_transaction() as session:
        return paginate(session, query.order_by(*order), page)


def get_event(*, event_id: int) -> Event:
    """Return the event or raise EventNotFound."""
    with db.read_transaction() as session:
        event = session.get(Event, event_id) if event_id <= MAX_ID else None
    if event is None:
        raise EventNotFound(f"Event {event_id} does not exist.")
    return event


def _own_event(actor: User, event: Event | None, event_id: int) -> Event:
    if event is None:
        raise EventNotFound(f"Event {event_id} does not exist.")
    if event.organizer_id != actor.id:
        raise Forbidden("Only the event's organizer may do this.")
    return event


def update_event(*, actor: User, event_id: int, changes: dict[str, Any]) -> Event:
    """Apply the changes; a capacity edit is the ledger's, under the event lock."""
    changes = {key: value for key, value in changes.items() if key in EDITABLE_FIELDS}
    # Ownership is checked before the lock so strangers cannot make an event's lock hot.
    _own_event(actor, get_event(event_id=event_id), event_id)
    if "capacity" in changes:
        with ledger.locked_event_change(event_id) as change:
            return _apply_event_changes(change, actor, changes)
    with ledger.event_change(event_id) as change:
        return _apply_event_changes(change, actor, changes)


def _apply_event_changes(change: ledger.EventChange, actor: User, changes: dict[str, Any]) -> Event:
    session, event_id = change.session, change.event_id
    event = _own_event(actor, session.get(Event, event_id, with_for_update=True), event_id)
    if changes.keys() & {"start_time", "end_time", "sale_starts_at"}:
        _require_valid_schedule(
            start_time=changes.get("start_time", event.start_time),
            end_time=changes.get("end_time", event.end_time),
            start_changed="start_time" in changes and changes["start_time"] != event.start_time,
            sale_starts_at=changes.get("sale_starts_at", event.sale_starts_at),
        )
    before = {key: _jsonable(getattr(event, key)) for key in changes}
    for key, value in changes.items():
        if key != "capacity":
            setattr(event, key, value)
    session.flush()
    if "capacity" in changes:
        change.apply(ledger.intent("capacity", capacity=changes["capacity"]))
    history.record(
        session,
        user_id=actor.id,
        action="update",
        entity_type="event",
        entity_id=event.id,
        details={
            "before": before,
            "after": {key: _jsonable(value) for key, value in changes.items()},
        },
    )
    session.flush()
    session.refresh(event)  # every column, for the answer after the session closes
    outbox.emit(session, event=event, type_="event.updated")  # in the edit's transaction
    return event


def delete_event(*, actor: User, event_id: int) -> None:
    """Delete the event and its bookings; the history keeps a record of it."""
    with ledger.event_change(event_id) as change:
        session = change.session
        event = _own_event(actor, session.get(Event, event_id, with_for_update=True), event_id)
        active = session.scalar(
            select(func.count())
            .select_from(Booking)
            .where(Booking.event_id == event_id, Booking.status == BookingStatus.ACTIVE.value)
        )
        outbox.emit(session, event=event, type_="event.deleted")  # the event as it was
        session.execute(delete(Event).where(Event.id == event_id))
        history.record(
            session,
            user_id=actor.id,
            action="delete",
            entity_type="event",
            entity_id=event_id,
            details={"title": event.title, "active_bookings_removed": active or 0},
        )


def list_event_bookings(
    *, actor: User, event_id: int, status: str | None, page: PageRequest
) -> Page[Booking]:
    """List an event's bookings for its organizer (or an admin), newest first."""
    event = get_event(event_id=event_id)
    if actor.role != Role.ADMIN.value:
        _own_event(actor, event, event_id)
    query = select(Booking).where(Booking.event_id == event_id)
    if status:
        query = query.where(Booking.status == status)
    with db.read_transaction() as session:
        return paginate(session, query.order_by(Booking.created_at.desc(), Booking.id.desc()), page)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
