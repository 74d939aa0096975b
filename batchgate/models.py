"""The records that flow through a batch: items, the issues found in them, and their results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ready", "warning", "blocked"]


@dataclass(slots=True)
class Item:
    """One source record, typed by the preset's schema."""

    id: str
    seq: int  # position in the source, 0-based
    location: str  # where a person finds it, e.g. "posts.csv line 8"
    data: dict[str, Any]
    type_errors: list[tuple[str, str, str]] = field(default_factory=list)  # (field, message, fix)
    title_field: str | None = "title"  # the field reports name the item by

    @property
    def title(self) -> str:
        value = self.data.get(self.title_field) if self.title_field else None
        return value if isinstance(value, str) else "" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem one rule found in one item."""

    rule: str
    field: str
    severity: Literal["blocked", "warning"]
    message: str
    fix: str
    impact: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "field": self.field,
            "severity": self.severity,
            "message": self.message,
            "fix": self.fix,
            "impact": self.impact,
        }


@dataclass(slots=True)
class ItemResult:
    """An item's validation outcome; its status follows from the worst issue."""

    item_id: str
    seq: int
    title: str
    location: str
    issues: list[Issue]
    status: Status = field(init=False)

    def __post_init__(self) -> None:
        if any(i.severity == "blocked" for i in self.issues):
            self.status = "blocked"
        else:
            self.status = "warning" if self.issues else "ready"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.item_id,
            "title": self.title,
            "severity": self.status,
            "location": self.location,
            "issues": [
                {k: v for k, v in issue.as_dict().items() if k != "severity"}
                for issue in self.issues
            ],
        }
