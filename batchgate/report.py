"""The dry-run report: one set of facts rendered for the terminal, Markdown, JSON and a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchgate.escaping import md_code, md_text, one_line
from batchgate.models import ItemResult

RULE = "━" * 46
TABLE_ROW_LIMIT = 1000


@dataclass(slots=True)
class DryRunReport:
    """Counts and per-item results of one dry-run."""

    run_id: str
    job_name: str
    source: str
    results: list[ItemResult]
    filtered_out: int = 0
    job_ref: str = "JOB.yaml"
    notes: list[str] = field(default_factory=list)
    blocked: list[ItemResult] = field(init=False)
    warnings: list[ItemResult] = field(init=False)

    def __post_init__(self) -> None:
        self.blocked = [r for r in self.results if r.status == "blocked"]
        self.warnings = [r for r in self.results if r.status == "warning"]

    @property
    def total(self) -> int:
        return len(self.results)

    def count(self, status: str) -> int:
        if status == "ready":
            return self.total - len(self.blocked) - len(self.warnings)
        return len(self.blocked if status == "blocked" else self.warnings)

    def percent(self, count: int) -> str:
        return f"{round(100 * count / self.total)}%" if self.total else "0%"

    def next_steps(self) -> list[str]:
        blocked, warned = len(self.blocked), len(self.warnings)
        rerun = f"batchgate dry-run --job {self.job_ref}"
        if blocked:
            return [
                f"Fix {blocked} blocked item{'s' if blocked != 1 else ''} (see details above)",
                f"Re-run dry-run to verify fixes: {rerun}",
                f"Proceed to sample mode once nothing is blocked: batchgate sample --job {self.job_ref}"
                f" (or batchgate pipeline --job {self.job_ref} --allow-blocked to go on without "
                "them)",
            ]
        if warned:
            return [
                f"Review {warned} warning{'s' if warned != 1 else ''} (they do not stop the run)",
                f"Proceed to sample mode: batchgate sample --job {self.job_ref} (3-5 drafts for "
                "review)",
            ]
        if not self.total:
            return ["No item passed the source filter: check source.filter and the source data"]
        return [
            f"All items are ready: proceed to sample mode: batchgate sample --job {self.job_ref} "
            "(3-5 drafts for review)"
        ]

    # --- renderings -------------------------------------------------------------------------

    def as_text(self) -> str:
        lines = [
            "🔍 Dry-Run Validation Report",
            "",
            f"Run ID: {self.run_id}",
            f"Source: {one_line(self.source)}"
            + (f", {self.filtered_out} filtered out by source.filter" if self.filtered_out else ""),
            "",
            f"Total Items Analyzed: {self.total}",
            f"✅ Ready: {self.count('ready')} ({self.percent(self.count('ready'))})",
            f"⚠️  Warnings: {len(self.warnings)} ({self.percent(len(self.warnings))})",
            f"❌ Blocked: {len(self.blocked)} ({self.percent(len(self.blocked))})",
        ]
        if self.blocked:
            lines += ["", RULE, "", "❌ BLOCKED (must fix before proceeding):", ""]
            for n, result in enumerate(self.blocked, 1):
                lines.append(f"{n}. Item ID: {one_line(result.item_id)}" + _title(result))
                for issue in result.issues:
                    if issue.severity == "blocked":
                        lines += [f"   Issue: {one_line(issue.message)}",
                                  f"   Fix: {one_line(issue.fix)}"]  # fmt: skip
                lines.append("")
            lines.pop()
        if self.warnings:
            lines += ["", RULE, "", "⚠️  WARNINGS (can proceed, quality degradation):", ""]
            for n, result in enumerate(self.warnings, 1):
                lines.append(f"{n}. Item ID: {one_line(result.item_id)}" + _title(result))
                for issue in result.issues:
                    lines += [
                        f"   Warning: {one_line(issue.message)}",
                        f"   Impact: {one_line(issue.impact)}",
                        f"   Fix: {one_line(issue.fix)}",
                    ]
                lines.append("")
            lines.pop()
        if self.notes:
            lines += ["", RULE, "", "DESTINATION:"] + [f"- {one_line(note)}" for note in self.notes]
        lines += ["", RULE, "", "NEXT STEPS:"]
        lines += [f"{n}. {step}" for n, step in enumerate(self.next_steps(), 1)]
        return "\n".join(lines) + "\n"

    def as_markdown(self) -> str:
        ready, warned, blocked = self.count("ready"), len(self.warnings), len(self.blocked)
        lines = [
            "# 🔍 Dry-Run Validation Report",
            "",
            f"**Run** `{self.run_id}` · **Job** {md_code(self.job_name)} · **Source** "
            f"{md_text(self.source)}"
            + (f" · {self.filtered_out} filtered out" if self.filtered_out else ""),
            "",
            "| | Items | Share |",
            "|---|---:|---:|",
            f"| Total analyzed | {self.total} | 100% |",
            f"| ✅ Ready | {ready} | {self.percent(ready)} |",
            f"| ⚠️ Warnings | {warned} | {self.percent(warned)} |",
            f"| ❌ Blocked | {blocked} | {self.percent(blocked)} |",
        ]
        if self.blocked:
            lines += [
                "",
                "## ❌ Blocked (must fix before proceeding)",
                "",
                "| # | Item | Issue | Fix |",
                "|---:|---|---|---|",
            ]
            n = 0
            for result in self.blocked:
                for issue in (i for i in result.issues if i.severity == "blocked"):
                    n += 1
                    lines.append(
                        f"| {n} | {_id(result.item_id)} | {_md(issue.message)} | {_md(issue.fix)} |"
                    )
        if self.warnings:
            lines += [
                "",
                "## ⚠️ Warnings (can proceed, quality degradation)",
                "",
                "| # | Item | Warning | Impact | Fix |",
                "|---:|---|---|---|---|",
            ]
            n = 0
            for result in self.warnings:
                for issue in result.issues:
                    n += 1
                    lines.append(
                        f"| {n} | {_id(result.item_id)} | {_md(issue.message)} | "
                        f"{_md(issue.impact or '')} | {_md(issue.fix)} |"
                    )
        if self.notes:
            lines += ["", "## Destination", ""] + [f"- {_md(note)}" for note in self.notes]
        lines += ["", "## Next steps", ""]
        lines += [f"{n}. {step}" for n, step in enumerate(self.next_steps(), 1)]
        return "\n".join(lines) + "\n"

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "mode": "dry-run",
            "total": self.total,
            "ready": self.count("ready"),
            "warnings": len(self.warnings),
            "blocked": len(self.blocked),
            "filtered_out": self.filtered_out,
            "notes": self.notes,
            "items": [result.as_dict() for result in self.results],
        }

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per issue (blocked first), then ready items, capped for the UI."""
        rows: list[dict[str, Any]] = []
        for result in self.blocked + self.warnings:
            for issue in result.issues:
                rows.append(
                    {
                        "item_id": result.item_id,
                        "title": result.title,
                        "status": result.status,
                        "rule": issue.rule,
                        "field": issue.field,
                        "problem": issue.message,
                        "fix": issue.fix,
                        "impact": issue.impact or "",
                    }
                )
        for result in self.results:
            if result.status == "ready":
                rows.append(
                    {
                        "item_id": result.item_id,
                        "title": result.title,
                        "status": "ready",
                        "rule": "",
                        "field": "",
                        "problem": "",
                        "fix": "",
                        "impact": "",
                    }
                )
        return rows[:TABLE_ROW_LIMIT]


def _title(result: ItemResult) -> str:
    return f' ("{one_line(result.title)}")' if result.title else ""


def _md(text: str) -> str:
    """Item text (titles, values quoted in messages) as literal Markdown, fit for a table cell."""
    return md_text(text)


def _id(item_id: str) -> str:
    return md_code(item_id, in_table=True)
