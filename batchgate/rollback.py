"""Rolling a run back: delete what it created, restore what it updated, a page at a time;
count each outcome and list the first items of each."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from batchgate.config import MASKED, Job, expand_env, parse_job
from batchgate.connectors import NO_SNAPSHOT, UNKNOWN_VERSION, Capabilities, capabilities_of
from batchgate.destinations import Destination
from batchgate.errors import ConfigError, WriteError
from batchgate.ledger import Ledger
from batchgate.report import RULE
from batchgate.secrets import has_hidden_password, keep_templates, put_secret, templates_of


def job_of_run(run: dict[str, Any]) -> Job:
    """The job a run was made with, from the ledger; its secrets come from the environment.

    A secret recorded as `${VAR}` is read from VAR; a masked token falls back to the connector's
    own variable (WEBFLOW_TOKEN, NOTION_TOKEN). A database password is never recorded: a
    destination URL that had one needs --job, and a ledger URL is the one the caller opened.
    """
    origin = f"the job recorded with run {run['run_id']}"
    if not run.get("job_json"):
        raise ConfigError(
            f"run {run['run_id']} has no recorded job settings (it is a {run['mode']} run, or from "
            "an older ledger). Fix: pass --job JOB.yaml."
        )
    raw = json.loads(run["job_json"])
    for section in (raw.get("destination") or {}, raw.get("source") or {}):
        if section.get("token") == MASKED:
            section["token"] = None  # the block falls back to WEBFLOW_TOKEN / NOTION_TOKEN
    if has_hidden_password((raw.get("ledger") or {}).get("url")):
        del raw["ledger"]  # the caller passes on the ledger it read this run from
    if has_hidden_password((raw.get("destination") or {}).get("url")):
        raise ConfigError(
            f"run {run['run_id']} wrote to a database URL with a password, which the ledger does "
            "not keep. Fix: pass --job JOB.yaml (or write destination.url as ${VAR} in the job "
            "file, so runs record the variable's name and the password is read from it)."
        )
    templates = templates_of(raw)
    for (section, key), template in list(templates.items()):
        try:
            put_secret(raw[section], key, expand_env(template, f"{section}.{key}"))
        except ConfigError as exc:
            if section != "ledger":
                raise ConfigError(f"{origin}: {exc} Or pass --job JOB.yaml.") from None
            del raw["ledger"], templates[(section, key)]  # the caller's ledger is used anyway
    return keep_templates(parse_job(raw, origin=origin), templates)


PAGE = 1_000  # written items read at a time (with their entries of the destination map)
PER_KIND = 20  # lines the text shows per outcome (deleted, restored, conflict, failed)
KEEP = 1_000  # entries kept in `outcomes` (the flow's return value); the rest are only counted
KINDS = ("deleted", "restored", "conflict", "failed")


@dataclass
class RollbackReport:
    """Counts per outcome, and a bounded record of the items: `outcomes` holds the first KEEP
    entries (every one of a smaller run), the text the first PER_KIND lines of each outcome.
    Every item's outcome is in the ledger (see `as_text`)."""

    run_id: str
    destination: str
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    shown: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (position, entry)
    already: bool = False
    live_before: int = 0  # items undone that the live site showed before the run
    # a destination with a live site: {dest_id: (live when the rollback started, live after)}
    live: dict[str, tuple[bool, bool]] = field(default_factory=dict)

    def add(self, entry: dict[str, Any]) -> None:
        self.counts[entry["outcome"]] += 1
        position = self.total
        if position <= KEEP:
            self.outcomes.append(entry)
        if self.counts[entry["outcome"]] <= PER_KIND:
            self.shown.append((position, entry))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def rolled_back(self) -> int:
        return self.counts["deleted"] + self.counts["restored"]

    @property
    def failed(self) -> int:
        return self.counts["failed"]

    @property
    def conflicts(self) -> int:
        return self.counts["conflict"]

    def as_text(self) -> str:
        if self.already:
            return (f"↩️  Run {self.run_id}: nothing to roll back (already rolled back, or it wrote "
                    "nothing).\n")  # fmt: skip
        lines = [
            "↩️  Rollback " + ("Complete" if not self.failed + self.conflicts else "Incomplete"),
            "",
            f"Run: {self.run_id}",
            f"Destination: {self.destination}",
            f"Items: {self.rolled_back:,} rolled back, {self.conflicts:,} left alone (changed "
            f"since), {self.failed:,} failed",
            "",
            RULE,
            "",
        ]
        if self.live:
            during, after = (sum(states[k] for states in self.live.values()) for k in (0, 1))
            was = "was" if self.live_before == 1 else "were"
            lines[5:5] = [f"Live site: {self.live_before:,} of these {len(self.live):,} items {was} "
                          f"live before the run, {during:,} when the rollback started, "
                          f"{after:,} now"]  # fmt: skip
        icons = {"failed": "❌", "conflict": "⚠️ "}
        for n, o in self.shown:
            lines.append(f"{n}. {icons.get(o['outcome'], '✅')} {o['item_id']} ({o['dest_id']}): "
                         f"{o['outcome']}" + (f" - {o['error']}" if o.get("error") else ""))  # fmt: skip
        more = [
            f"… and {n - PER_KIND:,} more {kind} ({n:,} in all)"
            for kind in KINDS
            if (n := self.counts[kind]) > PER_KIND
        ]
        if more:
            lines += ["", *more, "", f"Only the first {PER_KIND} items of each outcome are listed; "
                      "the ledger has every one: this run's item rows that were undone are marked "
                      "rolled-back (and the destination map forgot or restored them), those left "
                      "alone or failed are still marked succeeded."]  # fmt: skip
        if self.conflicts:
            lines += ["", "Items marked conflict were changed after this run wrote them; they were "
                      "left as they are so newer work is not destroyed. Roll back the newer run "
                      "first if you mean to undo both."]  # fmt: skip
        if self.failed:
            lines += ["", "Run the rollback again to retry the failed items."]
        return "\n".join(lines) + "\n"


def roll_back(run_id: str, destination: Destination, ledger: Ledger) -> RollbackReport:
    """Undo one run, newest item first, only where the destination still holds what this run
    wrote; anything else is a conflict, left alone and reported with the run that changed it.
    Reads the run a page (PAGE items) at a time, with the destination map's entries of that
    page only, so memory does not grow with the run. Works in the destination's groups: one
    version read, one delete and one restore request (or transaction) per group. Idempotent:
    rolled-back items are not touched again. Call it holding the destination."""
    report = RollbackReport(run_id, destination.key)
    size = max(1, destination.group_size)
    before: int | None = None
    while rows := ledger.written_items_page(run_id, before, PAGE):
        before = rows[-1]["seq"]
        targets = ledger.targets_for_items(destination.key, [row["item_id"] for row in rows])
        for start in range(0, len(rows), size):
            _undo_group(run_id, rows[start : start + size], targets, destination, ledger, report)
    report.already = not report.total
    report.live = dict(getattr(destination, "live_changes", None) or {})  # a live site (Webflow)
    return report


def _undo_group(
    run_id: str,
    rows: list[dict[str, Any]],
    targets: dict[str, Any],
    destination: Destination,
    ledger: Ledger,
    report: RollbackReport,
) -> None:
    results: dict[str, tuple[str, str | None, str | None]] = {}  # item_id: outcome, version, why
    capabilities = capabilities_of(destination)
    try:
        versions = (destination.versions([row["dest_id"] for row in rows])
                    if capabilities.versions else {})  # fmt: skip
    except WriteError as exc:
        versions, failed_read = {}, exc.message
    else:
        failed_read = None
    deletes, restores = [], []
    for row in rows:
        item_id = row["item_id"]
        if failed_read is not None:
            results[item_id] = ("failed", None, failed_read)
            continue
        current = versions.get(row["dest_id"]) if capabilities.versions else UNKNOWN_VERSION
        why = _conflict(run_id, row, targets.get(item_id), current)
        if why is None:
            why = _refused(row, capabilities)
        if why is not None:
            results[item_id] = ("conflict", None, why) if why else (_done(row), None, None)
        elif row["action"] == "created":
            deletes.append(row)
        else:
            restores.append(row)
    if deletes:
        errors = destination.delete_many([row["dest_id"] for row in deletes])
        for row in deletes:
            error = errors.get(row["dest_id"])
            results[row["item_id"]] = ("failed", None, error.message) if error else (
                "deleted", None, None)  # fmt: skip
    if restores:
        answers = destination.restore_many([(row["dest_id"], row["previous"]) for row in restores])
        for row in restores:
            answer = answers.get(row["dest_id"])
            results[row["item_id"]] = (
                ("failed", None, answer.message) if isinstance(answer, WriteError)
                else ("conflict", None, "the restore changed nothing (the item is gone)")
                if answer is None else ("restored", answer, None)
            )  # fmt: skip
    undone = []
    for row in rows:
        outcome, version, why = results[row["item_id"]]
        entry = {"item_id": row["item_id"], "dest_id": row["dest_id"], "action": row["action"],
                 "outcome": outcome}  # fmt: skip
        if why:
            entry["error"] = why
        if outcome in ("deleted", "restored"):
            undone.append((row, version))
            previous = row["previous"] if row["action"] != "created" else None
            report.live_before += bool(isinstance(previous, dict) and previous.get("live"))
        report.add(entry)
    ledger.mark_rolled_back(run_id, undone, destination.key)  # the group's marks, one transaction


def _done(row: dict[str, Any]) -> str:
    return "deleted" if row["action"] == "created" else "restored"


def _conflict(
    run_id: str, row: dict[str, Any], target: dict[str, Any] | None, current: str | None
) -> str | None:
    """Why this item is left alone; "" when there is nothing to do (a created item already
    gone: the goal is met); None when it can be undone."""
    if target is not None and target["run_id"] != run_id:
        return f"changed since by run {target['run_id']}"
    if current == UNKNOWN_VERSION:  # a created item is deleted; an update is judged by _refused
        return None
    if current is None:
        if row["action"] == "created":
            return ""
        return "no longer at the destination, so there is nothing to restore"
    if row.get("version") and current != row["version"]:
        return "changed at the destination since this run wrote it (outside batchgate)"
    if row["action"] != "created" and row["previous"] is None:
        return "no previous version was recorded"
    return None


def _refused(row: dict[str, Any], capabilities: Capabilities) -> str | None:
    """Why an updated item is not restored on a destination that cannot give the guarantee (a
    created one is still deleted); None when it can be undone."""
    if row["action"] == "created":
        return None
    lacks = [n for n in ("versions", "snapshots", "restore") if not getattr(capabilities, n)]
    if row["previous"] == NO_SNAPSHOT and "snapshots" not in lacks:
        lacks.append("snapshots")
    if not lacks:
        return None
    return (f"not restored: the destination declares no {', no '.join(lacks)}, so it cannot "
            "tell whether the item changed since or put back what it held before this run; "
            "restore it by hand if needed")  # fmt: skip
