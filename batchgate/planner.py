"""Plans a full run: which items to write, skip (blocked) or leave alone (unchanged)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from batchgate.models import Item, ItemResult
from batchgate.writer import WorkItem

TRANSFORM_VERSION = "blog-1"  # bump when the transform changes, so every item is written again


@dataclass
class Plan:
    work: list[WorkItem] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # one ledger row per source item
    skipped: int = 0
    unchanged: int = 0


def source_hash(data: dict[str, Any]) -> str:
    """Hash of an item's source fields: equal means the written copy is still current."""
    blob = json.dumps([TRANSFORM_VERSION, data], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def plan_run(
    items: list[Item],
    results: list[ItemResult],
    targets: dict[str, dict[str, Any]],
    only: set[str] | None = None,
    draft: bool = True,
) -> Plan:
    """Blocked items are skipped; items written before with the same content are unchanged.

    A run that publishes (`draft=False`) updates in place the items an earlier run left as drafts
    with the same content, such as an approved sample: they go live without a second copy.
    """
    plan = Plan()
    for item, result in zip(items, results, strict=True):
        row = {"seq": item.seq, "item_id": item.id, "title": item.title, "location": item.location}
        if only is not None and item.id not in only:
            continue
        if result.status == "blocked":
            issues = json.dumps([i.as_dict() for i in result.issues])
            plan.rows.append({**row, "status": "skipped", "issues": issues})
            plan.skipped += 1
            continue
        # a source may give a key without its volatile parts (Notion's signed file URLs)
        digest = item.data.get("content_key") or source_hash(item.data)
        target = targets.get(item.id)
        current = target and target["state"] == "written" and target["content_hash"] == digest
        if current and (draft or not target.get("draft")):
            plan.rows.append({**row, "status": "unchanged", "dest_id": target["dest_id"]})
            plan.unchanged += 1
            continue
        plan.rows.append({**row, "status": "pending"})
        plan.work.append(WorkItem(
            seq=item.seq, item_id=item.id, title=item.title,
            source_url=item.data.get("source_url") or item.location, data=item.data,
            content_hash=digest, dest_id=target["dest_id"] if target else None,
            intent=bool(target and target["state"] == "intent"),
        ))  # fmt: skip
    return plan
