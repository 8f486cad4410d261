"""Webhook endpoints: an organizer's receivers of signed messages about their events."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from booking_service.api.access import auth_required, current_user
from booking_service.api.blueprint import ID, Blueprint
from booking_service.api.pagination import paginated
from booking_service.api.problems import problems
from booking_service.api.schemas import (
    WebhookCreateSchema,
    WebhookDeliverySchema,
    WebhookMessageSchema,
    WebhookSchema,
    WebhookUpdateSchema,
    WebhookWithSecretSchema,
)
from booking_service.errors import (
    EventNotFound,
    Forbidden,
    OutcomeUnknown,
    ValidationFailed,
    WebhookDeliveryNotFound,
    WebhookNotFound,
    WebhookTargetRefused,
)
from booking_service.models import Role, WebhookDelivery, WebhookEndpoint, WebhookMessage
from booking_service.services import Page, PageRequest, webhooks

blp = Blueprint(
    "webhooks",
    __name__,
    url_prefix="/api/v1/webhooks",
    description=(
        "Webhooks: signed messages about an organizer's events, POSTed to their endpoints. "
        "Each message is written in the transaction of the change it reports and delivered "
        "at least once (the same webhook-id on every retry), in order per endpoint and event, "
        "signed per Standard Webhooks (webhook-id, webhook-timestamp, webhook-signature; "
        "verify with the `standardwebhooks` package). Failed deliveries are retried after "
        "each of WEBHOOK_RETRY_SECONDS (about 3 days), then kept as failed; a 410 answer "
        "disables the endpoint. Bodies: the *WebhookPayload components."
    ),
)


@blp.route("")
class Webhooks(MethodView):
    @auth_required(blp, Role.ORGANIZER)
    @blp.arguments(WebhookCreateSchema)
    @blp.response(201, WebhookWithSecretSchema)
    @problems(blp, ValidationFailed, WebhookTargetRefused, EventNotFound, Forbidden, OutcomeUnknown)
    def post(self, body: dict[str, Any]) -> WebhookEndpoint:
        """Register an endpoint; the answer shows its signing secret, this once (organizers)"""
        return webhooks.create_endpoint(organizer=current_user(), **body)

    @auth_required(blp, Role.ORGANIZER)
    @blp.response(200, WebhookSchema(many=True))
    @paginated(blp)
    def get(self, page: PageRequest) -> Page[WebhookEndpoint]:
        """List my endpoints"""
        return webhooks.list_endpoints(organizer=current_user(), page=page)


@blp.route(f"/<{ID}:webhook_id>")
class WebhookDetail(MethodView):
    @auth_required(blp, Role.ORGANIZER)
    @blp.response(200, WebhookSchema)
    @problems(blp, WebhookNotFound)
    def get(self, webhook_id: int) -> WebhookEndpoint:
        """Return one of my endpoints (without its secret)"""
        return webhooks.get_endpoint(organizer=current_user(), endpoint_id=webhook_id)

    @auth_required(blp, Role.ORGANIZER)
    @blp.arguments(WebhookUpdateSchema)
    @blp.response(200, WebhookSchema)
    @problems(blp, ValidationFailed, WebhookNotFound, WebhookTargetRefused, OutcomeUnknown)
    def patch(self, body: dict[str, Any], webhook_id: int) -> WebhookEndpoint:
        """Change an endpoint's URL or event types, or enable it again"""
        return webhooks.update_endpoint(
            organizer=current_user(), endpoint_id=webhook_id, changes=body
        )

    @auth_required(blp, Role.ORGANIZER)
    @blp.response(204)
    @problems(blp, WebhookNotFound, OutcomeUnknown)
    def delete(self, webhook_id: int) -> None:
        """Delete an endpoint, with its undelivered messages and its delivery log"""
        webhooks.delete_endpoint(organizer=current_user(), endpoint_id=webhook_id)


@blp.route(f"/<{ID}:webhook_id>/rotate-secret")
class RotateSecret(MethodView):
    @auth_required(blp, Role.ORGANIZER)
    @blp.response(200, WebhookWithSecretSchema)
    @problems(blp, WebhookNotFound, OutcomeUnknown)
    def post(self, webhook_id: int) -> WebhookEndpoint:
        """Replace the signing secret at once; the answer shows the new one, this once"""
        return webhooks.rotate_secret(organizer=current_user(), endpoint_id=webhook_id)


@blp.route(f"/<{ID}:webhook_id>/deliveries")
class Deliveries(MethodView):
    @auth_required(blp, Role.ORGANIZER)
    @blp.response(200, WebhookDeliverySchema(many=True))
    @paginated(blp)
    @problems(blp, WebhookNotFound)
    def get(self, webhook_id: int, page: PageRequest) -> Page[WebhookDelivery]:
        """List an endpoint's delivery attempts, newest first: time, result, status, latency
        and the first 1 KB of each answer"""
        return webhooks.list_deliveries(organizer=current_user(), endpoint_id=webhook_id, page=page)


@blp.route(f"/<{ID}:webhook_id>/deliveries/<{ID}:delivery_id>/retry")
class RetryDelivery(MethodView):
    @auth_required(blp, Role.ORGANIZER)
    @blp.response(202, WebhookMessageSchema)
    @problems(blp, WebhookNotFound, WebhookDeliveryNotFound, OutcomeUnknown)
    def post(self, webhook_id: int, delivery_id: int) -> WebhookMessage:
        """Send that attempt's message again, with the same webhook-id, at the relay's next
        round"""
        return webhooks.retry_delivery(
            organizer=current_user(), endpoint_id=webhook_id, delivery_id=delivery_id
        )
