"""The source protocol: what every connector that yields items provides."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
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
    columns: tuple[str, ...] = ()  # the source's own columns, where it has a header
    notes: list[str] = field(default_factory=list)  # what the dry-run report should say of it


class Source(Protocol):
    """A connector that reads items."""

    @property
    def path(self) -> str:
        """Where the items come from, for the ledger and reports (no secret in it)."""
        ...

    def iter_chunks(
        self, schema: Schema, since: datetime | None = None, chunk_size: int = 5000
    ) -> Iterator[SourceBatch]:
        """The items (edited at or after `since`, if given) a chunk at a time, typed by the
        schema; raise SourceError when the source as a whole is unusable."""
        ...


def chunks_of(
    source: Source, schema: Schema, since: datetime | None = None, chunk_size: int = 5000
) -> Iterator[SourceBatch]:
    """The source's items a chunk at a time (`iter_chunks`: every source's required core)."""
    yield from source.iter_chunks(schema, since, chunk_size=chunk_size)
