"""Paged lists: one decorator turns flask-smorest's page parameters into the services'
``PageRequest`` and their ``Page`` back into items and the X-Pagination header."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask_smorest.pagination import PaginationParameters

from booking_service.api.blueprint import Blueprint
from booking_service.services import Page, PageRequest


def paginated(blp: Blueprint) -> Callable[[Any], Any]:
    """``blp.paginate()`` for a view that takes ``page: PageRequest`` and returns a ``Page``."""

    def decorator(func: Any) -> Any:
        @wraps(func)
        def wrapper(*args: Any, pagination_parameters: PaginationParameters, **kwargs: Any) -> Any:
            request = PageRequest(
                number=pagination_parameters.page, size=pagination_parameters.page_size
            )
            page: Page[Any] = func(*args, page=request, **kwargs)
            pagination_parameters.item_count = page.total
            return page.items

        return blp.paginate()(wrapper)

    return decorator
