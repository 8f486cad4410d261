"""The webhook relay: delivers the outbox's messages, signed, in order, at least once.

Every gunicorn worker runs one in a background thread when WEBHOOK_RELAY_ENABLED
(gunicorn.conf.py starts it beside the hold sweeper), but only the one holding the lease in
Redis sends, as the sweeper does (docs/architecture.md, "Webhooks: the outbox and the relay"):

- **one sender at a time**: the lease (WEBHOOK_RELAY_LEASE_SECONDS) is renewed before each
  message is read and sent, and outlasts one send and its record (the timeout plus a
  statement), so while one process sends a message no other can hold the lease;
- **in order per endpoint and event**: a message is sent only when it is the oldest pending
  one of its endpoint and event; a failed attempt holds the ones behind it until it is
  delivered or given up; the groups are sent in parallel (WEBHOOK_RELAY_CONCURRENCY);
- **at least once**: a message is marked delivered only after a 2xx; a relay that dies in
  between leaves it pending, and the next holder sends it again with the same ``webhook-id``;
- **retries** after WEBHOOK_RETRY_SECONDS[n] for the n-th failure; after the last one the
  message is kept as ``failed``. A 410 disables the endpoint (its messages wait, pending, in
  case its owner enables it again).

Each message is rendered when sent: ``{"type", "timestamp", "data"}``, ``data`` by the
API's schema for the resource (``render``, given by the app), and signed per Standard
Webhooks with the endpoint's current secret.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from standardwebhooks import Webhook

from booking_service import metrics
from booking_service.database import db
from booking_service.errors import DomainError
from booking_service.models import MessageStatus
from booking_service.services import webhook_http
from booking_service.services.leased_loop import LeasedLoop

log = logging.getLogger(__name__)

LEASE_KEY = "webhook-relay:lease"
# A round sends at most this many endpoint-and-event groups, this many messages each, so that
# it ends and the next round sees newly due messages of other groups.
GROUPS_PER_ROUND = 200
MESSAGES_PER_GROUP = 50
DEFAULT_RETRY_SECONDS = (60, 300, 1800, 3600, 10800, 21600, 43200, 86400, 86400)

# The oldest pending message of each endpoint and event, due now, of enabled endpoints.
_DUE_GROUPS = text(
    """
    SELECT head.endpoint_id, head.event_id
      FROM (SELECT DISTINCT ON (endpoint_id, event_id) endpoint_id, event_id, next_attempt_at
              FROM webhook_messages WHERE status = 'pending'
             ORDER BY endpoint_id, event_id, id) head
      JOIN webhook_endpoints e ON e.id = head.endpoint_id AND e.enabled
     WHERE head.next_attempt_at <= now()
     ORDER BY head.next_attempt_at
     LIMIT :limit
    """
)
_HEAD = text(
    """
    SELECT m.id, m.type, m.data, m.attempts, m.created_at, e.url, e.secret,
           m.next_attempt_at <= now() AS due
      FROM webhook_messages m JOIN webhook_endpoints e ON e.id = m.endpoint_id AND e.enabled
     WHERE m.endpoint_id = :endpoint_id AND m.event_id = :event_id AND m.status = 'pending'
     ORDER BY m.id
     LIMIT 1
    """
)
# One attempt's record and its message's new state, in one statement (one round trip).
_SETTLE = text(
    """
    WITH settled AS (
        UPDATE webhook_messages
           SET attempts = attempts + 1, status = :status, next_attempt_at = :next_attempt_at,
               delivered_at = CASE WHEN :status = 'delivered' THEN now() END
         WHERE id = :message_id AND status = 'pending'
    )
    INSERT INTO webhook_deliveries (message_id, endpoint_id, attempt, attempted_at, result,
                                    status_code, latency_ms, response_body, error)
    VALUES (:message_id, :endpoint_id, :attempt, :attempted_at, :result, :status_code,
            :latency_ms, :response_body, :error)
    """
)
_DISABLE = text(
    """
    UPDATE webhook_endpoints SET enabled = false, disabled_reason = :reason, updated_at = now()
     WHERE id = :id
    """
)


@dataclass(frozen=True)
class Head:
    """The oldest pending message of an endpoint and event, with what sending it needs."""

    id: int
    type: str
    data: dict[str, Any]
    attempts: int
    created_at: datetime
    url: str
    secret: str
    due: bool

    @property
    def webhook_id(self) -> str:
        return f"msg_{self.id}"  # models.WebhookMessage.webhook_id


def _as_is(type_: str, data: dict[str, Any], occurred_at: datetime) -> dict[str, Any]:
    return data


class WebhookRelay(LeasedLoop):
    lease_key = LEASE_KEY
    thread_name = "webhook-relay"
    failure_message = "webhook relay round failed"  # a relay that dies stops delivering

    def __init__(self) -> None:
        super().__init__(interval=0.5, lease_seconds=30.0)
        self.enabled = True
        self.concurrency = 4
        self.retry_seconds: tuple[float, ...] = DEFAULT_RETRY_SECONDS
        self.render: Callable[[str, dict[str, Any], datetime], dict[str, Any]] = _as_is
        self._pool: ThreadPoolExecutor | None = None

    def configure(
        self,
        config: dict[str, Any],
        *,
        render: Callable[[str, dict[str, Any], datetime], dict[str, Any]] | None = None,
    ) -> None:
        self.enabled = bool(config["WEBHOOK_RELAY_ENABLED"])
        self.configure_lease(
            config, interval="WEBHOOK_RELAY_INTERVAL_SECONDS", lease="WEBHOOK_RELAY_LEASE_SECONDS"
        )
        self.concurrency = int(config["WEBHOOK_RELAY_CONCURRENCY"])
        self.retry_seconds = tuple(config["WEBHOOK_RETRY_SECONDS"])
        if render is not None:
            self.render = render
        webhook_http.settings.allow_http = bool(config["WEBHOOK_ALLOW_HTTP"])
        webhook_http.settings.allow_private = bool(config["WEBHOOK_ALLOW_PRIVATE_TARGETS"])
        webhook_http.settings.timeout = float(config["WEBHOOK_TIMEOUT_SECONDS"])

    def runs_here(self) -> bool:
        return self.enabled and super().runs_here()

    def round_timeout(self) -> float:
        return webhook_http.settings.timeout + 5  # one send in flight finishes

    def after_stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def run_round(self) -> int:
        return self.run_once()

    def run_once(self) -> int:
        """One round: if this process holds the lease, send what is due; attempts made."""
        if not self.holds_lease():
            return 0
        with db.read_transaction() as session:
            groups = [
                tuple(row) for row in session.execute(_DUE_GROUPS, {"limit": GROUPS_PER_ROUND})
            ]
        if not groups:
            return 0
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="webhook-send")
        return sum(self._pool.map(lambda group: self._send_group(*group), groups))

    def _send_group(self, endpoint_id: int, event_id: int) -> int:
        """Send the group's due messages in id order, until one fails; attempts made."""
        attempts = 0
        try:
            while attempts < MESSAGES_PER_GROUP and not self.stopping:
                # The lease first: it then covers reading the head, sending and recording it.
                if not self.holds_lease():
                    break
                head = self._head(endpoint_id, event_id)
                if head is None or not head.due:
                    break
                attempts += 1
                if not self._send(endpoint_id, head):
                    break
        except DomainError as error:  # the database is gone: the next round tries again
            log.warning("webhooks of endpoint %s not sent: %s", endpoint_id, error.code)
        return attempts

    def _head(self, endpoint_id: int, event_id: int) -> Head | None:
        with db.single_statement() as connection:  # one round trip
            row = connection.execute(
                _HEAD, {"endpoint_id": endpoint_id, "event_id": event_id}
            ).first()
        return Head(**row._mapping) if row is not None else None

    def _send(self, endpoint_id: int, head: Head) -> bool:
        """One attempt, recorded; True if delivered."""
        body = self.body(head)
        sent_at = datetime.now(UTC)
        signature = Webhook(head.secret).sign(head.webhook_id, sent_at, body)
        headers = {
            "webhook-id": head.webhook_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signature,
        }
        answer = webhook_http.post(head.url, body, headers)
        metrics.webhook_deliveries_total.labels(result=answer.result).inc()
        metrics.webhook_delivery_seconds.observe(answer.latency_ms / 1000)
        self._record(endpoint_id, head, answer, sent_at)
        return answer.result == "success"

    def body(self, head: Head) -> bytes:
        """The message as sent: the same bytes on every attempt."""
        envelope = {
            "type": head.type,
            "timestamp": head.created_at.isoformat(),
            "data": self.render(head.type, head.data, head.created_at),
        }
        return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()

    def _record(
        self, endpoint_id: int, head: Head, answer: webhook_http.Answer, sent_at: datetime
    ) -> None:
        attempt = head.attempts + 1
        status, next_attempt_at = MessageStatus.PENDING.value, sent_at
        if answer.result == "success":
            status = MessageStatus.DELIVERED.value
        elif answer.result != "gone":
            if attempt > len(self.retry_seconds):
                status = MessageStatus.FAILED.value
            else:
                next_attempt_at = sent_at + timedelta(seconds=self.retry_seconds[attempt - 1])
        settle = {
            "message_id": head.id,
            "endpoint_id": endpoint_id,
            "attempt": attempt,
            "attempted_at": sent_at,
            "result": answer.result,
            "status_code": answer.status_code,
            "latency_ms": answer.latency_ms,
            "response_body": answer.body,
            "error": answer.error,
            "status": status,
            "next_attempt_at": next_attempt_at,
        }
        if answer.result == "gone":
            with db.transaction() as session:
                session.execute(_SETTLE, settle)
                session.execute(_DISABLE, {"id": endpoint_id, "reason": "410 Gone"})
        else:
            with db.single_write() as connection:
                connection.execute(_SETTLE, settle)
        if answer.result == "gone":
            log.warning("webhook endpoint %s answered 410 Gone: disabled", endpoint_id)
        elif status == MessageStatus.FAILED.value:
            log.warning("webhook message %s failed after %d attempts", head.id, attempt)


# The outbox as the scrape sees it (services/relay.py's metrics, docs/architecture.md).
_STATE = text(
    """
    WITH pending AS (
        SELECT m.endpoint_id, m.event_id, m.id, m.created_at, m.next_attempt_at
          FROM webhook_messages m JOIN webhook_endpoints e ON e.id = m.endpoint_id AND e.enabled
         WHERE m.status = 'pending'
    ), heads AS (
        SELECT DISTINCT ON (endpoint_id, event_id) next_attempt_at
          FROM pending ORDER BY endpoint_id, event_id, id
    )
    SELECT (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM pending) AS lag,
           (SELECT coalesce(extract(epoch FROM now() - min(next_attempt_at)), 0)
              FROM heads WHERE next_attempt_at <= now()) AS overdue,
           (SELECT count(*) FROM pending) AS pending,
           (SELECT count(*) FROM webhook_endpoints WHERE NOT enabled) AS disabled
    """
)


@dataclass(frozen=True)
class OutboxState:
    """``lag``: age of the oldest undelivered message (seconds); ``overdue``: how long the
    most overdue attempt has been due; ``pending`` messages; ``disabled`` endpoints."""

    lag: float
    overdue: float
    pending: int
    disabled: int


def outbox_state() -> OutboxState:
    """The outbox now, of enabled endpoints (a disabled one's messages wait for its owner)."""
    with db.read_transaction() as session:
        row = session.execute(_STATE).one()
    return OutboxState(
        lag=float(row.lag),
        overdue=float(row.overdue),
        pending=int(row.pending),
        disabled=int(row.disabled),
    )


relay = WebhookRelay()
