"""Audit history: written inside the transaction of the change it records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from booking_service.database import db
from booking_service.errors import HistoryEntryNotFound
from booking_service.models import HistoryEntry
from booking_service.services import Page, PageRequest, paginate

ACTIONS = (
    "register",
    "login",
    "logout",
    "create",
    "update",
    "delete",
    "cancel",
    "reactivate",
    "seats",  # a booking's seats changed
    "hold",
    "confirm",
    "release",
    "expire",
    "join",  # the waitlist
    "leave",
    "offer",
)
ENTITY_TYPES = ("user", "event", "booking", "hold", "waitlist_entry")

# The shape of a history row, written in two ways: ``record`` adds one row from Python, and
# ``entry_sql`` builds the INSERT that the seat ledger's statement runs (services/ledger_sql.py);
# both take the same parts and check them the same way.


def check_entry(action: str, entity_type: str) -> None:
    if action not in ACTIONS or entity_type not in ENTITY_TYPES:
        raise ValueError(f"unknown history entry {action!r} {entity_type!r}")


def seat_details(*, event_id: int | str, seats: int | str, **more: Any) -> dict[str, Any]:
    """The ``details`` of a booking's, hold's or waitlist entry's entries: which event, how many
    seats, and anything ``more`` (values, or SQL expressions for entry_sql)."""
    return {"event_id": event_id, "seats": seats, **more}


def entry_sql(
    *, user_id: str, action: str, entity_type: str, entity_id: str, details: dict[str, str]
) -> str:
    """SQL inserting one entry from PL/pgSQL: ``user_id``, ``entity_id`` and the values of
    ``details`` are SQL expressions; ``action`` and ``entity_type`` are fixed."""
    check_entry(action, entity_type)
    pairs = ", ".join(f"'{key}', {expression}" for key, expression in details.items())
    return (
        "INSERT INTO history_entries (user_id, action, entity_type, entity_id, details, "
        f"created_at) VALUES ({user_id}, '{action}', '{entity_type}', {entity_id}, "
        f"jsonb_build_object({pairs}), now());"
    )


def record(
    session: Session,
    *,
    user_id: int,
    action: str,
    entity_type: str,
    entity_id: int,
    details: dict[str, Any] | None = None,
) -> None:
    """Add a history entry to the caller's transaction."""
    check_entry(action, entity_type)
    session.add(
        HistoryEntry(
            user_id=user_id,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            details=details or {},
        )
    )


def list_entries(
    *,
    user_id: int,
    action: str | None = None,
    entity_type: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    page: PageRequest,
) -> Page[HistoryEntry]:
    """Return the user's own entries, newest first."""
    query = select(HistoryEntry).where(HistoryEntry.user_id == user_id)
    if action:
        query = query.where(HistoryEntry.action == action)
    if entity_type:
        query = query.where(HistoryEntry.entity_type == entity_type)
    if since:
        query = query.where(HistoryEntry.created_at >= since)
    if until:
        query = query.where(HistoryEntry.created_at <= until)
    with db.read_transaction() as session:
        return paginate(
            session, query.order_by(HistoryEntry.created_at.desc(), HistoryEntry.id.desc()), page
        )


def get_entry(*, user_id: int, entry_id: int) -> HistoryEntry:
    """Return one of the user's own entries; anyone else's is 'not found'."""
    with db.read_transaction() as session:
        entry = session.scalar(
            select(HistoryEntry).where(HistoryEntry.id == entry_id, HistoryEntry.user_id == user_id)
        )
    if entry is None:
        raise HistoryEntryNotFound(f"History entry {entry_id} does not exist.")
    return entry
