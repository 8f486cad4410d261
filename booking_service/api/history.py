"""The signed-in user's audit history."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from booking_service.api.access import auth_required, current_user
from booking_service.api.blueprint import ID, Blueprint
from booking_service.api.pagination import paginated
from booking_service.api.problems import problems
from booking_service.api.schemas import HistoryEntrySchema, HistoryQuerySchema
from booking_service.errors import HistoryEntryNotFound, ValidationFailed
from booking_service.models import HistoryEntry
from booking_service.services import Page, PageRequest, history

blp = Blueprint("history", __name__, url_prefix="/api/v1/history", description="Audit history")


@blp.route("")
class History(MethodView):
    @auth_required(blp)
    @blp.arguments(HistoryQuerySchema, location="query")
    @blp.response(200, HistoryEntrySchema(many=True))
    @paginated(blp)
    @problems(blp, ValidationFailed)
    def get(self, query: dict[str, Any], page: PageRequest) -> Page[HistoryEntry]:
        """List my history entries, newest first; filter by action, entity_type, since, until"""
        return history.list_entries(
            user_id=current_user().id,
            page=page,
            **query,
        )


@blp.route(f"/<{ID}:entry_id>")
class HistoryDetail(MethodView):
    @auth_required(blp)
    @blp.response(200, HistoryEntrySchema)
    @problems(blp, HistoryEntryNotFound)
    def get(self, entry_id: int) -> HistoryEntry:
        """Return one of my history entries"""
        return history.get_entry(user_id=current_user().id, entry_id=entry_id)
