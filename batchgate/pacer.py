"""A thread-safe pacer that spaces requests to a destination at a steady rate.

Every writer in the process shares one pacer per destination. A 429's Retry-After, or a server
saying no requests remain, holds every writer until the given time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Pacer:
    """Hands out request slots no closer together than 1/rate seconds (with a small burst)."""

    def __init__(
        self,
        rate_per_s: float,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / rate_per_s
        self.burst = max(1, burst)
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._next = clock() - self.interval * (self.burst - 1)
        self._hold_until = 0.0

    def acquire(self) -> float:
        """Wait for the next slot; returns how long this caller waited."""
        with self._lock:
            now = self._clock()
            slot = max(self._next, now - self.interval * (self.burst - 1), self._hold_until)
            self._next = slot + self.interval
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    def hold(self, seconds: float) -> None:
        """Give no slot for the next `seconds` (a 429's Retry-After, or an empty quota)."""
        with self._lock:
            until = self._clock() + seconds
            self._hold_until = max(self._hold_until, until)
            self._next = max(self._next, until)


_PACERS: dict[str, Pacer] = {}
_PACERS_LOCK = threading.Lock()


def pacer_for(key: str, rate_per_s: float, burst: int = 1) -> Pacer:
    """The process-wide pacer for one destination (created on first use)."""
    with _PACERS_LOCK:
        pacer = _PACERS.get(key)
        if pacer is None or abs(pacer.interval - 1.0 / rate_per_s) > 1e-9:
            pacer = _PACERS[key] = Pacer(rate_per_s, burst)
        return pacer
