"""The signed-in user's audit history."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest.pagination import PaginationParameters

from booking_service.api.common import (
    ID,
    Blueprint,
    auth_required,
    current_user,
    page_items,
    problems,
)
from booking_service.api.schemas import HistoryEntrySchema, HistoryQuerySchema
from booking_service.errors import HistoryEntryNotFound, ValidationFailed
from booking_service.models import HistoryEntry
from booking_service.services import history

blp = Blueprint("history", __name__, url_prefix="/api/v1/history", description="Audit history")


@blp.route("")
class History(MethodView):
    @auth_required(blp)
    @blp.arguments(HistoryQuerySchema, location="query")
    @blp.response(200, HistoryEntrySchema(many=True))
    @blp.paginate()
    @problems(blp, ValidationFailed)
    def get(
        self, query: dict[str, Any], pagination_parameters: PaginationParameters
    ) -> list[HistoryEntry]:
        """List my history entries, newest first; filter by action, entity_type, since, until"""
        page = history.list_entries(
            user_id=current_user().id,
            page=pagination_parameters.page,
            page_size=pagination_parameters.page_size,
            **query,
        )
        return page_items(page, pagination_parameters)


@blp.route(f"/<{ID}:entry_id>")
class HistoryDetail(MethodView):
    @auth_required(blp)
    @blp.response(200, HistoryEntrySchema)
    @problems(blp, HistoryEntryNotFound)
    def get(self, entry_id: int) -> HistoryEntry:
        """Return one of my history entries"""
        return history.get_entry(user_id=current_user().id, entry_id=entry_id)
