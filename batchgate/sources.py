"""The source protocol: what every connector that yields items provides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from batchgate.models import Item
from batchgate.schema import Schema


@dataclass(slots=True)
class SourceBatch:
    """Everything a source yielded for one run, after its filter."""

    items: list[Item]
    total_rows: int  # before the filter
    filtered_out: int
    description: str  # e.g. "posts.csv (CSV)", for reports


class Source(Protocol):
    """A connector that reads items."""

    def read(self, schema: Schema) -> SourceBatch:
        """Read every item, typed by the schema; raise SourceError when the source as a whole is unusable."""
        ...
