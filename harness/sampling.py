"""A thread that takes a sample every few milliseconds while a measurement runs.

The PgBouncer pool sampler and the benchmark's database activity sampler are built on it:
``with Sampler(...) as sampler: <load>``, then read what it kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Self


class PeriodicSampler:
    """Runs ``take`` every ``interval`` seconds in a daemon thread, from entry to exit.

    Subclasses open their connection in ``connected`` (a context manager giving the callable
    that takes one sample) and keep what the samples show. Sampling must never fail the
    measurement it watches: a failed sample is skipped and a failed ``connected`` ends the
    sampling, either way with its error kept in ``error`` beside what was sampled.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def connected(self) -> Any:
        """A context manager that connects and gives the callable taking one sample."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        try:
            with self.connected() as take:
                self._loop(take)
        except Exception as error:  # could not connect: nothing to sample
            self.error = f"{type(error).__name__}: {error}"

    def _loop(self, take: Callable[[], None]) -> None:
        while True:
            try:
                take()
            except Exception as error:  # one bad sample is no reason to stop watching
                self.error = f"{type(error).__name__}: {error}"
            if self._stop.wait(self.interval):
                return
