"""Dead-letter queue content: recommendations per error type and aggregate stats."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any

from batchgate.config import MASKED, expand_env
from batchgate.errors import ConfigError
from batchgate.escaping import csv_cell, one_line
from batchgate.secrets import HIDDEN_PASSWORD, SecretUrl, templates_of

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
        "A value that must be unique at the destination (a slug, a name) and clashes must be "
        "made unique in the source, or the existing item removed",
    ],
    "auth": [
        "Check the API token: it must be valid and allowed to write to this collection",
        "Rotate the token if it has expired, then retry",
    ],
    "sql-constraint": [
        "The database refused the row: a constraint of the table (CHECK, NOT NULL, UNIQUE or "
        "FOREIGN KEY, named in the message) does not hold for this item's values",
        "Fix the value in the source (or the constraint, if the data is right), then run the "
        "dry-run and retry the item",
    ],
    "sql-data": [
        "The database could not store a value of this item in its column (type, length or "
        "range; the message names the column)",
        "Fix the value in the source, or widen the column, then run the dry-run and retry",
    ],
    "database": [
        "The database was locked, unreachable or out of connections: not the item's fault",
        "Check that the database is up and not held by a long transaction, then retry",
    ],
    "transform": [
        "The job's transform could not turn this item into a record (the message says why)",
        "Fix the item or the transform, then run the dry-run again",
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
    "sql-constraint": "Database Constraint Errors",
    "sql-data": "Database Value Errors",
    "database": "Database Unavailable",
    "transform": "Transform Errors",
    "unknown": "Unknown Errors",
}


def recommendations(error_type: str) -> list[str]:
    return list(RECOMMENDATIONS.get(error_type, RECOMMENDATIONS["unknown"]))


def aggregate(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts by error type and the most common one."""
    counts = Counter(entry["error_type"] for entry in entries)
    most = counts.most_common(1)[0][0] if counts else None
    return {"total_failed": len(entries), "errors_by_type": dict(counts), "most_common_error": most}


CAUSES = {
    "timeout": "The destination did not answer in time (slow service or large content)",
    "rate-limit": "The destination kept refusing with 429 Too Many Requests",
    "api-error": "The destination system returned a server error",
    "validation": "The destination refused the item's content (400)",
    "auth": "The destination refused the credentials (401/403)",
    "sql-constraint": "The database refused the row: a table constraint failed",
    "sql-data": "The database could not store a value in its column",
    "database": "The database was locked or unreachable",
    "transform": "The job's transform refused the item",
    "unknown": "An unexpected error; see the attempt history",
}
RULE = "━" * 46


def actions(item_id: str, run_id: str, flags: str = "") -> list[str]:
    return [
        f"✅ Retry: batchgate dlq retry --run {run_id} --item {item_id}{flags}",
        f'⚠️  Skip: batchgate dlq skip {item_id} --run {run_id} --reason "..."{flags}',
        f"🔍 Investigate: batchgate dlq inspect {item_id} --run {run_id}{flags}",
    ]


def render_entry(n: int | None, entry: dict[str, Any], flags: str = "") -> list[str]:
    """One dead letter as in the pattern's FAILED ITEMS DETAILS (n=None: no number, for inspect)."""
    pad = "   " if n is not None else ""
    name = one_line(entry.get("item_name") or entry["item_id"])  # item text: no escape codes
    lines = [f'{f"{n}. " if n is not None else ""}Item: "{name}"']
    lines += [
        f"{pad}ID: {one_line(entry['item_id'])}",
        f"{pad}Run: {entry['run_id']}",
        f"{pad}Source URL: {one_line(entry.get('source_url') or '-')}",
        f"{pad}Error Type: {entry['error_type']}",
        f"{pad}Error: {one_line(entry['message'])}",
    ]
    if entry.get("status_code"):
        lines.append(f"{pad}Status Code: {entry['status_code']}")
    if entry.get("state", "open") != "open":
        lines.append(f"{pad}State: {entry['state']} ({one_line(entry.get('note') or '')})")
    lines.append(f"{pad}Retry Attempts: {entry['attempts']}")
    for attempt in entry.get("history") or []:
        at = str(attempt.get("at", ""))[11:19]
        code = f" {attempt['status_code']}" if attempt.get("status_code") else ""
        lines.append(f"{pad}  - Attempt {attempt['attempt']} ({at}): {attempt['error_type']}"
                     f"{code}: {one_line(attempt['message'])}")  # fmt: skip
    lines += ["", f"{pad}Recommendations:"]
    lines += [f"{pad}  - {r}" for r in entry.get("recommendations") or []]
    lines += ["", f"{pad}Actions Available:"]
    lines += [f"{pad}  {a}" for a in actions(one_line(entry["item_id"]), entry["run_id"], flags)]
    return lines


def render_queue(entries: list[dict[str, Any]], run_id: str | None, flags: str = "") -> str:
    """The pattern's "DEAD LETTER QUEUE - Manual Review Required" view of open dead letters."""
    if not entries:
        where = f" of run {run_id}" if run_id else ""
        return f"✅ The dead-letter queue{where} is empty: nothing needs review.\n"
    runs = sorted({e["run_id"] for e in entries})
    created = min(str(e["created_at"])[:19] for e in entries)
    lines = [
        "❌ DEAD LETTER QUEUE - Manual Review Required",
        "",
        f"Batch ID: {', '.join(runs)}",
        f"Total Failed: {len(entries)}",
        f"Created: {created}",
        "",
        RULE,
        "",
        "ERROR PATTERNS:",
        "",
    ]
    stats = aggregate(entries)
    for n, (kind, count) in enumerate(
        sorted(stats["errors_by_type"].items(), key=lambda kv: -kv[1]), 1
    ):
        codes = sorted({str(e["status_code"]) for e in entries
                        if e["error_type"] == kind and e.get("status_code")})  # fmt: skip
        label = LABELS.get(kind, kind) + (f" ({', '.join(codes)})" if codes else "")
        lines += [
            f"{n}. {label}: {count} item{'s' if count != 1 else ''} "
            f"({100 * count / len(entries):.0f}%)",
            f"   - {CAUSES.get(kind, CAUSES['unknown'])}",
            f"   - Recommendation: {recommendations(kind)[0]}",
            "",
        ]
    lines += [RULE, "", "FAILED ITEMS DETAILS:", ""]
    for n, entry in enumerate(entries, 1):
        lines += render_entry(n, entry, flags) + ["", RULE, ""]
    lines += ["BULK ACTIONS:", ""]
    for run in runs:
        kinds = sorted({e["error_type"] for e in entries if e["run_id"] == run})
        lines += [
            "Retry all failed items:",
            f"  batchgate dlq retry --run {run}{flags}",
            "Retry one error type only:",
            *[f"  batchgate dlq retry --run {run} --error-type {k}{flags}" for k in kinds],
            "Export the dead-letter queue for manual processing:",
            f"  batchgate dlq export --run {run} --format csv -o dlq-{run}.csv{flags}",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


EXPORT_COLUMNS = [
    "run_id", "item_id", "item_name", "source_url", "error_type", "status_code", "message",
    "attempts", "history", "recommendations", "state", "note", "created_at",
]  # fmt: skip


def export_rows(
    entries: list[dict[str, Any]], secrets: list[str], neutralise: bool = True
) -> list[dict[str, Any]]:
    """Flat rows for a file: history as JSON text, recommendations joined; secrets removed; and
    (`neutralise`, for a file a spreadsheet opens) no cell that would run as a formula."""
    rows = []
    for entry in mask_entries(entries, secrets):  # before the history becomes JSON text
        row = {name: entry.get(name) for name in EXPORT_COLUMNS}
        row["history"] = json.dumps(entry.get("history") or [], default=str)
        row["recommendations"] = "; ".join(entry.get("recommendations") or [])
        row["created_at"] = str(entry.get("created_at") or "")
        for key in ("history", *TEXT_FIELDS):
            row[key] = redact(row[key], secrets)
        if neutralise:  # item text such as =HYPERLINK(...) stays text in a spreadsheet
            row = {key: csv_cell(value) for key, value in row.items()}
        rows.append(row)
    return rows


def mask_entries(entries: list[dict[str, Any]], secrets: list[str]) -> list[dict[str, Any]]:
    """The entries as the views show them: every secret masked in every text, history included."""
    masked = []
    for entry in entries:
        entry = {**entry, **{k: redact(entry.get(k), secrets) for k in TEXT_FIELDS}}
        entry["history"] = [{**attempt, "message": redact(attempt.get("message"), secrets)}
                            for attempt in entry.get("history") or []]  # fmt: skip
        masked.append(entry)
    return masked


TEXT_FIELDS = ("message", "note", "source_url", "item_name")


def env_secrets(env: Mapping[str, str]) -> list[str]:
    """Values of environment variables named like secrets (*TOKEN, *SECRET, *PASSWORD)."""
    return [v for k, v in env.items() if k.endswith(("TOKEN", "SECRET", "PASSWORD"))]


def recorded_secrets(job_json: str | None, env: Mapping[str, str]) -> list[str]:
    """The secrets a run's recorded job names as ${VAR}, whatever VAR is called, read from `env`."""
    try:
        raw = json.loads(job_json or "{}")
    except ValueError:
        return []
    found: list[str] = []
    for (_, key), template in templates_of(raw if isinstance(raw, dict) else {}).items():
        try:
            value = expand_env(template, env=env)
        except ConfigError:
            continue  # not set here: nothing of it to mask
        found += SecretUrl(value).secrets() if key == "url" else [value]
    return found


def redact(value: Any, secrets: list[str]) -> Any:
    """A known secret, or anything after `Bearer `, never reaches a log, artifact or export."""
    if not isinstance(value, str):
        return value
    for secret in sorted(set(secrets), key=len, reverse=True):  # a longer secret holds a shorter
        if secret and len(secret) >= 4 and secret not in (MASKED, HIDDEN_PASSWORD):
            value = value.replace(secret, MASKED)
    return re.sub(r"(?i)(bearer\s+)[^\s\"']+", rf"\1{MASKED}", value)
