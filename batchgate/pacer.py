"""A thread-safe pacer that spaces requests to a destination at a steady rate.

Every writer in the process shares one pacer per destination. A 429's Retry-After, or a server
saying no requests remain, holds every writer until the given time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Pacer:
    """Hands out request slots at least 1/rate seconds apart, measured between the moments the
    slots were actually given (a late wake-up never lets the next request crowd in behind it)."""

    def __init__(
        self,
        rate_per_s: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = self.base_interval = 1.0 / rate_per_s
        self._clock, self._sleep = clock, sleep
        self._turn = threading.Lock()  # one caller at a time waits for the next slot
        self._hold_lock = threading.Lock()
        self._last = float("-inf")
        self._hold_until = 0.0
        self.stated_limit: int | None = None  # requests/min the API said it allows (if it says)

    def acquire(self) -> float:
        """Wait for the next slot; returns how long this caller waited in all."""
        asked = self._clock()
        with self._turn:
            while True:
                now = self._clock()
                with self._hold_lock:
                    slot = max(self._last + self.interval, self._hold_until)
                if slot <= now:
                    break
                self._sleep(slot - now)
            self._last = self._clock()
        return max(self._last - asked, 0.0)

    def slow_down(self, factor: float = 1.5, limit: float = 8.0) -> None:
        """Space requests further apart (a 429 said we are too fast for the server's real limit,
        e.g. another client shares it), at most `limit` times the configured spacing."""
        with self._hold_lock:
            self.interval = min(self.interval * factor, self.base_interval * limit)

    def recover(self, factor: float = 0.98) -> None:
        """After a success, creep back toward the configured rate."""
        if self.interval > self.base_interval:
            with self._hold_lock:
                self.interval = max(self.interval * factor, self.base_interval)

    def set_rate(self, rate_per_s: float) -> None:
        """A new configured rate (e.g. the limit an API states), keeping holds and history."""
        with self._hold_lock:
            factor = self.interval / self.base_interval
            self.base_interval = 1.0 / rate_per_s
            self.interval = self.base_interval * factor

    def hold(self, seconds: float) -> None:
        """Give no slot for the next `seconds` (a 429's Retry-After, or an empty quota)."""
        with self._hold_lock:
            self._hold_until = max(self._hold_until, self._clock() + seconds)


_PACERS: dict[str, Pacer] = {}
_PACERS_LOCK = threading.Lock()


def pacer_for(key: str, rate_per_s: float) -> Pacer:
    """The process-wide pacer for one key (a destination, or an API token; created on first
    use). A new rate is taken in place, so the writers it is holding stay held."""
    with _PACERS_LOCK:
        pacer = _PACERS.get(key)
        if pacer is None:
            pacer = _PACERS[key] = Pacer(rate_per_s)
        elif abs(pacer.base_interval - 1.0 / rate_per_s) > 1e-9:
            pacer.set_rate(rate_per_s)
        return pacer


def existing_pacer(key: str) -> Pacer | None:
    """The pacer of this key if one was made in this process."""
    with _PACERS_LOCK:
        return _PACERS.get(key)
