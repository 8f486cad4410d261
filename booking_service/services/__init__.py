"""Business rules. Each public function owns its transaction; nothing here knows about HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

T = TypeVar("T")

MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class PageRequest:
    """Which page of a list to read: ``number`` from 1, ``size`` items per page."""

    number: int
    size: int


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list query, with the total the pagination header reports."""

    items: list[T]
    total: int


def paginate(session: Session, query: Select[Any], page: PageRequest) -> Page[Any]:
    """Run ``query`` for one page and count its total rows; every list reads through here."""
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    offset = (page.number - 1) * page.size
    if offset >= total:
        # Past the end (any page number is valid): nothing to fetch. This also keeps huge
        # page numbers away from OFFSET, a bigint in PostgreSQL.
        return Page(items=[], total=total or 0)
    items = list(session.scalars(query.limit(page.size).offset(offset)))
    return Page(items=items, total=total or 0)
