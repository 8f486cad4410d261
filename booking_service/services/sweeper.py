"""The hold sweeper: expires holds past their expiry with no request and no cron to remember.

Every gunicorn worker runs one in a background thread (gunicorn.conf.py starts it), but only
the one holding the lease in Redis sweeps: a lease of HOLD_SWEEP_LEASE_SECONDS, renewed on
every round (every HOLD_SWEEP_INTERVAL_SECONDS). If the sweeping worker or its instance dies,
its lease runs out and another worker takes over at its next round: no hold outlives its
expiry by more than the lease plus the interval (plus the event lock's wait, under which it
is expired). Expiry itself is decided by the database's clock on rows in PostgreSQL, so none
is lost while Redis or every instance is down; the next round catches up. Meanwhile reads
already leave lapsed holds out (Event.seats_held) and whoever takes the event's lock next
reclaims them first.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from typing import Any

from booking_service.errors import DomainError
from booking_service.redis_clients import REDIS_ERRORS, redis_client
from booking_service.services import holds

log = logging.getLogger(__name__)

LEASE_KEY = "hold-sweeper:lease"
# Take the lease if nobody has it, or renew it if it is ours; 1 when we hold it now.
_LEASE_SCRIPT = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then
    redis.call('pexpire', KEYS[1], ARGV[2])
    return 1
end
if holder then
    return 0
end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""
_RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""
EVENTS_PER_ROUND = 100


class HoldSweeper:
    def __init__(self) -> None:
        self.interval = 0.5
        self.lease_seconds = 3.0
        self.holder = "local"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def configure(self, config: dict[str, Any]) -> None:
        self.interval = float(config["HOLD_SWEEP_INTERVAL_SECONDS"])
        self.lease_seconds = float(config["HOLD_SWEEP_LEASE_SECONDS"])
        self.holder = f"{config['INSTANCE_NAME']}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def start(self) -> None:
        """Start sweeping in a daemon thread of this process (0 interval: never)."""
        if self.interval <= 0 or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="hold-sweeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop, and hand the lease back at once so another worker need not wait it out."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + 5)
            self._thread = None
        try:
            client = redis_client.get()
            client.eval(_RELEASE_SCRIPT, 1, LEASE_KEY, self.holder)
        except REDIS_ERRORS:
            pass  # it runs out on its own

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep_once()
            except Exception:  # a sweeper that dies stops expiring holds: log and go on
                log.exception("hold sweep failed")

    def sweep_once(self) -> int:
        """One round: if this process holds the lease, expire lapsed holds; how many."""
        if not self.holds_lease():
            return 0
        expired = 0
        for event_id in holds.events_with_lapsed_holds(limit=EVENTS_PER_ROUND):
            try:
                expired += holds.expire_lapsed(event_id=event_id)
            except DomainError as error:  # lock busy or unreachable, database gone
                log.warning("holds of event %s not expired yet: %s", event_id, error.code)
        if expired:
            log.info("expired %d hold(s)", expired)
        return expired

    def holds_lease(self) -> bool:
        try:
            answer = redis_client.get().eval(
                _LEASE_SCRIPT, 1, LEASE_KEY, self.holder, int(self.lease_seconds * 1000)
            )
        except REDIS_ERRORS:
            return False  # without Redis nobody can be sure to be alone: nobody sweeps
        return bool(answer)


sweeper = HoldSweeper()
