"""A pacer for an API that counts requests per fixed window (Notion: 180 per 60 seconds).

Notion's per-connection limit is a budget per fixed 60-second window, "spendable at any pace
within the window" (developers.notion.com/reference/request-limits). The client cannot see where
the server's windows start, so this pacer keeps the budget in every sliding window: then no fixed
window, wherever it starts, sees more. Requests still leave a short interval apart (a burst, not a
flood), a hold stops every caller (a 429's Retry-After, a 5xx backoff), and a 429 that came anyway
(another client spends the same budget) shrinks the budget until successes restore it.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable


class WindowPacer:
    """At most `budget` request slots in any `window_s` seconds, at least `min_interval` apart."""

    def __init__(
        self,
        budget: int,
        window_s: float,
        min_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_budget = self.budget = max(1, int(budget))
        self.window_s = window_s
        self.base_interval = self.min_interval = min_interval
        self._clock, self._sleep = clock, sleep
        self._turn = threading.Lock()  # one caller at a time waits for the next slot
        self._state = threading.Lock()
        self._sent: deque[float] = deque()  # when each slot of the last window was given
        self._hold_until = 0.0

    def acquire(self) -> float:
        """Wait for the next slot; returns how long this caller waited in all."""
        asked = self._clock()
        with self._turn:
            while True:
                now = self._clock()
                slot = self._next_slot(now)
                if slot <= now:
                    break
                self._sleep(slot - now)
            with self._state:
                self._sent.append(now)
        return max(now - asked, 0.0)

    def _next_slot(self, now: float) -> float:
        with self._state:
            while self._sent and self._sent[0] <= now - self.window_s:
                self._sent.popleft()
            slot = self._hold_until
            if self._sent:
                slot = max(slot, self._sent[-1] + self.min_interval)
            if len(self._sent) >= self.budget:  # the oldest slot must leave the window first
                slot = max(slot, self._sent[len(self._sent) - self.budget] + self.window_s)
            return slot

    def hold(self, seconds: float) -> None:
        """Give no slot for the next `seconds`, to any caller."""
        with self._state:
            self._hold_until = max(self._hold_until, self._clock() + seconds)

    def held_for(self) -> float:
        """Seconds until the current hold ends (0 when none)."""
        with self._state:
            return max(self._hold_until - self._clock(), 0.0)

    def slow_down(self, factor: float = 1.5, limit: float = 8.0) -> None:
        """A smaller budget, spent more slowly (a 429 said someone else spends it too, or a
        shared limit binds first), at most `limit` times smaller; never slower than the
        smaller budget's average."""
        with self._state:
            self.budget = max(int(self.budget / factor), int(self.base_budget / limit), 1)
            slowest = self.window_s / self.budget
            self.min_interval = min(max(self.min_interval, 1e-3) * factor, slowest)

    def recover(self, factor: float = 0.98) -> None:
        """After a success, creep back toward the configured budget and interval."""
        if self.budget < self.base_budget or self.min_interval > self.base_interval:
            with self._state:
                self.budget = min(self.budget + 1, self.base_budget)
                self.min_interval = max(self.min_interval * factor, self.base_interval)


_PACERS: dict[tuple[str, int, float, float], WindowPacer] = {}
_LOCK = threading.Lock()


def window_pacer_for(
    base_url: str, token: str, budget: int, window_s: float, min_interval: float = 0.0
) -> WindowPacer:
    """The process-wide pacer of one connection: the limit is per token, so every reader using
    it (every shard, every refresh) shares one budget. The token is hashed, never kept."""
    who = f"{base_url}#{hashlib.sha256(token.encode()).hexdigest()[:16]}"
    key = (who, int(budget), float(window_s), float(min_interval))
    with _LOCK:
        pacer = _PACERS.get(key)
        if pacer is None:
            pacer = _PACERS[key] = WindowPacer(budget, window_s, min_interval)
        return pacer
