"""The full run's final report, for the terminal, Markdown and JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchgate.dlq import LABELS, aggregate
from batchgate.escaping import md_code, md_text, one_line
from batchgate.progress import duration
from batchgate.report import RULE

HEADLINES = {
    "complete": "✅ BATCH COMPLETE",
    "partial-success": "✅ BATCH COMPLETE (Partial Success)",
    "failed": "❌ BATCH FAILED",
    "aborted": "🛑 BATCH ABORTED",
}


def destination_notes(destination: Any) -> list[str]:
    """What a destination did besides writing items, for the run's report: images re-encoded to
    fit a size limit (by how much), referenced items created (Webflow, issue 20)."""
    notes = [f"Image {text}." for text in (getattr(destination, "images_reencoded", None) or {}).values()]
    created = getattr(destination, "references_created", None) or []
    if created:
        notes.append(f"Created in referenced collections (create_missing_references): "
                     f"{', '.join(created)}.")  # fmt: skip
    return notes


@dataclass
class FullReport:
    """Counts, outcome and dead letters of one full run."""

    run_id: str
    status: str  # complete | partial-success | failed | aborted
    total: int
    succeeded: int
    failed: int
    skipped: int
    pending: int
    unchanged: int
    duration_s: float
    threshold: float
    destination: str
    dlq: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    job_ref: str = "JOB.yaml"
    published_failures: int = 0
    held: list[dict[str, Any]] = field(default_factory=list)  # not written on purpose, with why
    missing: int = 0  # the map said they were at the destination, which no longer held them
    notes: list[str] = field(default_factory=list)  # what the destination did besides (images)

    @property
    def attempted(self) -> int:
        return self.succeeded + self.failed + self.pending

    @property
    def success_rate(self) -> float:
        return round(100.0 * self.succeeded / self.attempted, 1) if self.attempted else 100.0

    def as_text(self) -> str:
        share = lambda n: f"{100 * n / self.attempted:.1f}%" if self.attempted else "0%"  # noqa: E731
        lines = [
            HEADLINES[self.status],
            "",
            f"Batch ID: {self.run_id}",
            f"Destination: {self.destination}",
            f"Total Items: {self.total} ({self.skipped} skipped as blocked by validation)",
            f"Successful: {self.succeeded}/{self.attempted} ({share(self.succeeded)})"
            + (f", {self.unchanged} unchanged since an earlier run" if self.unchanged else ""),
            f"Failed: {self.failed} ({share(self.failed)})",
        ]
        if self.missing:
            lines.append(f"Missing at the destination, written again: {self.missing} (the ledger "
                         "had them as written; the destination no longer held them)")  # fmt: skip
        if self.pending:
            lines.append(f"Pending (not attempted): {self.pending}")
        lines += [
            f"Success Rate: {self.success_rate}% "
            + ("(meets" if self.success_rate >= self.threshold else "(below")
            + f" the {self.threshold:g}% threshold)",
            f"Duration: {duration(self.duration_s)}",
        ]
        if self.reason:
            lines += ["", f"Reason: {one_line(self.reason)}"]
        if self.published_failures:
            lines.append(f"Written, not published: {self.published_failures} (the next run "
                         "publishes them)")  # fmt: skip
        if self.notes:
            lines += ["", "DESTINATION:"] + [f"- {one_line(note)}" for note in self.notes]
        if self.held:
            lines += ["", f"⏸️  HELD, NOT WRITTEN ({len(self.held)} items):"]
            lines += [f'- "{one_line(h["title"])}" ({one_line(h["item_id"])}): '
                      f'{one_line(h["reason"])}. Fix: {one_line(h["fix"])}'
                      for h in self.held]  # fmt: skip
        lines += ["", RULE, "", f"✅ SUCCESSFULLY PROCESSED ({self.succeeded} items)"]
        if self.succeeded and self.duration_s:
            lines.append(
                f"Average processing time: {self.duration_s / max(self.succeeded, 1):.2f} seconds per item"
            )
        if self.dlq:
            stats = aggregate(self.dlq)
            lines += ["", RULE, "", "ERROR PATTERNS:", ""]
            for n, (kind, count) in enumerate(stats["errors_by_type"].items(), 1):
                share = 100 * count / stats["total_failed"]
                lines.append(f"{n}. {LABELS.get(kind, kind)}: {count} item(s) ({share:.0f}%)")
            lines.append(f"Most common: {stats['most_common_error']}")
            lines += [
                "",
                RULE,
                "",
                f"❌ FAILED ITEMS ({len(self.dlq)} items - Dead Letter Queue)",
                "",
            ]
            for n, entry in enumerate(self.dlq, 1):
                lines += [
                    f'{n}. Item: "{one_line(entry["item_name"])}" '
                    f"(id: {one_line(entry['item_id'])})",
                    f"   Error: {one_line(entry['message'])}",
                    f"   Type: {entry['error_type']}"
                    + (f", status {entry['status_code']}" if entry.get("status_code") else "")
                    + f", {entry['attempts']} attempt(s)",
                    f"   Recommendation: {entry['recommendations'][0]}",
                    "",
                ]
            lines.pop()
        lines += ["", RULE, "", "NEXT STEPS:"]
        lines += [f"{n}. {step}" for n, step in enumerate(self.next_steps(), 1)]
        return "\n".join(lines) + "\n"

    def next_steps(self) -> list[str]:
        steps = []
        if self.status == "aborted":
            steps.append("Investigate the systemic failure named above (outage, token, network)")
            steps.append(
                f"Run again to resume: batchgate full --job {self.job_ref} (written items are skipped)"
            )
        if self.dlq:
            stats = aggregate(self.dlq)
            kinds = ", ".join(
                f"{LABELS.get(k, k)}: {v}" for k, v in stats["errors_by_type"].items()
            )
            steps.append(
                f"Review {len(self.dlq)} failed items in the dead-letter queue ({kinds}): "
                f"batchgate dlq list --run {self.run_id}"
            )
            steps.append(
                f"Retry them after fixes: batchgate dlq retry --run {self.run_id} "
                "[--error-type TYPE] [--item ID ...]"
            )
            steps.append(f"Undo this run if needed: batchgate rollback {self.run_id}")
        if self.pending and self.status != "aborted":
            steps.append(f"Run again to process the {self.pending} pending items")
        if not steps:
            steps.append("Verify the items in the destination")
        return steps

    def as_markdown(self) -> str:
        rows = [
            ("Status", f"**{self.status}**"),
            ("Total items", self.total),
            ("Succeeded", f"{self.succeeded} ({self.unchanged} unchanged)"),
            ("Failed (DLQ)", self.failed),
            ("Skipped (blocked)", self.skipped),
            ("Pending", self.pending),
            ("Held (not written)", len(self.held)),
            ("Missing at the destination, written again", self.missing),
            ("Success rate", f"{self.success_rate}% (threshold {self.threshold:g}%)"),
            ("Duration", duration(self.duration_s)),
        ]
        lines = [f"# {HEADLINES[self.status]}", "", f"Run `{self.run_id}` · {self.destination}", "",
                 "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]  # fmt: skip
        if self.reason:
            lines += ["", f"**Reason:** {md_text(self.reason)}"]
        if self.dlq:
            lines += ["", "## ❌ Dead-letter queue", "", "| Item | Type | Status | Attempts | Message |",
                      "|---|---|---:|---:|---|"]  # fmt: skip
            for e in self.dlq:
                item, message = md_code(e["item_id"], in_table=True), md_text(e["message"])
                lines.append(f"| {item} | {e['error_type']} | {e.get('status_code') or ''} | "
                             f"{e['attempts']} | {message} |")  # fmt: skip
        lines += ["", "## Next steps", ""] + [
            f"{n}. {s}" for n, s in enumerate(self.next_steps(), 1)
        ]
        return "\n".join(lines) + "\n"

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "mode": "full",
            "status": self.status,
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "skipped": self.skipped,
            "pending": self.pending,
            "unchanged": self.unchanged,
            "missing_at_destination": self.missing,
            "held": [{"item_id": h["item_id"], "reason": h["reason"], "fix": h["fix"]}
                     for h in self.held],
            "success_rate": self.success_rate,
            "duration_s": round(self.duration_s, 3),
            "reason": self.reason,
            "dlq_stats": aggregate(self.dlq),
            "dlq": [
                {
                    "item_id": e["item_id"],
                    "error_type": e["error_type"],
                    "status_code": e.get("status_code"),
                    "attempts": e["attempts"],
                    "message": e["message"],
                }
                for e in self.dlq
            ],
            "notes": self.notes,
        }
