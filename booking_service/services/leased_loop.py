"""A background loop that one worker of the whole fleet runs at a time.

Every gunicorn worker starts it (``gunicorn.conf.py``); each round first takes or renews a
lease in Redis, and only the lease's holder does the round's work. A holder that dies leaves
its lease to run out, and the next worker to ask takes over. Without Redis nobody can be sure
to be alone, so nobody works. The hold sweeper, the waiting rooms' pacer and the webhook relay
are such loops.
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from contextlib import suppress
from typing import Any, ClassVar

from booking_service.redis_clients import REDIS_ERRORS, redis_client

log = logging.getLogger(__name__)

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


class LeasedLoop:
    """Run ``run_round`` every ``interval`` seconds in a daemon thread, one holder at a time."""

    lease_key: ClassVar[str]
    thread_name: ClassVar[str]
    # Logged with the traceback when a round raises; the loop goes on.
    failure_message: ClassVar[str]

    def __init__(self, *, interval: float, lease_seconds: float) -> None:
        self.interval = interval
        self.lease_seconds = lease_seconds
        self.holder = "local"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def configure_lease(self, config: dict[str, Any], *, interval: str, lease: str) -> None:
        """Read the interval and lease settings named; a holder id unique to this process."""
        self.interval = float(config[interval])
        self.lease_seconds = float(config[lease])
        self.holder = f"{config['INSTANCE_NAME']}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def runs_here(self) -> bool:
        """Whether this process runs the loop at all (0 interval: never)."""
        return self.interval > 0

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        """Start the loop in a daemon thread of this process, once."""
        if not self.runs_here() or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop, and hand the lease back at once so another worker need not wait it out."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval + self.round_timeout())
            self._thread = None
        self.after_stop()
        with suppress(*REDIS_ERRORS):  # else it runs out on its own
            redis_client.get().eval(_RELEASE_SCRIPT, 1, self.lease_key, self.holder)

    def round_timeout(self) -> float:
        """How long a round may still take once asked to stop."""
        return 5.0

    def after_stop(self) -> None:
        """Release what the rounds kept between them (after the thread ended)."""

    def holds_lease(self) -> bool:
        """Take or renew the lease; whether this process holds it now."""
        try:
            answer = redis_client.get().eval(
                _LEASE_SCRIPT, 1, self.lease_key, self.holder, int(self.lease_seconds * 1000)
            )
        except REDIS_ERRORS:
            return False  # without Redis nobody can be sure to be alone: nobody works
        return bool(answer)

    def run_round(self) -> Any:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_round()
            except Exception:  # a loop that dies stops its work for good: log and go on
                log.exception(self.failure_message)
