"""Validation rules. A rule checks one field of every item and names each problem's fix.

Each rule kind declares its limits as a pydantic model, so a job file's overrides are checked
with the same clear errors as the rest of the job.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

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
    """Base rule: a name, the field it checks, a severity, and text for the fix and the impact.

    `origin` is where the job file set the rule (validation.add[0], validation.rules.x), or ""
    for builtin and preset rules: only a rule the job named may name a field the source lacks.
    """

    kind: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    impact: ClassVar[str] = "The item goes out with lower quality."
    origin: str = ""

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


def _show(value: Any) -> str:
    """A value as a message shows it: numbers and dates plainly, text quoted and cut short."""
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, numbers.Real | Decimal) and not isinstance(value, bool):
        return str(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _units(value: str | list) -> str:
    return "items" if isinstance(value, list) else "characters"


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
            units = _units(value)
            yield self.issue(
                f"{self.field} has {len(value)} {units} (limit {limit})",
                f"Shorten {self.field} in {_where(item, self.field)} to {limit} {units} or fewer.",
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
            units = _units(value)
            yield self.issue(
                f"{self.field} has {len(value)} {units} (at least {limit} expected)",
                f"Lengthen {self.field} in {_where(item, self.field)} to {limit} {units} or more.",
            )


class PatternParams(Params):
    regex: str = Field(description="Regular expression the whole value must match.")
    hint: str | None = Field(
        default=None, description="What a good value looks like, e.g. 'like p-001'."
    )


class Pattern(Rule):
    kind = "pattern"
    Params = PatternParams

    def __init__(self, name: str, field: str, severity: Severity, params: Params) -> None:
        super().__init__(name, field, severity, params)
        self._regex = re.compile(params.regex)  # type: ignore[attr-defined]

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        value = item.data.get(self.field)
        if isinstance(value, str) and value and not self._regex.fullmatch(value):
            # a hint is any phrase ("look like p-001", "a price above 0"): shown in brackets,
            # so the sentence reads as English whatever its grammar
            hint = self.params.hint  # type: ignore[attr-defined]
            expected = f"the pattern {self._regex.pattern}" + (f" ({hint})" if hint else "")
            yield self.issue(
                f"{self.field} is {_show(value)}, which does not match {expected}",
                f"Change {self.field} in {_where(item, self.field)} to a value matching {expected}.",
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


# --- rule kinds for any data: bounds, a set of values, a type -------------------------------------


def _parse_bound(value: Any) -> Any:
    """A bound from the job file: a number, or an ISO date or date-time (also as text)."""
    if isinstance(value, str):
        value = _parse_text_bound(value.strip())
    finite = not isinstance(value, float) or math.isfinite(value)
    if isinstance(value, bool) or not isinstance(value, int | float | date) or not finite:
        raise ValueError(
            "expected a number or an ISO date such as 2025-01-31 (or 2025-01-31T09:00:00), "
            f"found {_show(value)}"
        )
    return value


def _parse_text_bound(text: str) -> Any:
    for parse in (int, float, date.fromisoformat):
        try:
            return parse(text)
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return text  # refused by the caller, named as written


class BoundParams(Params):
    value: int | float | datetime | date = Field(
        description="The bound: a number, or an ISO date or date-time for date fields."
    )
    exclusive: bool = Field(default=False, description="true: the bound itself is refused.")

    @field_validator("value", mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        return _parse_bound(value)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _comparable(value: Any, bound: Any) -> tuple[Any, Any] | None:
    """The value and the bound as one type, or None: a value of another type is field_type's."""
    if value is None or isinstance(value, bool):
        return None
    if not isinstance(bound, date):
        return (value, bound) if isinstance(value, numbers.Real | Decimal) else None
    if not isinstance(value, date):
        return None
    if isinstance(value, datetime) and not isinstance(bound, datetime):
        return value.date(), bound  # a date bound on a date-time field compares whole days
    if isinstance(bound, datetime):
        if not isinstance(value, datetime):
            value = datetime.combine(value, time())
        if (value.tzinfo is None) != (bound.tzinfo is None):
            return _utc(value), _utc(bound)  # one side without a zone: read it as UTC
    return value, bound


# (is a date, is a minimum) -> (out of an inclusive bound, what an exclusive one needs,
# the inclusive fix, the exclusive fix); {b} is the bound
_BOUND_WORDS = {
    (False, True): ("below the minimum of {b}", "above {b}", "{b} or more", "more than {b}"),
    (False, False): ("above the maximum of {b}", "below {b}", "{b} or less", "less than {b}"),
    (True, True): (
        "earlier than the minimum of {b}",
        "after {b}",
        "{b} or later",
        "a date later than {b}",
    ),
    (True, False): (
        "later than the maximum of {b}",
        "before {b}",
        "{b} or earlier",
        "a date earlier than {b}",
    ),
}


class Minimum(Rule):
    """A number, date or date-time no smaller than `value` (larger, if `exclusive`)."""

    kind = "min"
    Params = BoundParams
    lowest: ClassVar[bool] = True

    def _outside(self, value: Any, bound: Any) -> bool:
        if self.params.exclusive:  # type: ignore[attr-defined]
            return value <= bound if self.lowest else value >= bound
        return value < bound if self.lowest else value > bound

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        value = item.data.get(self.field)
        pair = _comparable(value, self.params.value)  # type: ignore[attr-defined]
        if pair is None or not self._outside(*pair):
            return
        bound = _show(self.params.value)  # type: ignore[attr-defined]
        words = _BOUND_WORDS[isinstance(pair[1], date), self.lowest]
        exclusive = self.params.exclusive  # type: ignore[attr-defined]
        problem = f"; it must be {words[1]}" if exclusive else f", {words[0]}"
        target = words[3] if exclusive else words[2]
        yield self.issue(
            f"{self.field} is {_show(value)}{problem.format(b=bound)}",
            f"Set {self.field} to {target.format(b=bound)} in {_where(item, self.field)}.",
        )


class Maximum(Minimum):
    """A number, date or date-time no larger than `value` (smaller, if `exclusive`)."""

    kind = "max"
    lowest = False


class OneOfParams(Params):
    values: list[bool | int | float | str] = Field(min_length=1, description="Values accepted.")


def _same(value: Any, allowed: Any) -> bool:
    # True == 1 in Python; a job that lists 1 does not accept true
    if isinstance(value, bool) or isinstance(allowed, bool):
        return isinstance(value, bool) and isinstance(allowed, bool) and value == allowed
    return bool(value == allowed)


class OneOf(Rule):
    """A value equal to one of `values` (compared as typed: 1 is not '1')."""

    kind = "one_of"
    Params = OneOfParams

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        value = item.data.get(self.field)
        values = self.params.values  # type: ignore[attr-defined]
        if value is None or any(_same(value, allowed) for allowed in values):
            return
        shown = ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in values)
        yield self.issue(
            f"{self.field} is {_show(value)}, which is not one of: {shown}",
            f"Set {self.field} in {_where(item, self.field)} to one of: {shown}.",
        )


TypeName = Literal[
    "string", "integer", "number", "boolean", "date", "datetime", "list", "url", "json"
]


def _is_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value.strip())
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real | Decimal) and not isinstance(value, bool)


# type -> (test of the typed value, how messages name it, an example for the fix)
_TYPES: dict[str, tuple[Any, str, str]] = {
    "string": (lambda v: isinstance(v, str), "text", "'some text'"),
    "integer": (lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
                "a whole number", "12"),
    "number": (_is_number, "a number", "19.99"),
    "boolean": (lambda v: isinstance(v, bool), "true or false", "true"),
    "date": (lambda v: isinstance(v, date) and not isinstance(v, datetime), "a date",
             "2025-10-28"),
    "datetime": (lambda v: isinstance(v, datetime), "a date and time", "2025-10-28T09:30:00"),
    "list": (lambda v: isinstance(v, list | tuple), "a list", '["a", "b"]'),
    "url": (_is_url, "an http(s) URL", "https://example.com/page"),
    "json": (_is_json, "JSON", '{"color": "red"}'),
}  # fmt: skip


class TypeParams(Params):
    type: TypeName = Field(description="string, integer, number, boolean, date, datetime, list, "
                                       "url or json.")  # fmt: skip


class TypeCheck(Rule):
    """A value of the declared type, checked on the typed value (a URL: http(s) with a host)."""

    kind = "type"
    Params = TypeParams

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        value = item.data.get(self.field)
        test, name, example = _TYPES[self.params.type]  # type: ignore[attr-defined]
        if value is None or test(value):
            return
        yield self.issue(
            f"{self.field} is {_show(value)}, not {name}",
            f"Change {self.field} in {_where(item, self.field)} to {name}, e.g. {example}.",
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


class LostContent(Rule):
    """Blocks of a page the destination cannot keep (`lost_blocks`, recorded by the source as
    it renders the body: each a type and a reason): the page is written without them."""

    kind = "lost_content"
    impact = "The published post lacks that content."

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        lost = item.data.get(self.field)
        if not isinstance(lost, list) or not lost:
            return
        reasons: dict[str, list[str]] = {}  # block type -> why, in the page's order
        for entry in lost:
            if isinstance(entry, dict):
                reasons.setdefault(str(entry.get("type")), []).append(str(entry.get("reason")))
        shown = "; ".join(f"{kind} ({why[0]}" + (f"; {len(why)} blocks" if len(why) > 1 else "")
                          + ")" for kind, why in reasons.items())  # fmt: skip
        page = f"Page {item.title!r}" if item.title else f"Page {item.id}"
        count = f"{len(lost)} Notion block{'s' if len(lost) != 1 else ''}"
        yield self.issue(
            f"{page}: {count} cannot be kept by the destination and will be missing: {shown}",
            f"Change those blocks in {item.location} (e.g. link a file by an external URL, move a "
            "database to its own collection), or accept the loss; a job that must lose nothing "
            f"sets validation.rules.{self.name}: {{severity: blocked}}.",
        )


KINDS: dict[str, type[Rule]] = {
    cls.kind: cls
    for cls in (
        Required,
        MaxLength,
        MinLength,
        Pattern,
        AllowedValues,
        Unique,
        Minimum,
        Maximum,
        OneOf,
        TypeCheck,
        SlugFormat,
        Category,
        AspectRatio,
        TitleLength,
        LostContent,
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
    """The job's id field (id unless the job names another) is set."""

    kind = "id"

    def check(self, item: Item, context: Context) -> Iterable[Issue]:
        if not item.data.get(self.field):
            yield self.issue(
                f"Item has no {self.field} (shown here as {item.id})",
                f"Set a unique, stable {self.field} in {_where(item, self.field)}; it is how "
                "reruns recognise the item.",
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
