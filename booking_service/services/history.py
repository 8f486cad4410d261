"""Audit history: written inside the transaction of the change it records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from booking_service.errors import HistoryEntryNotFound
from booking_service.extensions import db
from booking_service.models import HistoryEntry
from booking_service.services import Page, paginate

ACTIONS = ("register", "login", "logout", "create", "update", "delete", "cancel", "reactivate")
ENTITY_TYPES = ("user", "event", "booking")


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
    page: int,
    page_size: int,
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
    with db.transaction() as session:
        return paginate(
            session,
            query.order_by(HistoryEntry.created_at.desc(), HistoryEntry.id.desc()),
            page=page,
            page_size=page_size,
        )


def get_entry(*, user_id: int, entry_id: int) -> HistoryEntry:
    """Return one of the user's own entries; anyone else's is 'not found'."""
    with db.transaction() as session:
        entry = session.scalar(
            select(HistoryEntry).where(HistoryEntry.id == entry_id, HistoryEntry.user_id == user_id)
        )
    if entry is None:
        raise HistoryEntryNotFound(f"History entry {entry_id} does not exist.")
    return entry
