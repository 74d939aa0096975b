"""The destination protocol: what every connector that receives items provides."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from batchgate.errors import WriteError

Action = Literal["created", "updated"]


@dataclass(slots=True)
class WriteResult:
    """What one upsert did. `version` identifies what it left at the destination (a content hash
    or the destination's own version), so a rollback can tell whether anything changed it since."""

    dest_id: str
    action: Action
    previous: dict[str, Any] | None = None
    version: str | None = None


@dataclass(slots=True)
class DestinationCheck:
    """What a destination says before a run: its category options and field-mapping problems."""

    categories: list[str] | None = None
    unmapped_fields: list[str] = field(
        default_factory=list
    )  # mapped, but the collection lacks them
    missing_required: list[str] = field(default_factory=list)  # required, but nothing maps to them
    notes: list[str] = field(default_factory=list)  # what the dry-run report tells of it
    # (field, message, fix) for each value of a record the destination could not take
    record_problems: Callable[[dict[str, Any]], list[tuple[str, str, str]]] | None = None


class Destination(Protocol):
    """A connector that writes items. Upserts are keyed by the source id (the idempotency key)."""

    @property
    def key(self) -> str:
        """Stable identity (no secrets), naming the ledger's map and the concurrency limits."""
        ...

    @property
    def rate_per_s(self) -> float | None:
        """Requests per second the destination allows (None: unlimited)."""
        ...

    @property
    def needs_publish(self) -> bool:
        """True when written items must be published by a separate call (in groups)."""
        ...

    @property
    def idempotent(self) -> bool:
        """True when an upsert by source id can never duplicate (so no intent marker is needed)."""
        ...

    def check(self) -> DestinationCheck:
        """Read-only look at the destination before a run (a dry-run calls this too)."""
        ...

    def prepare(self) -> None:
        """Get ready to write (e.g. create the table); called by writing runs only."""
        ...

    def find_many(self, keys: list[str]) -> dict[str, str]:
        """{key: dest_id} of the items the destination holds already, by record key."""
        ...

    def find(self, record: dict[str, Any]) -> str | None:
        """The destination id of an item written before (by source id or slug), if any."""
        ...

    def snapshot(self, dest_id: str) -> dict[str, Any] | None:
        """The item as the destination holds it now, in the form `restore` takes; None if gone.
        Recorded in the ledger before every write (write-ahead)."""
        ...

    def version(self, dest_id: str) -> str | None:
        """The item's current version, comparable with `WriteResult.version`; None if gone."""
        ...

    def upsert(
        self,
        record: dict[str, Any],
        dest_id: str | None,
        draft: bool,
        current: dict[str, Any] | None = None,
    ) -> WriteResult:
        """Create or update; `current` is the snapshot taken before (saves a read when given)."""
        ...

    @property
    def group_size(self) -> int:
        """Items one write (a transaction, a request) carries at most."""
        ...

    def snapshot_many(self, dest_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """`snapshot` of a group, read at once where the destination can."""
        ...

    def upsert_many(
        self, entries: list[tuple[dict[str, Any], str | None, dict[str, Any] | None]], draft: bool
    ) -> list[WriteResult | WriteError]:
        """Write a group: (record, dest_id, current) each; one result or error per entry, in
        order. An error for one item never fails the others."""
        ...

    def publish(self, dest_ids: list[str]) -> dict[str, str]:
        """Make items live; returns {dest_id: error} for those that failed."""
        ...

    def delete(self, dest_id: str) -> None: ...

    def versions(self, dest_ids: list[str]) -> dict[str, str | None]:
        """`version` of a group, read at once where the destination can (None: gone)."""
        ...

    def delete_many(self, dest_ids: list[str]) -> dict[str, WriteError]:
        """Delete a group in as few requests as the destination allows; an item already gone
        counts as deleted. Returns {dest_id: error} for those that failed."""
        ...

    def restore_many(
        self, entries: list[tuple[str, dict[str, Any]]]
    ) -> dict[str, str | None | WriteError]:
        """Put snapshots back as a group: each item's version after, None when the item is gone
        (the restore changed nothing), or its error."""
        ...

    def restore(self, dest_id: str, previous: dict[str, Any]) -> bool:
        """Put a snapshot back; False when the item is gone (the restore changed nothing)."""
        ...

    def link(self, dest_id: str, record: dict[str, Any]) -> str:
        """Where a person can look at the item."""
        ...
