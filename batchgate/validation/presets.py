"""Rule presets: the checks a kind of content gets unless the job file says otherwise."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class RuleSpec:
    """One rule of a preset, before the job file's overrides."""

    name: str
    kind: str
    field: str
    severity: Literal["blocked", "warning"]
    params: dict[str, Any] = field(default_factory=dict)


BLOG = (
    RuleSpec("title_required", "required", "title", "blocked", {"label": "title"}),
    RuleSpec("category_allowed", "category", "category", "blocked"),
    RuleSpec(
        "hero_image_required", "required", "hero_image_url", "blocked", {"label": "hero image"}
    ),
    RuleSpec("slug_format", "slug", "slug", "blocked", {"max_length": 256}),
    RuleSpec("slug_unique", "unique", "slug", "blocked"),
    RuleSpec(
        "hero_aspect_ratio",
        "aspect_ratio",
        "hero_image_url",
        "warning",
        {"ratio": "16:9", "tolerance": 0.05},
    ),
    RuleSpec("title_length", "title_length", "title", "warning", {"max": 100}),
    # what the source could not render into the destination (Notion blocks Webflow cannot keep)
    RuleSpec("notion_lost_content", "lost_content", "lost_blocks", "warning"),
)

PRESETS: dict[str, tuple[RuleSpec, ...]] = {"blog": BLOG, "none": ()}


def builtin(id_field: str = "id") -> tuple[RuleSpec, ...]:
    """Always on, whatever the preset: an item must be identifiable and its cells typed."""
    return (
        RuleSpec("id_required", "id", id_field, "blocked"),
        RuleSpec("id_unique", "unique", id_field, "blocked"),
        RuleSpec("field_type", "field_type", "*", "blocked"),
    )


BUILTIN = builtin()
