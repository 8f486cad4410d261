"""The waiting room's state in Redis: one event's queue, its admissions, and the gate in
front of holds and bookings.

Per event, all under its hash tag (one slot on a Redis Cluster, so every script below runs
on the event's node and reads that node's clock):

- ``waitroom-queue:{42}``, a sorted set of waiting customers. A join before the sale starts
  gets a random score in [0, 1); a later join ``1 + sequence``, above every random one. So
  the entries made before the start are in a uniformly random order, everyone after them in
  order of joining, and nothing has to happen at the start: position is a rank.
- ``waitroom-admitted:{42}``, a sorted set of admitted customers scored by when their
  admission ends (Unix ms). Past it, the admission has lapsed: the gate refuses it.
- ``waitroom:{42}``, a hash: the join sequence, ``served`` (admissions so far: the serving
  counter), the token bucket of the pacer (``tokens``, ``at``), its current ``rate``
  (admissions per second), ``sold_out`` and the lock wait the pacer last estimated.
- ``waitroom-left:{42}``, a set of customers who left: joining again puts them at the end,
  even before the sale (nobody re-draws a random place).

Only the pacer (services/pacer.py) admits: it moves the first entries of the queue to the
admitted set at the rate its token bucket allows. Time is always Redis' ``TIME``, never an
instance's clock. Every key expires an hour after the event starts (bookings close then).
Joining is one script call; reading an entry (a poll, and the gate of every hold or booking)
is one read-only script in the round trip the request makes anyway (services/admission.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from booking_service.errors import LockUnavailable, QueueRequired, SaleNotStarted
from booking_service.models import Event
from booking_service.redis_clients import REDIS_ERRORS, redis_client, round_trip
from booking_service.services import prechecks
from booking_service.services.snapshots import version_key

# Keys live until an hour after the event's start: bookings close at the start.
KEEP_AFTER_START = timedelta(hours=1)

# Shared head of the scripts: Redis' clock in ms.
_NOW = """
local clock = redis.call('time')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# What one customer's entry looks like, and the queue around it.
#   KEYS: queue, admitted, meta, event version   ARGV: customer
# Returns {now, admitted until or '', rank or -1, depth, rate, sold_out, served, version}.
_READ_TAIL = """
local admitted = redis.call('zscore', KEYS[2], ARGV[1]) or ''
local rank = redis.call('zrank', KEYS[1], ARGV[1])
if not rank then rank = -1 end
local meta = redis.call('hmget', KEYS[3], 'rate', 'sold_out', 'served')
return {now, admitted, rank, redis.call('zcard', KEYS[1]), meta[1] or '', meta[2] or '',
        meta[3] or '', redis.call('get', KEYS[4]) or ''}
"""
READ_SCRIPT = _NOW + _READ_TAIL

# Join: an existing live entry stays as it is (0); else a new one at its place (1).
#   KEYS: queue, admitted, meta, event version, left
#   ARGV: customer, random score, sale start (ms, '' for none), expiry (ms)
# Returns {created} followed by READ's answer.
JOIN_SCRIPT = (
    _NOW
    + """
local who = ARGV[1]
local admitted = tonumber(redis.call('zscore', KEYS[2], who))
local created = 0
if not (admitted and admitted > now) and not redis.call('zscore', KEYS[1], who) then
    local starts = tonumber(ARGV[3])
    local score
    if starts and now < starts and not admitted
            and redis.call('sismember', KEYS[5], who) == 0 then
        score = ARGV[2]
    else
        score = 1 + redis.call('hincrby', KEYS[3], 'seq', 1)
    end
    if admitted then
        redis.call('zrem', KEYS[2], who)  -- lapsed: a new entry, at the end
    end
    redis.call('zadd', KEYS[1], score, who)
    for _, key in ipairs({KEYS[1], KEYS[2], KEYS[3], KEYS[5]}) do
        redis.call('pexpireat', key, ARGV[4])
    end
    created = 1
end
local function read()
"""
    + _READ_TAIL
    + """
end
local answer = read()
table.insert(answer, 1, created)
return answer
"""
)

# Leave: the entry (waiting, admitted or lapsed) goes; joining again goes to the end.
#   KEYS: queue, admitted, left   ARGV: customer, expiry (ms)   Returns 1 if there was one.
LEAVE_SCRIPT = """
local gone = redis.call('zrem', KEYS[1], ARGV[1]) + redis.call('zrem', KEYS[2], ARGV[1])
if gone == 0 then
    return 0
end
redis.call('sadd', KEYS[3], ARGV[1])
redis.call('pexpireat', KEYS[3], ARGV[2])
return 1
"""

# Admit: the pacer's step. A token bucket of at most ``burst`` tokens (one second's worth)
# fills at ``rate`` per second by Redis' clock; each admission takes one. So no window of any
# length admits more than rate x length + burst. A ``served`` counter lower than the pacer last
# saw means Redis failed over to a replica that missed the latest admissions: the bucket starts
# empty again, so the admissions lost with the old primary count against the rate as if made.
#   KEYS: queue, admitted, meta
# Nor does it admit more people than there are free seats for: admissions of the last
# ``fresh`` ms count as customers about to take a seat, so with 20 seats free and 15 admitted
# a moment ago, 5 more get in (those who already took theirs are counted twice: it errs on
# admitting fewer, for a few seconds).
#   ARGV: rate (per s), burst, admission length (ms), expiry (ms), sale start (ms or ''),
#         paused ('1': no admissions, no seats), sold out ('0'/'1'), served last seen (or ''),
#         estimated lock wait (ms, for operators), free seats, fresh (ms)
# Returns {admitted now, served, now, rolled back (0/1)}.
ADMIT_SCRIPT = (
    _NOW
    + """
local meta = redis.call('hmget', KEYS[3], 'tokens', 'at', 'served')
local tokens = tonumber(meta[1]) or 0
local at = tonumber(meta[2]) or now
local served = tonumber(meta[3]) or 0
local seen = tonumber(ARGV[8])
local rolled_back = 0
if seen and served < seen then
    tokens, at, rolled_back = 0, now, 1
end
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local starts = tonumber(ARGV[5])
local before_sale = starts and now < starts
if before_sale then
    tokens = 0
else
    tokens = math.min(burst, tokens + rate * math.max(0, now - at) / 1000)
end
local admitted = 0
if not before_sale and ARGV[6] == '0' then
    local length = tonumber(ARGV[3])
    local fresh = redis.call('zcount', KEYS[2], '(' .. (now + length - tonumber(ARGV[11])), '+inf')
    local room = math.max(0, tonumber(ARGV[10]) - fresh)
    local count = math.min(math.floor(tokens), redis.call('zcard', KEYS[1]), room)
    if count > 0 then
        local popped = redis.call('zpopmin', KEYS[1], count)
        local admitted_until = now + length
        for i = 1, #popped, 2 do
            redis.call('zadd', KEYS[2], admitted_until, popped[i])
        end
        admitted = #popped / 2
        tokens = tokens - admitted
        served = served + admitted
    end
end
redis.call('hset', KEYS[3], 'tokens', tostring(tokens), 'at', now, 'served', served,
           'rate', ARGV[1], 'sold_out', ARGV[7], 'wait_ms', ARGV[9])
for i = 1, 3 do
    redis.call('pexpireat', KEYS[i], ARGV[4])
end
return {admitted, served, now, rolled_back}
"""
)

# The organizer's and operators' numbers.
#   KEYS: queue, admitted, meta   ARGV: admission length (ms)
# Returns {now, depth, active, served, rate, sold_out, wait_ms, admitted in the last minute}.
STATS_SCRIPT = (
    _NOW
    + """
local meta = redis.call('hmget', KEYS[3], 'served', 'rate', 'sold_out', 'wait_ms')
local length = tonumber(ARGV[1])
return {now, redis.call('zcard', KEYS[1]), redis.call('zcount', KEYS[2], '(' .. now, '+inf'),
        meta[1] or '', meta[2] or '', meta[3] or '', meta[4] or '',
        redis.call('zcount', KEYS[2], '(' .. (now - 60000 + length), '+inf')}
"""
)


def queue_key(event_id: int) -> str:
    return f"waitroom-queue:{{{event_id}}}"


def admitted_key(event_id: int) -> str:
    return f"waitroom-admitted:{{{event_id}}}"


def meta_key(event_id: int) -> str:
    return f"waitroom:{{{event_id}}}"


def left_key(event_id: int) -> str:
    return f"waitroom-left:{{{event_id}}}"


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _moment(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def expiry_ms(event: Event) -> int:
    """When the event's queue keys expire: an hour after its start."""
    return _ms(event.start_time + KEEP_AFTER_START)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(value: Any) -> float | None:
    text = _text(value) if value is not None else ""
    return float(text) if text else None


# --- reading an entry ---------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One customer's entry and its queue, as one read script saw them."""

    now: datetime  # Redis' clock
    admitted_until: datetime | None  # in the past: lapsed
    rank: int | None  # 0: next in line; None: not waiting
    depth: int  # entries waiting
    rate: float | None  # admissions per second the pacer last used
    sold_out: bool
    served: int
    event_version: int

    @property
    def admitted(self) -> bool:
        return self.admitted_until is not None and self.admitted_until > self.now

    @property
    def lapsed(self) -> bool:
        return self.admitted_until is not None and not self.admitted

    @property
    def state(self) -> str | None:
        """waiting, admitted, lapsed, sold_out; None without an entry."""
        if self.admitted:
            return "admitted"
        if self.rank is not None:
            return "sold_out" if self.sold_out else "waiting"
        return "lapsed" if self.lapsed else None


def read_command(event_id: int, customer_id: int) -> tuple[Any, ...]:
    """The entry's read, for a caller's round trip (EVAL: a cluster pipeline routes it by
    key, and Redis caches the compiled script, so no NOSCRIPT can fail the round trip)."""
    keys = (queue_key(event_id), admitted_key(event_id), meta_key(event_id), version_key(event_id))
    return ("EVAL", READ_SCRIPT, len(keys), *keys, customer_id)


def seen_from(reply: list[Any]) -> Seen:
    now, admitted, rank, depth, rate, sold_out, served, version = reply
    admitted_ms = _number(admitted)
    return Seen(
        now=_moment(int(now)),
        admitted_until=_moment(int(admitted_ms)) if admitted_ms is not None else None,
        rank=int(rank) if int(rank) >= 0 else None,
        depth=int(depth),
        rate=_number(rate),
        sold_out=_text(sold_out) == "1",
        served=int(_number(served) or 0),
        event_version=int(_number(version) or 0),
    )


def read(event_id: int, customer_id: int) -> Seen:
    """The customer's entry now: one round trip. Raises LockUnavailable without Redis."""
    try:
        (reply,) = round_trip(redis_client.get(), [read_command(event_id, customer_id)])
    except REDIS_ERRORS as error:
        raise LockUnavailable("Redis did not answer; the waiting room cannot be read.") from error
    return seen_from(reply)


# --- the gate -----------------------------------------------------------------------------


def gated(event: Event) -> bool:
    """Whether holding or booking on the event needs the gate (a sale start or a queue)."""
    return event.sale_starts_at is not None or event.waiting_room


def refuse_unless_admitted(event: Event, *, customer_id: int, seen: Seen | None) -> None:
    """Refuse a hold or booking before the sale (409 sale_not_started) or, with the waiting
    room on, without a live admission of this very customer (409 queue_required).

    ``seen``: the customer's entry if the request already read it (services/admission.py);
    else it is read here. Without Redis nobody can be told apart: 503 lock_unavailable.
    """
    if not gated(event):
        return
    if seen is None:
        seen = read(event.id, customer_id)
    if event.sale_starts_at is not None and seen.now < event.sale_starts_at:
        raise SaleNotStarted(
            f"Event {event.id} goes on sale at {event.sale_starts_at.isoformat()}.",
            sale_starts_at=event.sale_starts_at.isoformat(),
        )
    if event.waiting_room and not seen.admitted:
        extensions: dict[str, Any] = {"queue": f"/api/v1/events/{event.id}/queue"}
        if seen.state is not None:
            extensions["state"] = seen.state
        raise QueueRequired(
            f"Event {event.id} sells through its waiting room: join the queue and hold or "
            "book once admitted.",
            **extensions,
        )


def refuse_newcomer(event: Event, *, customer_id: int, seats: int, seen: Seen | None) -> None:
    """Every refusal a hold or booking gets before the lock, in order: the event ended or
    started, the gate (sale start, waiting room), then the seats."""
    prechecks.refuse_unless_open(event, prechecks.now())
    refuse_unless_admitted(event, customer_id=customer_id, seen=seen)
    prechecks.refuse_unless_seats_free(event, seats)


# --- changing an entry --------------------------------------------------------------------


def join(event: Event, customer_id: int) -> tuple[bool, Seen]:
    """Put the customer in the queue unless they have a live entry: (created, entry)."""
    keys = (
        queue_key(event.id),
        admitted_key(event.id),
        meta_key(event.id),
        version_key(event.id),
        left_key(event.id),
    )
    starts = _ms(event.sale_starts_at) if event.sale_starts_at is not None else ""
    # A double in [0, 1): the shuffle of everyone who joins before the start.
    score = repr(random.random())
    try:
        reply = redis_client.get().eval(
            JOIN_SCRIPT, len(keys), *keys, customer_id, score, starts, expiry_ms(event)
        )
    except REDIS_ERRORS as error:
        raise LockUnavailable("Redis did not answer; the queue cannot be joined.") from error
    return bool(int(reply[0])), seen_from(reply[1:])


def leave(event: Event, customer_id: int) -> bool:
    """Take the customer out (waiting, admitted or lapsed); False if they had no entry."""
    keys = (queue_key(event.id), admitted_key(event.id), left_key(event.id))
    try:
        gone = redis_client.get().eval(
            LEAVE_SCRIPT, len(keys), *keys, customer_id, expiry_ms(event)
        )
    except REDIS_ERRORS as error:
        raise LockUnavailable("Redis did not answer; the queue cannot be left.") from error
    return bool(gone)


# --- pacing and statistics ----------------------------------------------------------------


@dataclass(frozen=True)
class Admitted:
    """One pacer step: how many were admitted now, the serving counter after it."""

    count: int
    served: int
    now: datetime
    rolled_back: bool


def admit(
    event: Event,
    *,
    rate: float,
    paused: bool,
    sold_out: bool,
    served_seen: int | None,
    wait_ms: float,
    free_seats: int,
    fresh_seconds: float,
) -> Admitted:
    """Admit the first entries as far as the token bucket and the free seats allow (the
    pacer's step)."""
    keys = (queue_key(event.id), admitted_key(event.id), meta_key(event.id))
    starts = _ms(event.sale_starts_at) if event.sale_starts_at is not None else ""
    reply = redis_client.get().eval(
        ADMIT_SCRIPT,
        len(keys),
        *keys,
        repr(float(rate)),
        repr(max(1.0, float(rate))),  # one second's worth; at least one entry
        event.admission_minutes * 60_000,
        expiry_ms(event),
        starts,
        "1" if paused else "0",
        "1" if sold_out else "0",
        "" if served_seen is None else served_seen,
        f"{wait_ms:.1f}",
        max(0, free_seats),
        int(fresh_seconds * 1000),
    )
    count, served, now, rolled_back = (int(value) for value in reply)
    return Admitted(count, served, _moment(now), bool(rolled_back))


@dataclass(frozen=True)
class QueueStats:
    """An event's queue as the organizer and operators see it."""

    depth: int
    active: int  # admissions not lapsed yet
    admitted: int  # admissions so far (the serving counter)
    admitted_last_minute: int
    rate_per_minute: float | None
    eta_last_seconds: float | None  # when the last entry would be admitted at this rate
    sold_out: bool
    lock_wait_ms: float | None  # the pacer's estimate of admitted customers' lock wait


def stats_command(event: Event) -> tuple[Any, ...]:
    keys = (queue_key(event.id), admitted_key(event.id), meta_key(event.id))
    return ("EVAL", STATS_SCRIPT, len(keys), *keys, event.admission_minutes * 60_000)


def stats_from(reply: list[Any]) -> QueueStats:
    _, depth, active, served, rate, sold_out, wait_ms, last_minute = reply
    per_second = _number(rate)
    depth = int(depth)
    return QueueStats(
        depth=depth,
        active=int(active),
        admitted=int(_number(served) or 0),
        admitted_last_minute=int(last_minute),
        rate_per_minute=per_second * 60 if per_second is not None else None,
        eta_last_seconds=(depth / per_second if per_second else None) if depth else 0.0,
        sold_out=_text(sold_out) == "1",
        lock_wait_ms=_number(wait_ms),
    )


def stats(event: Event) -> QueueStats:
    try:
        (reply,) = round_trip(redis_client.get(), [stats_command(event)])
    except REDIS_ERRORS as error:
        raise LockUnavailable("Redis did not answer; the queue cannot be read.") from error
    return stats_from(reply)
