"""Validation rules. A rule checks one field of every item and names each problem's fix.

Each rule kind declares its limits as a pydantic model, so a job file's overrides are checked
with the same clear errors as the rest of the job.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from batchgate.images import BlockedURL, ImageProbe, ProbeError
from batchgate.models import Issue, Item
from batchgate.netguard import SETTING

Severity = Literal["blocked", "warning"]


@dataclass
class Context:
    """What rules may consult besides the item: allowed values, the image probe, their results."""

    allowed_categories: list[str] | None = None
    categories_from: str = "the job file (validation.allowed_categories)"
    probe: ImageProbe | None = None
    image_sizes: dict[str, tuple[int, int] | ProbeError] = field(default_factory=dict)


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rule:
    """Base rule: a name, the field it checks, a severity, and text for the fix and the impact."""

    kind: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    impact: ClassVar[str] = "The item goes out with lower quality."

    def __init__(self, name: str, field: str, severity: Severity, params: Params) -> None:
        self.name = name
        self.field = field
        self.severity = severity
        self.params = params

    def prepare(self, items: list[Item], context: Context) -> None:
        """Look at the whole batch first (for cross-item or network checks)."""

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        raise NotImplementedError

    def issue(self, message: str, fix: str, severity: Severity | None = None) -> Issue:
        severity = severity or self.severity
        impact = self.impact if severity == "warning" else None
        return Issue(self.name, self.field, severity, message, fix, impact)


def _where(item: Item, column: str) -> str:
    return f"{item.location}, column '{column}'"


# --- generic rule kinds ------------------------------------------------------------------------


class RequiredParams(Params):
    label: str | None = Field(default=None, description="What the field is, for messages.")


class Required(Rule):
    kind = "required"
    Params = RequiredParams

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        value = item.data.get(self.field)
        if value is None or (isinstance(value, str | list) and not value):
            label = self.params.label  # type: ignore[attr-defined]
            what = f"{label} ({self.field})" if label else f'required field "{self.field}"'
            yield self.issue(f"Missing {what}", f"Set {self.field} in {_where(item, self.field)}.")


class MaxLengthParams(Params):
    max: int = Field(ge=1, description="Largest length allowed.")


class MaxLength(Rule):
    kind = "max_length"
    Params = MaxLengthParams
    impact = "Text may be truncated or wrap badly where it is shown."

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        value = item.data.get(self.field)
        limit = self.params.max  # type: ignore[attr-defined]
        if isinstance(value, str | list) and len(value) > limit:
            yield self.issue(
                f"{self.field} has {len(value)} characters (limit {limit})",
                f"Shorten {self.field} in {_where(item, self.field)} to {limit} characters or fewer.",
            )


class MinLengthParams(Params):
    min: int = Field(ge=1, description="Smallest length allowed.")


class MinLength(Rule):
    kind = "min_length"
    Params = MinLengthParams

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        value = item.data.get(self.field)
        limit = self.params.min  # type: ignore[attr-defined]
        if isinstance(value, str | list) and len(value) < limit:
            yield self.issue(
                f"{self.field} has {len(value)} characters (at least {limit} expected)",
                f"Lengthen {self.field} in {_where(item, self.field)} to {limit} or more.",
            )


class PatternParams(Params):
    regex: str = Field(description="Regular expression the whole value must match.")
    hint: str | None = Field(default=None, description="What a good value looks like.")


class Pattern(Rule):
    kind = "pattern"
    Params = PatternParams

    def __init__(self, name: str, field: str, severity: Severity, params: Params) -> None:
        super().__init__(name, field, severity, params)
        self._regex = re.compile(params.regex)  # type: ignore[attr-defined]

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        value = item.data.get(self.field)
        if isinstance(value, str) and value and not self._regex.fullmatch(value):
            hint = self.params.hint or f"match {self._regex.pattern}"  # type: ignore[attr-defined]
            yield self.issue(
                f"{self.field} {value!r} does not {hint}",
                f"Change {self.field} in {_where(item, self.field)} to {hint}.",
            )


class AllowedValuesParams(Params):
    values: list[str] = Field(min_length=1, description="Values accepted.")


class AllowedValues(Rule):
    kind = "allowed_values"
    Params = AllowedValuesParams

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        value = item.data.get(self.field)
        values = self.params.values  # type: ignore[attr-defined]
        if value is not None and str(value) not in values:
            yield self.issue(
                f"{self.field} {value!r} is not one of: {', '.join(values)}",
                f"Set {self.field} in {_where(item, self.field)} to one of: {', '.join(values)}.",
            )


class Unique(Rule):
    kind = "unique"

    def prepare(self, items: list[Item], context: Context) -> None:
        owners: dict[Any, list[str]] = defaultdict(list)
        for item in items:
            value = item.data.get(self.field)
            if value is not None and value != "":
                owners[value].append(item.id)
        self._shared = {value: ids for value, ids in owners.items() if len(ids) > 1}

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        value = item.data.get(self.field)
        ids = self._shared.get(value) if value is not None and value != "" else None
        if ids:
            others = ", ".join(i for i in ids if i != item.id) or item.id
            yield self.issue(
                f"{self.field} {value!r} is also used by item(s) {others}",
                f"Give each of these items its own {self.field}, e.g. '{value}-{len(ids)}' "
                f"for one of them ({_where(item, self.field)}).",
            )


# --- blog rule kinds ------------------------------------------------------------------------


class SlugParams(Params):
    max_length: int = Field(default=256, ge=1, description="Longest slug allowed.")


_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def slugify(text: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", text.lower()))[:80].strip("-") or "post"


class SlugFormat(Rule):
    kind = "slug"
    Params = SlugParams

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        slug = item.data.get(self.field)
        limit = self.params.max_length  # type: ignore[attr-defined]
        suggestion = slugify(item.title or item.id)
        where = _where(item, self.field)
        if not slug:
            yield self.issue("Slug is empty", f"Set slug in {where}, e.g. '{suggestion}'.")
        elif len(slug) > limit:
            yield self.issue(
                f"Slug has {len(slug)} characters (limit {limit})",
                f"Shorten the slug in {where} to {limit} characters, e.g. '{suggestion}'.",
            )
        elif not _SLUG.fullmatch(slug):
            fixed = slugify(slug)
            yield self.issue(
                f"Slug {slug!r} is not lowercase words joined by hyphens",
                f"Change the slug in {where} to '{fixed}'.",
            )


class Category(Rule):
    kind = "category"

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        value = item.data.get(self.field)
        allowed = context.allowed_categories
        where = _where(item, self.field)
        choices = f" to one of: {', '.join(allowed)}" if allowed else ""
        if not value:
            yield self.issue(
                f'Missing required field "{self.field}"', f"Set {self.field} in {where}{choices}."
            )
        elif allowed is not None and value not in allowed:
            yield self.issue(
                f"Category {value!r} not found in the destination (allowed, from "
                f"{context.categories_from}: {', '.join(allowed)})",
                f"Create the category {value!r} in the destination (or add it to "
                f"validation.allowed_categories), or change {where}{choices}.",
            )


class AspectParams(Params):
    ratio: str = Field(default="16:9", pattern=r"^\d+(\.\d+)?:\d+(\.\d+)?$", description="W:H.")
    tolerance: float = Field(default=0.05, ge=0, description="Largest difference of W/H allowed.")
    width_field: str = Field(default="hero_width", description="Column with the width, if any.")
    height_field: str = Field(default="hero_height", description="Column with the height, if any.")

    @field_validator("ratio")
    @classmethod
    def _no_zero_side(cls, ratio: str) -> str:
        if any(float(side) == 0 for side in ratio.split(":")):
            raise ValueError("both sides of the ratio must be above 0, e.g. 16:9")
        return ratio


class AspectRatio(Rule):
    kind = "aspect_ratio"
    Params = AspectParams
    impact = "The image is cropped or letterboxed on listing pages and social cards."

    def _dimensions(self, item: Item) -> tuple[int, int] | None:
        width = item.data.get(self.params.width_field)  # type: ignore[attr-defined]
        height = item.data.get(self.params.height_field)  # type: ignore[attr-defined]
        return (width, height) if width and height else None

    def prepare(self, items: list[Item], context: Context) -> None:
        if context.probe is None:
            return
        urls = [
            url
            for item in items
            if (url := item.data.get(self.field))
            and self._dimensions(item) is None
            and not item.type_errors
        ]
        missing = [u for u in set(urls) if u not in context.image_sizes]
        context.image_sizes.update(context.probe.sizes(missing))

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        url = item.data.get(self.field)
        if not url:
            return
        size = self._dimensions(item) or context.image_sizes.get(url)
        if isinstance(size, BlockedURL):
            yield self.issue(
                f"Hero image {url} was not fetched: {size}",
                f"Use a public image URL in {_where(item, self.field)} of item {item.id}; if this "
                f"job must read images from a private host (an intranet, a local test server), "
                f"set {SETTING}: true in the job file (network: {{allow_private_hosts: true}}).",
                severity="blocked",
            )
            return
        if isinstance(size, ProbeError):
            yield self.issue(
                f"Hero image {url} cannot be read: {size}",
                "Make the image publicly reachable over HTTP(S) (PNG, JPEG, GIF, WebP, AVIF, HEIC, "
                "TIFF or SVG), or fill in "
                f"{self.params.width_field} and {self.params.height_field} in "  # type: ignore[attr-defined]
                f"{item.location}.",
                severity="blocked",
            )
            return
        if size is None:
            return
        width, height = size
        if width <= 0 or height <= 0:  # a damaged or crafted header; never divide by it
            yield self.issue(
                f"Hero image {url} reports a size of {width}x{height} pixels",
                f"Re-export the hero image (its header says it has no pixels), or fill in "
                f"{self.params.width_field} and {self.params.height_field} in "  # type: ignore[attr-defined]
                f"{item.location}.",
                severity="blocked",
            )
            return
        w, h = (float(x) for x in self.params.ratio.split(":"))  # type: ignore[attr-defined]
        expected, actual = w / h, width / height
        if abs(actual - expected) > self.params.tolerance:  # type: ignore[attr-defined]
            yield self.issue(
                f"Image aspect ratio {actual:.2f} ({width}x{height}), expected {expected:.2f} "
                f"({self.params.ratio})",  # type: ignore[attr-defined]
                f"Re-export the hero image at {self.params.ratio}, e.g. "  # type: ignore[attr-defined]
                f"{width}x{round(width * h / w)}.",
            )


class TitleLength(MaxLength):
    kind = "title_length"
    impact = "Long titles wrap or are cut off in listings, feeds and search results."


KINDS: dict[str, type[Rule]] = {
    cls.kind: cls
    for cls in (
        Required,
        MaxLength,
        MinLength,
        Pattern,
        AllowedValues,
        Unique,
        SlugFormat,
        Category,
        AspectRatio,
        TitleLength,
    )
}


# --- built-in checks that always run ------------------------------------------------------------


class FieldTypes(Rule):
    """Cells that could not be converted to their column's type."""

    kind = "field_type"

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        for column, message, fix in item.type_errors:
            yield Issue(
                self.name,
                column,
                "blocked",
                f"{_where(item, column)}: {message}",
                f"{fix} ({_where(item, column)})",
            )


class IdPresent(Rule):
    kind = "id"

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        if not item.data.get("id"):
            yield self.issue(
                f"Item has no id (shown here as {item.id})",
                f"Set a unique, stable id in {_where(item, 'id')}; it is how reruns recognise the item.",
            )


class UnmappedRequired(Rule):
    """The destination requires a field that nothing in the job maps to."""

    kind = "destination_required"

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        yield self.issue(
            f"The destination requires the field '{self.field}', and no item field maps to it",
            f"Map an item field to '{self.field}' in destination.field_map, or make the field "
            "optional in the destination's collection settings.",
        )
