"""Dead-letter queue content: recommendations per error type and aggregate stats."""

from __future__ import annotations

from collections import Counter
from typing import Any

RECOMMENDATIONS: dict[str, list[str]] = {
    "timeout": [
        "Reduce the content size or heavy assets of this item",
        "Raise batch.attempt_timeout_s if the destination is slow but healthy",
        "Retry once the destination answers quickly again",
    ],
    "rate-limit": [
        "Lower destination.rate_per_minute to your plan's real limit",
        "Check that no other process uses the same API key at the same time",
        "Retry after the rate-limit window has passed",
    ],
    "api-error": [
        "Verify destination API health (this may be a temporary outage)",
        "Check the destination's status page",
        "Retry after confirming the service is restored",
    ],
    "validation": [
        "Review the item's fields against the destination's schema (the message names the field)",
        "Fix the item in the source system and run dry-run again",
        "A duplicate slug must be made unique in the source, or the existing item removed",
    ],
    "auth": [
        "Check the API token: it must be valid and allowed to write to this collection",
        "Rotate the token if it has expired, then retry",
    ],
    "unknown": [
        "Inspect the error and the attempt history",
        "Contact support with the run id and item id",
    ],
}

LABELS = {
    "timeout": "Timeout Errors",
    "rate-limit": "Rate-Limit Errors",
    "api-error": "API Errors",
    "validation": "Validation Errors",
    "auth": "Authorization Errors",
    "unknown": "Unknown Errors",
}


def recommendations(error_type: str) -> list[str]:
    return list(RECOMMENDATIONS.get(error_type, RECOMMENDATIONS["unknown"]))


def aggregate(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts by error type and the most common one."""
    counts = Counter(entry["error_type"] for entry in entries)
    most = counts.most_common(1)[0][0] if counts else None
    return {"total_failed": len(entries), "errors_by_type": dict(counts), "most_common_error": most}
