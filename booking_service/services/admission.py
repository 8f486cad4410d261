"""Admission: what a request needs from Redis before it does anything, in one round trip.

A booking request first resolves its bearer token (sessions.py), counts itself against its
user's rate limit (ratelimit.py) and, to refuse exactly from a worker's snapshot, reads the
event's change counter (snapshots.py). Each is a single-key Redis command; sent together, the
three cost one round trip, during a sold-out storm the only one most requests make. Each key
is its own, so this works on a Redis Cluster too (one round trip per node it touches). A
request on an event's waiting room, or one its gate guards (a hold or a booking), reads the
customer's entry in the same round trip (services/waitroom.py): a read-only script on the
event's keys, run on the user id the token names and thrown away if the token is not live.

The rate limit is counted before the token is proven, on the user id the token names. A
token that turns out not to be live takes its count back, so nobody can use up another user's
budget with forged tokens beyond the moment it takes to answer them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from booking_service.errors import Unauthorized
from booking_service.models import User
from booking_service.ratelimit import Window, limiter, windows
from booking_service.redis_clients import REDIS_ERRORS, redis_client, round_trip
from booking_service.services import sessions, waitroom
from booking_service.services.snapshots import event_snapshots


@dataclass(frozen=True)
class RateLimit:
    """A rate limit to count a request against: the setting's value and its scope."""

    limits: str
    scope: str


@dataclass(frozen=True)
class Admission:
    """A request let in: who it is, its rate-limit verdict, what it learned of the event."""

    user: User
    # Seconds until the exceeded window resets, or None (within the limit, or not counted).
    retry_after: int | None = None
    counted: bool = False  # the rate limit was counted here
    # The event's change counter (snapshots.py); None when not asked for or not known.
    event_version: int | None = None
    # The customer's waiting-room entry (waitroom.py); None when not asked for or not known.
    queue: waitroom.Seen | None = None


def admit(
    *,
    token: str,
    rate_limit: RateLimit | None = None,
    event_id: int | None = None,
    queue: bool = False,
) -> Admission:
    """Resolve the token, count the rate limit and read the event's version together (and,
    with ``queue``, the customer's waiting-room entry on the event).

    Raises Unauthorized for a token that is not live. When Redis does not answer, the token
    is resolved in PostgreSQL and the limit counted in this process, as anywhere else.
    """
    token_hash = sessions.hash_token(token)
    user_id = sessions.user_id_of(token)
    counted: Sequence[Window] = ()
    if rate_limit is not None and user_id is not None and limiter.shared_available():
        counted = windows(rate_limit.limits, rate_limit.scope, f"user:{user_id}")
    commands = [("GET", sessions.session_key(token_hash))]
    if event_id is not None:
        commands.append(event_snapshots.version_command(event_id))
    read_queue = False
    if queue and event_id is not None and user_id is not None:
        commands.append(waitroom.read_command(event_id, user_id))
        read_queue = True
    commands += limiter.commands(counted)
    try:
        replies = round_trip(redis_client.get(), commands)
    except REDIS_ERRORS:
        limiter.shared_failed()
        user = sessions.resolve(token_hash, None, cache_answered=False)
        return _counted_elsewhere(user, rate_limit)
    cached, rest = replies[0], replies[1:]
    version = None
    seen = None
    if event_id is not None:
        version, rest = event_snapshots.version_from(rest[0]), rest[1:]
    if read_queue:
        seen, rest = waitroom.seen_from(rest[0]), rest[1:]
    try:
        user = sessions.resolve(token_hash, cached, cache_answered=True)
    except Unauthorized:
        limiter.uncount(counted)
        raise
    if user.id != user_id or not counted:
        # A token without its user id in front (issued before tokens carried it): count now.
        if counted:
            limiter.uncount(counted)
        # The entry was read for the user the token named: kept only if that is this user.
        mine = seen if user.id == user_id else None
        return _counted_elsewhere(user, rate_limit, event_version=version, queue=mine)
    return Admission(
        user=user,
        retry_after=limiter.result(counted, rest),
        counted=True,
        event_version=version,
        queue=seen,
    )


def _counted_elsewhere(
    user: User,
    rate_limit: RateLimit | None,
    *,
    event_version: int | None = None,
    queue: waitroom.Seen | None = None,
) -> Admission:
    """Count the rate limit on its own round trip (or in this process while Redis is down)."""
    if rate_limit is None:
        return Admission(user=user, event_version=event_version, queue=queue)
    retry_after = limiter.hit(rate_limit.limits, rate_limit.scope, f"user:{user.id}")
    return Admission(
        user=user,
        retry_after=retry_after,
        counted=True,
        event_version=event_version,
        queue=queue,
    )
