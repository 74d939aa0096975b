"""What a job's items are and what each becomes: its fields, its key, its transform.

The blog preset declares its fields and its transform (Markdown to HTML, reading time, SEO);
without a preset the record written is the item's typed fields; a job's own transform
(`transform: my_pkg.prices:to_record`) turns those into the record instead. The record is made
in the dry-run, frozen in the plan and hashed there: what is reviewed is what is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from batchgate.errors import ConfigError
from batchgate.models import Issue, Item
from batchgate.plugins import load_object
from batchgate.records import META, RecordSpec
from batchgate.schema import BLOG, CONTROL, Schema, declared, untyped
from batchgate.transform import BLOG_RECORD_FIELDS, blog_record

# what a source may attach to an item for the run's bookkeeping (never written)
_BOOKKEEPING = ("source_url", "media_expires_at", "content_key", "lost_blocks")
MAX_DEPTH = 20  # a record nests a few levels; more is a transform gone wrong


class TransformError(ValueError):
    """The job's transform refused an item or returned something that cannot be written."""


@dataclass(frozen=True)
class ItemModel:
    """A job's items: their schema, the records they become, and what destinations are told."""

    name: str  # blog, fields, columns, or the transform's reference
    schema: Schema
    spec: RecordSpec
    make: Callable[[Item], dict[str, Any]]
    transform_ref: str | None = None

    def record(self, item: Item) -> dict[str, Any]:
        """The item's record with its bookkeeping; a TransformError says why there is none."""
        record = self.make(item)
        meta = {k: item.data[k] for k in _BOOKKEEPING if item.data.get(k) is not None}
        return {**record, META: meta} if meta else record


def model_for(job: Any) -> ItemModel:
    """The item model a job describes (its preset, its own fields, its own transform)."""
    preset = job.validation.preset
    if preset == "blog":
        schema, spec = BLOG, RecordSpec("source_id", dict(BLOG_RECORD_FIELDS), "title", True)
        base: Callable[[Item], dict[str, Any]] = lambda item: blog_record(item.id, item.data)  # noqa: E731
        name = "blog"
    else:
        id_field, title = job.id_field, job.title_field
        if job.fields is not None:
            schema = declared(job.fields, id_field, title)
            spec = RecordSpec(id_field, {id_field: "string", **dict(job.fields)}, title)
            name = "fields"
        else:
            schema, spec, name = (
                untyped(id_field, title),
                RecordSpec(id_field, {}, title),
                "columns",
            )
        base = _typed_fields
    if not job.transform:
        return ItemModel(name, schema, spec, base)
    user = load_object(job.transform, "transform", "transform")
    if not callable(user):
        raise ConfigError(f"transform: {job.transform!r} is a {type(user).__name__}, not a "
                          "callable. Fix: name a function that takes an item's fields.")  # fmt: skip
    spec = RecordSpec(spec.key, {}, spec.title, spec.body)  # its output decides the fields
    return ItemModel(job.transform, schema, spec, _user_transform(user, base, spec.key),
                     job.transform)  # fmt: skip


def transform_issue(model: ItemModel, problem: str) -> Issue:
    """The blocked issue of an item the job's transform could not turn into a record."""
    return Issue("transform", "", "blocked", f"the transform {model.transform_ref} {problem}",
                 f"Correct the item in the source or the transform {model.transform_ref}, then "
                 "run the dry-run again; the item is not written until then.")  # fmt: skip


def destination_issue(field: str, message: str, fix: str) -> Issue:
    """The blocked issue of a record value the destination could not hold (its check said so)."""
    return Issue("destination_fit", field, "blocked", message, fix)


def _typed_fields(item: Item) -> dict[str, Any]:
    return {k: v for k, v in item.data.items() if k not in _BOOKKEEPING}


def _user_transform(
    user: Callable[[dict[str, Any]], Any], base: Callable[[Item], dict[str, Any]], key: str
) -> Callable[[Item], dict[str, Any]]:
    def make(item: Item) -> dict[str, Any]:
        fields = base(item)
        try:
            out = user(dict(fields))
        except Exception as exc:  # noqa: BLE001 - the user's code: the item's problem
            raise TransformError(f"raised {type(exc).__name__}: {_line(exc)}") from None
        if not isinstance(out, dict):
            raise TransformError(f"returned a {type(out).__name__}, not a dict of fields")
        out = dict(out)
        if key not in out:
            out[key] = item.id
        elif str(out[key]) != item.id:
            raise TransformError(f"changed the item's key {key} from {item.id!r} to "
                                 f"{str(out[key])[:80]!r}; the key identifies the item")  # fmt: skip
        for name, value in out.items():
            if not isinstance(name, str) or not name or name == META:
                raise TransformError(f"returned the field name {name!r}; names are non-empty "
                                     f"text other than {META}")  # fmt: skip
            _check_value(name, value, 0)
        return out

    return make


def _check_value(name: str, value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise TransformError(f"returned field '{name}' nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        found = CONTROL.search(value)
        if found:
            raise TransformError(f"returned field '{name}' holding the control character "
                                 f"U+{ord(found.group()):04X}, which no report or database "
                                 "should receive")  # fmt: skip
        return
    if value is None or isinstance(value, bool | int | date | datetime):
        return
    if isinstance(value, float | Decimal):
        if not value.is_finite() if isinstance(value, Decimal) else not math.isfinite(value):
            raise TransformError(f"returned field '{name}' as {value!r}, which no destination "
                                 "can store")  # fmt: skip
        return
    if isinstance(value, list | tuple):
        for part in value:
            _check_value(name, part, depth + 1)
        return
    if isinstance(value, dict):
        for k, part in value.items():
            if not isinstance(k, str):
                raise TransformError(f"returned field '{name}' with the key {k!r}; keys are text")
            _check_value(name, part, depth + 1)
        return
    raise TransformError(f"returned field '{name}' as a {type(value).__name__}; a record holds "
                         "text, numbers, booleans, dates, lists and mappings")  # fmt: skip


def _line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else "(no message)"
