"""Rolling a run back: delete what it created, restore what it updated, report each item."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from batchgate.config import MASKED, Job, parse_job
from batchgate.destinations import Destination
from batchgate.errors import ConfigError, WriteError
from batchgate.ledger import Ledger
from batchgate.report import RULE


def job_of_run(run: dict[str, Any]) -> Job:
    """The job a run was made with, from the ledger; masked secrets come from the environment."""
    if not run.get("job_json"):
        raise ConfigError(
            f"run {run['run_id']} has no recorded job settings (it is a {run['mode']} run, or from "
            "an older ledger). Fix: pass --job JOB.yaml."
        )
    raw = json.loads(run["job_json"])
    for section in (raw.get("destination") or {}, raw.get("source") or {}):
        if section.get("token") == MASKED:
            section["token"] = None  # the block falls back to WEBFLOW_TOKEN / NOTION_TOKEN
    return parse_job(raw, origin=f"the job recorded with run {run['run_id']}")


@dataclass
class RollbackReport:
    run_id: str
    destination: str
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    already: bool = False

    @property
    def failed(self) -> int:
        return sum(1 for o in self.outcomes if o["outcome"] == "failed")

    def as_text(self) -> str:
        if self.already:
            return (f"↩️  Run {self.run_id}: nothing to roll back (already rolled back, or it wrote "
                    "nothing).\n")  # fmt: skip
        done = len(self.outcomes) - self.failed
        lines = [
            "↩️  Rollback " + ("Complete" if not self.failed else "Incomplete"),
            "",
            f"Run: {self.run_id}",
            f"Destination: {self.destination}",
            f"Items: {done} rolled back, {self.failed} failed",
            "",
            RULE,
            "",
        ]
        for n, o in enumerate(self.outcomes, 1):
            icon = "✅" if o["outcome"] != "failed" else "❌"
            lines.append(f"{n}. {icon} {o['item_id']} ({o['dest_id']}): {o['outcome']}"
                         + (f" - {o['error']}" if o.get("error") else ""))  # fmt: skip
        if self.failed:
            lines += ["", "Run the rollback again to retry the failed items."]
        return "\n".join(lines) + "\n"


def roll_back(run_id: str, destination: Destination, ledger: Ledger) -> RollbackReport:
    """Undo one run, newest item first. Idempotent: rolled-back items are not touched again."""
    report = RollbackReport(run_id, destination.key)
    rows = ledger.written_items(run_id)
    if not rows:
        report.already = True
        return report
    for row in rows:
        outcome = {"item_id": row["item_id"], "dest_id": row["dest_id"], "action": row["action"]}
        try:
            if row["action"] == "created":
                destination.delete(row["dest_id"])
                outcome["outcome"] = "deleted"
            elif row["previous"] is not None:
                destination.restore(row["dest_id"], row["previous"])
                outcome["outcome"] = "restored"
            else:
                raise WriteError("no previous version recorded", error_type="unknown")
        except WriteError as exc:
            if row["action"] == "created" and exc.status_code == 404:
                outcome["outcome"] = "deleted"  # already gone: the goal is met
            else:
                report.outcomes.append({**outcome, "outcome": "failed", "error": exc.message})
                continue
        ledger.mark_rolled_back(run_id, row["seq"], destination.key, row["item_id"], row["action"])
        report.outcomes.append(outcome)
    return report
