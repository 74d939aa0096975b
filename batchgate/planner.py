"""Plans a run: which items to write, skip (blocked), hold, or leave alone (unchanged).

A plan is frozen when it is made: every item's validated data and its content hash go into the
ledger (`freeze`), so a sample and the full run after an approval write exactly what was
reviewed. Which of those items still need a write is decided later, while the run holds the
destination, from what the ledger's destination map says at that moment (`plan_run`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Protocol

from batchgate.models import Item, ItemResult
from batchgate.records import META
from batchgate.writer import WorkItem

SLICE = 5000  # items of a frozen plan read from the ledger at a time
RECORD_VERSION = "record-1"  # bump when records change shape, so every item is written again


@dataclass(slots=True)
class Candidate:
    """One item of a frozen plan: what was validated, and its content hash."""

    seq: int
    item_id: str
    title: str
    location: str
    data: dict[str, Any] | None  # None for a blocked item
    content_hash: str | None
    issues: str = "[]"  # JSON; a blocked item's reasons
    blocked: bool = False


@dataclass
class Plan:
    work: list[WorkItem] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # one ledger row per source item
    skipped: int = 0
    unchanged: int = 0
    held: int = 0
    counted: tuple[int, int] | None = None  # (rows, work) of a plan made in slices, lists not kept
    # items the map says are at the destination that it no longer holds: written again
    gone: set[str] = field(default_factory=set)

    @property
    def missing(self) -> int:
        return len(self.gone)

    @property
    def row_count(self) -> int:
        return self.counted[0] if self.counted else len(self.rows)

    @property
    def work_count(self) -> int:
        return self.counted[1] if self.counted else len(self.work)

    def add(self, part: Plan) -> None:
        """Count a slice's plan in (its rows and work are not kept)."""
        rows, work = self.counted or (0, 0)
        self.counted = (rows + len(part.rows), work + len(part.work))
        self.skipped += part.skipped
        self.unchanged += part.unchanged
        self.held += part.held
        self.gone |= part.gone


def record_hash(record: dict[str, Any]) -> str:
    """Hash of what is written: equal means the written copy is still current."""
    blob = freeze({k: v for k, v in record.items() if k != META}).encode()
    return hashlib.sha256(RECORD_VERSION.encode() + blob).hexdigest()[:32]


def content_hash(record: dict[str, Any]) -> str:
    # a source may give a key without its volatile parts (Notion's signed file URLs)
    meta = record.get(META) or {}
    return str(meta.get("content_key") or record_hash(record))


def _tag(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, Decimal):  # a price of a transform's: kept exact, never a float
        return {"$decimal": str(value)}
    raise TypeError(f"cannot freeze {type(value).__name__}")


def _untag(obj: dict[str, Any]) -> Any:
    if len(obj) == 1:
        if "$datetime" in obj:
            return datetime.fromisoformat(obj["$datetime"])
        if "$date" in obj:
            return date.fromisoformat(obj["$date"])
        if "$decimal" in obj:
            return Decimal(obj["$decimal"])
    return obj


def freeze(data: dict[str, Any]) -> str:
    """An item's typed data as JSON that `thaw` turns back into equal values (dates included)."""
    return json.dumps(data, default=_tag, ensure_ascii=False, sort_keys=True)


def thaw(text: str) -> dict[str, Any]:
    return dict(json.loads(text, object_hook=_untag))


def from_source(
    items: list[Item], results: list[ItemResult], records: dict[int, dict[str, Any]]
) -> list[Candidate]:
    """Candidates from a fresh read, its validation and its records (seq -> record, for the
    items that are not blocked): the record is what the plan freezes, hashes and writes."""
    out = []
    for item, result in zip(items, results, strict=True):
        blocked = result.status == "blocked"
        out.append(Candidate(
            seq=item.seq, item_id=item.id, title=item.title, location=item.location,
            data=None if blocked else records[item.seq],
            content_hash=None if blocked else content_hash(records[item.seq]),
            issues=json.dumps([i.as_dict() for i in result.issues]) if blocked else "[]",
            blocked=blocked,
        ))  # fmt: skip
    return out


def frozen_rows(candidates: list[Candidate]) -> dict[int, tuple[str, str]]:
    """What the ledger keeps of each writable candidate: seq -> (content hash, data JSON)."""
    return {
        c.seq: (c.content_hash, freeze(c.data))
        for c in candidates
        if c.data is not None and c.content_hash is not None
    }


def from_frozen(rows: list[dict[str, Any]]) -> list[Candidate]:
    """Candidates from a plan the ledger froze (Ledger.frozen_plan)."""
    return [
        Candidate(
            seq=r["seq"],
            item_id=r["item_id"],
            title=r["title"] or "",
            location=r["location"],
            data=thaw(r["data"]) if r["data"] else None,
            content_hash=r["content_hash"],
            issues=r["issues"] if isinstance(r["issues"], str) else json.dumps(r["issues"]),
            blocked=r["status"] == "blocked",
        )  # fmt: skip
        for r in rows
    ]


class _PlanLedger(Protocol):
    def frozen_plan_slice(self, plan_id: str, after_seq: int, limit: int) -> list[dict]: ...


class FrozenSlices:
    """A frozen plan read back from the ledger a slice at a time, never whole; iterating it
    gives its candidates in source order, and it may be iterated again."""

    def __init__(self, ledger: _PlanLedger, plan_id: str, size: int | None = None) -> None:
        self.ledger, self.plan_id, self.size = ledger, plan_id, size or SLICE

    def slices(self) -> Iterator[list[Candidate]]:
        after = -1
        while rows := self.ledger.frozen_plan_slice(self.plan_id, after, self.size):
            yield from_frozen(rows)
            after = rows[-1]["seq"]

    def __iter__(self) -> Iterator[Candidate]:
        for part in self.slices():
            yield from part


def held_issue(reason: str, fix: str) -> str:
    return json.dumps([{"rule": "held", "field": "", "severity": "blocked", "message": reason,
                        "fix": fix, "impact": None}])  # fmt: skip


def plan_run(
    candidates: list[Candidate],
    targets: dict[str, dict[str, Any]],
    only: set[str] | None = None,
    draft: bool = True,
    held: dict[str, tuple[str, str]] | None = None,
    frozen_at: datetime | None = None,
    review_fix: str = "take it through a new review (batchgate pipeline)",
    gone: set[str] | None = None,
) -> Plan:
    """Blocked items are skipped; items written before with the same content are unchanged;
    items another run's pending review holds (`held`: id -> (reason, fix)) are held.

    For a frozen plan (`frozen_at`), an item another run wrote with other content after the
    freeze is held as changed since review: the reviewed version would destroy newer work.

    Call it while holding the destination: `targets` must be what the ledger says now.
    A run that publishes (`draft=False`) updates in place the items an earlier run left as drafts
    (or whose publish was never confirmed) with the same content, such as an approved sample:
    they go live without a second copy.

    `gone`: item ids the caller found missing at the destination although the map says they
    are there: each one the map counts unchanged is written again (its stale `dest_id` is
    kept: the writer's write-ahead snapshot finds it gone and creates it) and is in `plan.gone`.
    """
    plan, held, gone = Plan(), held or {}, gone or set()
    for c in candidates:
        row = {"seq": c.seq, "item_id": c.item_id, "title": c.title, "location": c.location}
        if only is not None and c.item_id not in only:
            continue
        if c.blocked or c.data is None:
            plan.rows.append({**row, "status": "skipped", "issues": c.issues})
            plan.skipped += 1
            continue
        if c.item_id in held:
            plan.rows.append({**row, "status": "held", "issues": held_issue(*held[c.item_id])})
            plan.held += 1
            continue
        target = targets.get(c.item_id)
        current = (
            target and target["state"] == "written" and target["content_hash"] == c.content_hash
        )
        if current and (draft or not target.get("draft")):
            if c.item_id not in gone:
                plan.rows.append({**row, "status": "unchanged", "dest_id": target["dest_id"]})
                plan.unchanged += 1
                continue
            plan.gone.add(c.item_id)
        if frozen_at is not None and target and not current and _after(target, frozen_at):
            reason = (f"changed since review: run {target['run_id']} wrote another version after "
                      "this plan was frozen")  # fmt: skip
            plan.rows.append({**row, "status": "held", "issues": held_issue(reason, review_fix)})
            plan.held += 1
            continue
        plan.rows.append({**row, "status": "pending", "content_hash": c.content_hash})
        in_flight = bool(target and target["state"] == "intent")
        plan.work.append(WorkItem(
            seq=c.seq, item_id=c.item_id, title=c.title,
            source_url=(c.data.get(META) or {}).get("source_url") or c.location, data=c.data,
            content_hash=str(c.content_hash), dest_id=target["dest_id"] if target else None,
            intent=in_flight,
            write_ahead=json.loads(target["write_ahead"])
            if in_flight and target.get("write_ahead") else None,
            prev_run_id=target["run_id"] if target and not in_flight else None,
        ))  # fmt: skip
    return plan


def _after(target: dict[str, Any], moment: datetime) -> bool:
    when = target.get("updated_at")
    if when is None:
        return False
    utc = lambda d: d if d.tzinfo else d.replace(tzinfo=UTC)  # noqa: E731 - SQLite keeps no zone
    return bool(utc(when) > utc(moment))
