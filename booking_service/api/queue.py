"""The waiting room of an event: join, poll, leave; the organizer's numbers."""

from __future__ import annotations

from flask.views import MethodView

from booking_service.api.access import auth_required, current_admission, current_user
from booking_service.api.blueprint import ID, Blueprint
from booking_service.api.limits import limit_per_user
from booking_service.api.problems import problems
from booking_service.api.schemas import QueueEntrySchema, QueueStatsSchema
from booking_service.errors import (
    EventEnded,
    EventNotFound,
    EventStarted,
    LockUnavailable,
    NoWaitingRoom,
    QueueEntryNotFound,
)
from booking_service.models import Role
from booking_service.services import queue
from booking_service.services.waitroom import QueueStats

blp = Blueprint(
    "queue",
    __name__,
    url_prefix="/api/v1",
    description=(
        "The waiting room of an event with `waiting_room` on: join its queue, poll your entry "
        "as `Retry-After` says, and once `admitted` hold or book until `admitted_until`. "
        "Everyone who joins before `sale_starts_at` is put in a random order at the start; "
        "later joins follow in order of joining."
    ),
)

RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}}


@blp.route(f"/events/<{ID}:event_id>/queue")
class EventQueue(MethodView):
    @auth_required(blp, Role.CUSTOMER, event_in_path="event_id", queue=True)
    @limit_per_user(blp, setting="RATE_LIMIT_QUEUE_JOIN", scope="queue-join")
    @blp.response(201, QueueEntrySchema, headers=RETRY_AFTER)
    @blp.alt_response(200, schema=QueueEntrySchema, description="Already in the queue.")
    @problems(blp, EventNotFound, NoWaitingRoom, EventStarted, EventEnded, LockUnavailable)
    def post(self, event_id: int) -> tuple[queue.QueueEntry, int, dict[str, str]]:
        """Join the event's queue; joining again answers the same entry (customers)"""
        admitted = current_admission()
        entry, created = queue.join(
            customer=current_user(),
            event_id=event_id,
            event_version=admitted.event_version if admitted else None,
            queue=admitted.queue if admitted else None,
        )
        return entry, 201 if created else 200, {"Retry-After": str(entry.retry_after)}

    @auth_required(blp, Role.CUSTOMER, event_in_path="event_id", queue=True)
    @limit_per_user(blp, setting="RATE_LIMIT_QUEUE_POLL", scope="queue-poll")
    @blp.response(200, QueueEntrySchema, headers=RETRY_AFTER)
    @problems(blp, EventNotFound, NoWaitingRoom, QueueEntryNotFound, LockUnavailable)
    def get(self, event_id: int) -> tuple[queue.QueueEntry, dict[str, str]]:
        """My entry in the event's queue; poll again after Retry-After (customers)"""
        admitted = current_admission()
        entry = queue.poll(
            customer=current_user(),
            event_id=event_id,
            event_version=admitted.event_version if admitted else None,
            queue=admitted.queue if admitted else None,
        )
        return entry, {"Retry-After": str(entry.retry_after)}

    @auth_required(blp, Role.CUSTOMER, event_in_path="event_id")
    @limit_per_user(blp, setting="RATE_LIMIT_QUEUE_JOIN", scope="queue-join")
    @blp.response(204)
    @problems(blp, EventNotFound, NoWaitingRoom, QueueEntryNotFound, LockUnavailable)
    def delete(self, event_id: int) -> None:
        """Leave the event's queue (an admission too); joining again goes to the end"""
        admitted = current_admission()
        queue.leave(
            customer=current_user(),
            event_id=event_id,
            event_version=admitted.event_version if admitted else None,
        )


@blp.route(f"/events/<{ID}:event_id>/queue/stats")
class EventQueueStats(MethodView):
    @auth_required(blp, Role.ORGANIZER, Role.ADMIN)
    @blp.response(200, QueueStatsSchema)
    @problems(blp, EventNotFound, NoWaitingRoom, LockUnavailable)
    def get(self, event_id: int) -> QueueStats:
        """Depth, admissions, active shoppers and rate of the event's queue (its organizer)"""
        return queue.queue_stats(actor=current_user(), event_id=event_id)
