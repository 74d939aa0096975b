"""What a job writes: the record each item becomes, and the shape destinations are told of.

A job's items are typed by their fields (a preset's, or the job's own `fields:`); a transform
turns each item's fields into the record that is frozen in the plan, hashed, reviewed and
written. Destinations are told the records' shape once (`RecordSpec`) before they check or
write, so a SQL table gets one typed column a field and an API connector knows its key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

FieldType = Literal[
    "string", "integer", "number", "boolean", "date", "datetime", "list", "url", "json"
]
FIELD_TYPES: tuple[str, ...] = get_args(FieldType)

META = (
    "_batchgate"  # a frozen record's bookkeeping (source URL, expiry of signed URLs): never written
)


@dataclass(frozen=True)
class RecordSpec:
    """The records a job writes: the field holding each item's key, and each field's type.

    `fields` is empty when a transform of the user's decides the fields item by item; a
    destination then checks each record as it comes (`check_record`)."""

    key: str
    fields: dict[str, str] = field(default_factory=dict)
    title: str | None = None  # the field reports show as an item's name
    body: bool = False  # the records carry a body (word counts and reading times make sense)


def written(record: dict) -> dict:
    """The record as a destination receives it: without the plan's bookkeeping."""
    return {k: v for k, v in record.items() if k != META} if META in record else record
