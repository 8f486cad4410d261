"""Flat combining across instances: whoever holds an event's lock applies everyone's work.

A group commit within one process batches only that process's requests. Here the
requests of every instance that queue for an event's lock join one queue in Redis, and the
holder of the lock applies them in batches, one database transaction per batch, answering
each waiter through its own reply list. Nothing here knows what an intent means:

- an *intent* is a JSON-serializable dict with a unique string ``"id"`` (uuid4 hex);
- ``apply_batch(intents)`` applies intents in order in one transaction and returns one
  JSON-serializable outcome per intent; it is idempotent per intent id (the caller's database
  journals applied ids with their outcome; an intent marked ``"unqueued": true`` was never
  queued, so nobody else can apply it or ask for it, and it need not be journaled) and, when
  it raises, applied none of them;
- ``lookup(intent_id)`` reads an applied intent's outcome from the database, None if none;
- ``withdraw(intent_id)`` fences an intent off in the database: from then on it is never
  applied (a holder that drains it later answers with the fence and changes nothing); it
  returns the outcome instead when the intent was applied first.

The protocol, per event (all keys carry the event's hash tag, so it runs on Redis Cluster):

1. One SET NX EX on the lock key, exactly as ``EventLocks`` takes it. Won: apply the own
   intent, then one UPDATE_SCRIPT call releases the lock, unless intents are queued, in which
   case it keeps the lock, renews the lease and returns the next batch (see locking.py). So
   an uncontended submit costs what a lock hold costs today: SET NX, the transaction, one
   script call.
2. Lost: RPUSH the intent onto the event's queue and try SET NX once more (the holder may
   have released in between: the lost wake-up). Then BLPOP the own reply list and the lock's
   signal list in short slices; a wake-up on the signal list or a slice's end tries SET NX
   again, and a waiter that wins drains the queue as holder.
3. A holder applies a batch, and with the next script call pushes each waiter's outcome to
   its reply list. A batch that fails is answered ``{"retry_alone": true}``: each of its
   intents is then run by its own submitter in a batch of one, so one bad intent fails only
   itself.
4. A waiter whose deadline passes removes its intent from the queue (LREM). Removed: it asks
   the database to withdraw it (``withdraw``), and LockTimeout is the true answer unless the
   intent was applied after all (Redis failed over to a replica that had not seen a holder
   drain it). Not removed: a holder has it; the waiter waits for the reply until that holder
   is gone, then asks the database (``lookup``) and, if the intent was never applied, runs it
   itself. The journal makes a zombie holder's late commit of the same intent a no-op.

Errors: Redis trouble raises LockUnavailable once ``withdraw`` has made "nothing was written"
true (or returns the outcome, if the intent was applied); a holder that has applied its own
intent only logs it: waiters find their outcomes through the deadline path. ``lookup`` or
``withdraw`` raising (the database cannot be reached) propagates: the caller answers
``503 outcome_unknown``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from booking_service import metrics
from booking_service.locking import (
    UNLOCK_MORE,
    UNLOCK_NOT_HELD,
    EventLocks,
    LockStats,
    intents_key,
    lock_key,
    lock_service_down,
    locks,
    reply_key,
    signal_key,
    stats_key,
    waited_too_long,
)
from booking_service.redis_clients import REDIS_ERRORS, RedisConnection

log = logging.getLogger(__name__)

Intent = dict[str, Any]
Outcome = dict[str, Any]
ApplyBatch = Callable[[list[Intent]], list[Outcome]]
Lookup = Callable[[str], Outcome | None]
Withdraw = Callable[[Intent], Outcome | None]
# Called at "acquired" (lock won, nothing drained yet), "drained" (a batch is about to be
# applied) and "committed" (applied, nobody answered yet), with the intents concerned. For
# tests that stop a holder at each of these points; None in the service.
Hook = Callable[[str, list[Intent]], None]

# A batch is one transaction that every waiter behind it waits for, and the lease is renewed
# only between batches: 64 intents keep a batch's transaction to milliseconds, far inside the
# lease (LOCK_EXPIRE_SECONDS, which also bounds the database statement timeout), and keep the
# wait of the intents queued behind a batch short. Larger batches save little more: the commit
# (one WAL flush) is already shared by 64.
COMBINE_BATCH_MAX = 64
# How long a holder keeps draining before it hands the queue to a waiter (which takes the lock
# on the release's wake-up): its own request waits for every batch it serves, so an endless
# queue would otherwise keep one request (and the lock) for the whole rush. A few batches'
# worth on this hardware; the hand-over costs a wake-up and a SET NX.
HAND_OFF_SECONDS = 0.02
# How long an unread reply lives: a waiter reads its reply within its wait; this only cleans up
# after a waiter that died.
REPLY_EXPIRE_MS = 60_000
# A waiter also wakes this often to try the lock: a holder that died releases nothing, so no
# wake-up comes; its lease running out is noticed within one slice.
WAIT_SLICE_SECONDS = 0.25
# The outcome a holder sends for an intent of a failed batch (reserved: not a caller's key).
RETRY_ALONE = "retry_alone"
# Set (true) on an intent that its own submitter applies without ever queuing it (reserved).
UNQUEUED = "unqueued"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass
class _Submit:
    """One submitted intent and the caller's database functions."""

    event_id: int
    intent: Intent
    apply_batch: ApplyBatch
    lookup: Lookup
    withdraw: Withdraw

    @cached_property
    def payload(self) -> str:
        """The intent as queued (LREM needs the exact bytes); only a contended one is."""
        return json.dumps(self.intent, separators=(",", ":"))

    @property
    def id(self) -> str:
        return str(self.intent["id"])


@dataclass
class Combiner:
    """Submits intents of one kind (``kind`` names the queue: ``seat`` -> seat-intents:{42})."""

    kind: str
    locks: EventLocks = field(default_factory=lambda: locks)
    batch_max: int = COMBINE_BATCH_MAX
    reply_expire_ms: int = REPLY_EXPIRE_MS
    wait_slice_seconds: float = WAIT_SLICE_SECONDS
    hand_off_seconds: float = HAND_OFF_SECONDS
    hook: Hook | None = None

    @property
    def client(self) -> RedisConnection:
        if self.locks.client is None:
            raise RuntimeError("Combiner used before the locks were configured")
        return self.locks.client

    # --- the entry point ---------------------------------------------------------------------

    def submit(
        self,
        event_id: int,
        intent: Intent,
        *,
        apply_batch: ApplyBatch,
        lookup: Lookup,
        withdraw: Withdraw,
    ) -> Outcome:
        """Apply ``intent`` on the event, alone or in a batch with others; its outcome.

        Raises LockTimeout (nothing was written), LockUnavailable (Redis did not answer),
        whatever ``apply_batch`` raised for this intent applied alone, and whatever ``lookup``
        or ``withdraw`` raised when the outcome had to be read from the database.
        """
        job = _Submit(event_id, intent, apply_batch, lookup, withdraw)
        # Applied by its own submitter without ever being queued: nobody else can hold it or
        # ask what became of it, so the caller need not journal it.
        unqueued = [{**intent, UNQUEUED: True}]
        holder = self.locks._holder_id()
        started = time.monotonic()
        try:
            took = self.locks._try_take(holder, event_id)
        except REDIS_ERRORS as error:
            raise lock_service_down() from error
        if not took:
            return self._wait(job)
        # Every lock wait is observed, the uncontended ones too (their wait is one SET NX).
        metrics.lock_wait_seconds.observe(time.monotonic() - started)
        metrics.lock_acquisitions_total.labels(outcome="acquired").inc()
        self._call_hook("acquired", [intent])
        # The own intent first: a holder releases only with an empty queue, so a free lock with
        # intents queued is rare and brief (a waiter between its RPUSH and its second SET NX,
        # or a dead holder's lease), and looking would cost every uncontended submit a round
        # trip. Whatever is queued follows, drained by the release script.
        return self._hold(job, holder, [unqueued])

    # --- holding the lock --------------------------------------------------------------------

    def _hold(
        self,
        job: _Submit,
        holder: str,
        batches: list[list[Intent]],
        own: Outcome | None = None,
    ) -> Outcome:
        """Apply ``batches``, then whatever is queued, until the queue is empty; release.

        ``batches`` contains the own intent unless ``own`` (its outcome) is already known.
        """
        acquired_at = time.monotonic()
        served = 0
        own_error: Exception | None = None
        while True:
            replies: list[tuple[str, str]] = []
            for batch in batches:
                if not batch:
                    continue
                self._call_hook("drained", batch)
                batch_replies, mine = self._apply(job, batch)
                replies += batch_replies
                served += len(batch)
                if isinstance(mine, Exception):
                    own_error = mine
                elif mine is not None:
                    own = mine
            held_for = time.monotonic() - acquired_at
            hold = LockStats(acquired=1, requests=served, hold_us=int(held_for * 1_000_000))
            try:
                # Answers this round's waiters and releases, or keeps the lock with a fresh
                # lease and returns the next batch: one round trip per batch.
                released, queued = self.locks._run_update(
                    job.event_id,
                    hold,
                    holder=holder,
                    queue=intents_key(self.kind, job.event_id),
                    replies=replies,
                    # Past its budget the holder hands the queue to a waiter, so that its own
                    # request is answered and nobody holds the lock for a whole rush.
                    batch_max=self.batch_max if held_for < self.hand_off_seconds else 0,
                    reply_expire_ms=self.reply_expire_ms,
                )
            except REDIS_ERRORS:
                # What was applied is journaled; the lease runs out on its own, and the waiters
                # learn their outcomes from the database after their deadline.
                log.warning("combining release failed: event=%s holder=%s", job.event_id, holder)
                break
            if released == UNLOCK_MORE:
                batches = [[json.loads(item) for item in queued]]
                continue
            if released == UNLOCK_NOT_HELD:
                # The lease ran out mid-drain (the script counted it): stop; what is still
                # queued is the next holder's, and the replies above were sent all the same.
                metrics.lock_lost_total.inc()
                log.warning(
                    "lock lost while combining: event=%s holder=%s held_for=%.3fs",
                    job.event_id,
                    holder,
                    held_for,
                )
            break
        metrics.lock_hold_seconds.observe(time.monotonic() - acquired_at)
        if own_error is not None:
            raise own_error
        if own is None:  # pragma: no cover - the own intent is in the first batch
            raise RuntimeError(f"intent {job.id} was not applied")
        return own

    def _apply(
        self, job: _Submit, batch: list[Intent]
    ) -> tuple[list[tuple[str, str]], Outcome | Exception | None]:
        """Apply one batch: (replies for the other intents, the own outcome or error if the own
        intent was in it)."""
        try:
            outcomes: list[Outcome] = job.apply_batch(batch)
            if len(outcomes) != len(batch):
                raise ValueError(f"apply_batch returned {len(outcomes)} outcomes for {len(batch)}")
        except Exception as error:
            # Rolled back: nothing of the batch was applied. Each intent runs alone, by its own
            # submitter, so one bad intent fails only its own request.
            log.info(
                "combined batch failed: event=%s size=%s error=%r", job.event_id, len(batch), error
            )
            retry: Outcome = {RETRY_ALONE: True}
            replies = [
                (self._reply_key(job, i), json.dumps(retry)) for i in batch if i["id"] != job.id
            ]
            if not any(intent["id"] == job.id for intent in batch):
                return replies, None
            if len(batch) == 1:
                return replies, error
            return replies, self._apply_alone_or_error(job)
        self._call_hook("committed", batch)
        replies = []
        own: Outcome | None = None
        for intent, outcome in zip(batch, outcomes, strict=True):
            if intent["id"] == job.id:
                own = outcome
            else:
                replies.append((self._reply_key(job, intent), json.dumps(outcome)))
        return replies, own

    def _apply_alone_or_error(self, job: _Submit) -> Outcome | Exception:
        try:
            return self._apply_alone(job)
        except Exception as error:
            return error

    def _apply_alone(self, job: _Submit) -> Outcome:
        (outcome,) = job.apply_batch([job.intent])
        return outcome

    # --- waiting -----------------------------------------------------------------------------

    def _wait(self, job: _Submit) -> Outcome:
        """Queue the intent and wait for its outcome, or for the lock to drain the queue."""
        client = self.client
        event_id = job.event_id
        queue = intents_key(self.kind, event_id)
        reply = reply_key(self.kind, event_id, job.id)
        holder = self.locks._holder_id()
        started = time.monotonic()
        deadline = started + self.locks.wait_seconds
        metrics.lock_waiters.inc()
        answer: Outcome | None = None
        took = False
        try:
            pipe = client.pipeline(transaction=False)
            pipe.rpush(queue, job.payload)
            # The lost wake-up: the holder may have released between our SET NX and RPUSH.
            pipe.set(lock_key(event_id), holder, nx=True, ex=self.locks.expire_seconds)
            # Counted in the live lock view's waiters; the holder that answers counts it out.
            pipe.hincrby(stats_key(event_id), "waiters", 1)
            took = bool(pipe.execute()[1])
            while not took:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                popped = client.blpop(
                    [reply, signal_key(event_id)], timeout=min(remaining, self.wait_slice_seconds)
                )
                if popped is not None and _text(popped[0]) == reply:
                    answer = json.loads(popped[1])
                    break
                # A release (ours or a plain python-redis-lock one), or a slice without news.
                took = self.locks._try_take(holder, event_id)
        except REDIS_ERRORS as error:
            self._left_queue(event_id)
            applied = job.withdraw(job.intent)  # queued: a holder may have it
            if applied is not None:
                return applied
            raise lock_service_down() from error
        finally:
            metrics.lock_waiters.dec()
            metrics.lock_wait_seconds.observe(time.monotonic() - started)
        if answer is not None:
            return self._answered(job, answer)
        if took:
            metrics.lock_acquisitions_total.labels(outcome="acquired").inc()
            return self._take_over(job, holder)
        return self._after_deadline(job)

    def _take_over(self, job: _Submit, holder: str) -> Outcome:
        """A waiter won the lock: drain the queue, with the own intent wherever it is."""
        self._call_hook("acquired", [])
        queue = intents_key(self.kind, job.event_id)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.lpop(queue, self.batch_max)
            pipe.lrem(queue, 1, job.payload)  # still queued behind this batch?
            pipe.lpop(self._reply_key(job, job.intent))
            drained_raw, removed, replied = pipe.execute()
        except REDIS_ERRORS as error:
            applied = job.withdraw(job.intent)
            if applied is not None:
                return applied
            raise lock_service_down() from error
        if replied is None:
            self._left_queue(job.event_id)  # no holder answered it (and so counted it out)
        drained = [json.loads(item) for item in drained_raw or []]
        if any(intent["id"] == job.id for intent in drained):
            return self._hold(job, holder, [drained])
        if removed:
            # Queued behind the first batch_max intents: last, in arrival order, and in a
            # batch of its own when theirs is full.
            batches = [drained, [job.intent]] if len(drained) >= self.batch_max else None
            return self._hold(job, holder, batches or [[*drained, job.intent]])
        if replied is not None:
            answer = json.loads(replied)
            if answer.get(RETRY_ALONE):
                return self._hold(job, holder, [[job.intent], drained])
            return self._hold(job, holder, [drained], own=answer)
        # A holder took it and left without answering (its lease ran out): apply it again,
        # first, as it is older than anything still queued. If that holder did commit it,
        # the journal answers with the stored outcome; if it commits later, that is the no-op.
        return self._hold(job, holder, [[job.intent, *drained]])

    def _answered(self, job: _Submit, answer: Outcome) -> Outcome:
        if answer.get(RETRY_ALONE):
            return self._run_alone(job)
        return answer

    def _after_deadline(self, job: _Submit) -> Outcome:
        """The wait is over: take the intent back if nobody has it, else find its outcome."""
        client = self.client
        event_id = job.event_id
        reply = self._reply_key(job, job.intent)
        try:
            if client.lrem(intents_key(self.kind, event_id), 1, job.payload):
                # Nobody took it, by this Redis' account; after a failover the old primary may
                # have handed it to a holder all the same: the database has the last word.
                applied = job.withdraw(job.intent)
                self.locks._record_stats(
                    event_id, LockStats(waiters=-1, timeouts=int(applied is None))
                )
                if applied is not None:
                    return applied
                raise waited_too_long(event_id, self.locks.wait_seconds)
            # A holder drained it. Wait for its answer while it is there: until the lock is
            # gone or someone else's (the holder released, or its lease ran out), or at most
            # a lease and a wait.
            seen = client.get(lock_key(event_id))
            bound = time.monotonic() + self.locks.expire_seconds + self.locks.wait_seconds
            while time.monotonic() < bound:
                popped = client.blpop([reply], timeout=self.wait_slice_seconds)
                if popped is not None:
                    return self._answered(job, json.loads(popped[1]))
                current = client.get(lock_key(event_id))
                if current is None or current != seen:
                    break
            replied = client.lpop(reply)
        except REDIS_ERRORS as error:
            applied = job.withdraw(job.intent)
            if applied is not None:
                return applied
            raise lock_service_down() from error
        if replied is not None:
            return self._answered(job, json.loads(replied))
        self._left_queue(event_id)  # its holder died before answering (and counting it out)
        # The holder left without answering: the database knows. May raise (database
        # unreachable): the caller's 503 outcome_unknown.
        outcome = job.lookup(job.id)
        if outcome is not None:
            return outcome
        return self._run_alone(job)

    def _run_alone(self, job: _Submit) -> Outcome:
        """Take the lock (a fresh wait) and apply the own intent in a batch of its own; the
        queue is drained after it as usual. Nobody else has the intent now."""
        client = self.client
        event_id = job.event_id
        holder = self.locks._holder_id()
        deadline = time.monotonic() + self.locks.wait_seconds
        try:
            while not self.locks._try_take(holder, event_id):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                client.blpop(
                    [signal_key(event_id)], timeout=min(remaining, self.wait_slice_seconds)
                )
            else:
                metrics.lock_acquisitions_total.labels(outcome="acquired").inc()
                self._call_hook("acquired", [job.intent])
                return self._hold(job, holder, [[job.intent]])
        except REDIS_ERRORS as error:
            applied = job.withdraw(job.intent)
            if applied is not None:
                return applied
            raise lock_service_down() from error
        # Gave up; a holder that lost its lease may still commit it late: fence it off first.
        applied = job.withdraw(job.intent)
        if applied is not None:
            return applied
        self.locks._record_stats(event_id, LockStats(timeouts=1))
        raise waited_too_long(event_id, self.locks.wait_seconds)

    # --- helpers -----------------------------------------------------------------------------

    def _left_queue(self, event_id: int) -> None:
        """A queued waiter that no holder answered leaves the live view's waiters itself."""
        self.locks._record_stats(event_id, LockStats(waiters=-1))

    def _reply_key(self, job: _Submit, intent: Intent) -> str:
        return reply_key(self.kind, job.event_id, str(intent["id"]))

    def _call_hook(self, point: str, intents: list[Intent]) -> None:
        if self.hook is not None:
            self.hook(point, intents)
