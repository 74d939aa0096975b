"""The dry-run report: one set of facts rendered for the terminal, Markdown, JSON and a table."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from batchgate.escaping import md_code, md_text, one_line
from batchgate.models import Issue, ItemResult

RULE = "━" * 46
TABLE_ROW_LIMIT = 1000
PER_RULE = 20  # problems of each rule the text, Markdown and table show; the JSON has them all


@dataclass(slots=True)
class DryRunReport:
    """Counts and per-item results of one dry-run.

    Built from every result (`results`), or from a run's recorded rows (`from_rows`), which
    keeps only the results shown (the first `PER_RULE` problems of each rule) and the counts."""

    run_id: str
    job_name: str
    source: str
    results: list[ItemResult]
    filtered_out: int = 0
    job_ref: str = "JOB.yaml"
    notes: list[str] = field(default_factory=list)
    per_rule: int = PER_RULE
    totals: dict[str, int] | None = None  # given when `results` holds only the shown items
    problems: Counter[tuple[str, str]] = field(default_factory=Counter)  # (section, rule) -> n
    ready_sample: list[ItemResult] = field(default_factory=list)  # for the table, when streamed
    blocked: list[ItemResult] = field(init=False)
    warnings: list[ItemResult] = field(init=False)

    def __post_init__(self) -> None:
        self.blocked = [r for r in self.results if r.status == "blocked"]
        self.warnings = [r for r in self.results if r.status == "warning"]
        if self.totals is None:
            self.totals = {"total": len(self.results), "blocked": len(self.blocked),
                           "warning": len(self.warnings)}  # fmt: skip
            for result in self.results:
                for key in _sections(result):
                    self.problems[key] += 1
            self.ready_sample = [r for r in self.results if r.status == "ready"]

    @classmethod
    def from_rows(
        cls,
        run_id: str,
        job_name: str,
        source: str,
        rows: Iterable[dict[str, Any]],
        filtered_out: int = 0,
        job_ref: str = "JOB.yaml",
        per_rule: int = PER_RULE,
    ) -> DryRunReport:
        """The report of recorded item rows (Ledger.item_slice), read once: counts of all, the
        first `per_rule` problems of each rule kept."""
        totals = {"total": 0, "blocked": 0, "warning": 0}
        problems: Counter[tuple[str, str]] = Counter()
        shown: list[ItemResult] = []
        ready: list[ItemResult] = []
        for row in rows:
            result = result_of(row)
            totals["total"] += 1
            if result.status == "ready":
                if len(ready) < TABLE_ROW_LIMIT:
                    ready.append(result)
                continue
            totals[result.status] += 1
            keys = _sections(result)
            if any(problems[k] < per_rule for k in keys):
                shown.append(result)
            problems.update(keys)
        return cls(run_id, job_name, source, shown, filtered_out, job_ref, per_rule=per_rule,
                   totals=totals, problems=problems, ready_sample=ready)  # fmt: skip

    @property
    def total(self) -> int:
        return self._totals["total"]

    @property
    def _totals(self) -> dict[str, int]:
        assert self.totals is not None
        return self.totals

    def count(self, status: str) -> int:
        if status == "ready":
            return self.total - self._totals["blocked"] - self._totals["warning"]
        return self._totals["blocked" if status == "blocked" else "warning"]

    def _shown(self, section: str) -> tuple[list[tuple[ItemResult, list[Issue]]], list[str]]:
        """The items of a section with their issues shown (the first `per_rule` of each rule),
        and a line for each rule with more."""
        seen: Counter[str] = Counter()
        out = []
        for result in self.blocked if section == "blocked" else self.warnings:
            issues = []
            for issue in _section_issues(result, section):
                seen[issue.rule] += 1
                if seen[issue.rule] <= self.per_rule:
                    issues.append(issue)
            if issues:
                out.append((result, issues))
        more = [
            f"… and {n - self.per_rule:,} more {rule} problem{'s' if n - self.per_rule != 1 else ''}"
            f" ({n:,} in all; every one is in the JSON report and the ledger)"
            for (sec, rule), n in self.problems.items()
            if sec == section and n > self.per_rule
        ]
        return out, more

    def percent(self, count: int) -> str:
        return f"{round(100 * count / self.total)}%" if self.total else "0%"

    def next_steps(self) -> list[str]:
        blocked, warned = self.count("blocked"), self.count("warning")
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
            f"⚠️  Warnings: {self.count('warning')} ({self.percent(self.count('warning'))})",
            f"❌ Blocked: {self.count('blocked')} ({self.percent(self.count('blocked'))})",
        ]
        if self.blocked:
            lines += ["", RULE, "", "❌ BLOCKED (must fix before proceeding):", ""]
            shown, more = self._shown("blocked")
            for n, (result, issues) in enumerate(shown, 1):
                lines.append(f"{n}. Item ID: {one_line(result.item_id)}" + _title(result))
                for issue in issues:
                    lines += [f"   Issue: {one_line(issue.message)}",
                              f"   Fix: {one_line(issue.fix)}"]  # fmt: skip
                lines.append("")
            lines.pop()
            lines += ["", *more] if more else []
        if self.warnings:
            lines += ["", RULE, "", "⚠️  WARNINGS (can proceed, quality degradation):", ""]
            shown, more = self._shown("warning")
            for n, (result, issues) in enumerate(shown, 1):
                lines.append(f"{n}. Item ID: {one_line(result.item_id)}" + _title(result))
                for issue in issues:
                    lines += [
                        f"   Warning: {one_line(issue.message)}",
                        f"   Impact: {one_line(issue.impact)}",
                        f"   Fix: {one_line(issue.fix)}",
                    ]
                lines.append("")
            lines.pop()
            lines += ["", *more] if more else []
        if self.notes:
            lines += ["", RULE, "", "DESTINATION:"] + [f"- {one_line(note)}" for note in self.notes]
        lines += ["", RULE, "", "NEXT STEPS:"]
        lines += [f"{n}. {step}" for n, step in enumerate(self.next_steps(), 1)]
        return "\n".join(lines) + "\n"

    def as_markdown(self) -> str:
        ready, warned, blocked = self.count("ready"), self.count("warning"), self.count("blocked")
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
            shown, more = self._shown("blocked")
            for result, issues in shown:
                for issue in issues:
                    n += 1
                    lines.append(
                        f"| {n} | {_id(result.item_id)} | {_md(issue.message)} | {_md(issue.fix)} |"
                    )
            lines += ["", *(f"- {_md(line)}" for line in more)] if more else []
        if self.warnings:
            lines += [
                "",
                "## ⚠️ Warnings (can proceed, quality degradation)",
                "",
                "| # | Item | Warning | Impact | Fix |",
                "|---:|---|---|---|---|",
            ]
            n = 0
            shown, more = self._shown("warning")
            for result, issues in shown:
                for issue in issues:
                    n += 1
                    lines.append(
                        f"| {n} | {_id(result.item_id)} | {_md(issue.message)} | "
                        f"{_md(issue.impact or '')} | {_md(issue.fix)} |"
                    )
            lines += ["", *(f"- {_md(line)}" for line in more)] if more else []
        if self.notes:
            lines += ["", "## Destination", ""] + [f"- {_md(note)}" for note in self.notes]
        lines += ["", "## Next steps", ""]
        lines += [f"{n}. {step}" for n, step in enumerate(self.next_steps(), 1)]
        return "\n".join(lines) + "\n"

    def summary(self) -> dict[str, Any]:
        """The JSON report without its items."""
        return {
            "run_id": self.run_id,
            "mode": "dry-run",
            "total": self.total,
            "ready": self.count("ready"),
            "warnings": self.count("warning"),
            "blocked": self.count("blocked"),
            "filtered_out": self.filtered_out,
            "notes": self.notes,
        }

    def as_json(self) -> dict[str, Any]:
        """Every item, when built from every result (a streamed report: `write_json`)."""
        return {**self.summary(), "items": [result.as_dict() for result in self.results]}

    def write_json(self, out: IO[str], rows: Iterable[dict[str, Any]]) -> None:
        """The JSON report with every recorded item (rows read again from the ledger), written
        an item at a time."""
        head = json.dumps(self.summary(), indent=2, ensure_ascii=False, default=str)
        out.write(head[:-2] + ',\n  "items": [')
        for n, row in enumerate(rows):
            item = json.dumps(result_of(row).as_dict(), ensure_ascii=False, default=str)
            out.write(("," if n else "") + "\n    " + item)
        out.write("\n  ]\n}")

    def table_rows(self) -> list[dict[str, Any]]:
        """One row per issue (blocked first), then ready items, capped for the UI."""
        rows: list[dict[str, Any]] = []
        shown = self._shown("blocked")[0] + self._shown("warning")[0]
        for result, _ in shown:
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
        for result in self.ready_sample:
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


def result_of(row: dict[str, Any]) -> ItemResult:
    """An item's result from its ledger row (issues parsed)."""
    issues = [Issue(i["rule"], i["field"], i["severity"], i["message"], i["fix"], i.get("impact"))
              for i in row["issues"]]  # fmt: skip
    return ItemResult(row["item_id"], row["seq"], row["title"] or "", row["location"] or "", issues)


def _section_issues(result: ItemResult, section: str) -> list[Issue]:
    """What a section shows of an item: a blocked item's blocking issues, a warned item's all."""
    if section == "blocked":
        return [i for i in result.issues if i.severity == "blocked"]
    return list(result.issues)


def _sections(result: ItemResult) -> list[tuple[str, str]]:
    if result.status == "ready":
        return []
    return [(result.status, i.rule) for i in _section_issues(result, result.status)]


def _title(result: ItemResult) -> str:
    return f' ("{one_line(result.title)}")' if result.title else ""


def _md(text: str) -> str:
    """Item text (titles, values quoted in messages) as literal Markdown, fit for a table cell."""
    return md_text(text)


def _id(item_id: str) -> str:
    return md_code(item_id, in_table=True)
