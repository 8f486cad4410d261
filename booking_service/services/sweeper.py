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
from typing import Any

from booking_service.errors import DomainError
from booking_service.services import holds
from booking_service.services.leased_loop import LeasedLoop

log = logging.getLogger(__name__)

LEASE_KEY = "hold-sweeper:lease"
EVENTS_PER_ROUND = 100


class HoldSweeper(LeasedLoop):
    lease_key = LEASE_KEY
    thread_name = "hold-sweeper"
    failure_message = "hold sweep failed"

    def __init__(self) -> None:
        super().__init__(interval=0.5, lease_seconds=3.0)

    def configure(self, config: dict[str, Any]) -> None:
        self.configure_lease(
            config, interval="HOLD_SWEEP_INTERVAL_SECONDS", lease="HOLD_SWEEP_LEASE_SECONDS"
        )

    def run_round(self) -> int:
        return self.sweep_once()

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


sweeper = HoldSweeper()
