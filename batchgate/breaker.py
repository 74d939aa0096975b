"""Circuit breaker and success thresholds: when to pause, abort, and how a run ended."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Decision = Literal["continue", "pause", "abort"]
Outcome = Literal["complete", "partial-success", "failed"]
THRESHOLD_PRESETS = {"critical": 100.0, "standard": 90.0, "low": 0.0}


@dataclass(frozen=True)
class CircuitBreaker:
    """After each chunk: pause when failures reach pause_at of it, abort when they reach abort_at."""

    pause_at: float = 0.5
    abort_at: float = 0.8

    def decide(self, failed: int, size: int) -> Decision:
        if size <= 0:
            return "continue"
        rate = failed / size
        if rate >= self.abort_at:
            return "abort"
        if rate >= self.pause_at:
            return "pause"
        return "continue"


def threshold_value(threshold: float | str) -> float:
    """A threshold in percent from a number or a preset name."""
    return THRESHOLD_PRESETS[threshold] if isinstance(threshold, str) else float(threshold)


def evaluate(succeeded: int, attempted: int, threshold: float | str) -> Outcome:
    """complete at 100%, partial-success at or above the threshold, else failed.

    The 'low' preset accepts any success at all, as the pattern document describes.
    """
    if attempted == 0 or succeeded == attempted:
        return "complete"
    rate = 100.0 * succeeded / attempted
    if threshold == "low":
        return "partial-success" if succeeded > 0 else "failed"
    return "partial-success" if rate >= threshold_value(threshold) else "failed"
