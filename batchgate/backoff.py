"""Retry timing: exponential backoff with jitter, and Retry-After parsing."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

MAX_RETRY_AFTER_S = 600.0


def backoff_delays(base: float, retries: int) -> list[float]:
    """Nominal delays before each retry: base, 2*base, 4*base, ..."""
    return [base * 2**n for n in range(retries)]


def jittered(delay: float, factor: float, rng: random.Random | None = None) -> float:
    """The delay spread uniformly over delay*(1-factor) .. delay*(1+factor)."""
    if factor <= 0 or delay <= 0:
        return delay
    rng = rng or random
    return delay * (1 + factor * (2 * rng.random() - 1))


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP-date), clamped to 0..600."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
