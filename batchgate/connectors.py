"""Connectors of the user's own: a small base class per side, and capabilities declared as data.

A destination implements the required core (`key`, `upsert_many`, `find_many`, `delete_many`)
and declares what else it can do in `capabilities`; every other method the engine calls has a
default here, derived from those capabilities. A guarantee a connector cannot give is stated
(`guarantees`), never faked: without versions a rollback cannot tell whether an item changed
since it was written, so it refuses to restore an updated item (it still deletes a created one).

A source implements `path` and `iter_chunks`. Both bases are plain classes (no metaclass), so a
Prefect Block may inherit one: `class Mine(DestinationBase, Block)`, with `capabilities` as a
property or a `ClassVar` there (pydantic takes any other class attribute for a field).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from batchgate.destinations import DestinationCheck, WriteResult
from batchgate.errors import WriteError
from batchgate.pacer import Pacer, pacer_for
from batchgate.schema import Schema, build_items
from batchgate.sources import SourceBatch

if TYPE_CHECKING:
    from batchgate.records import RecordSpec

Entry = tuple[dict[str, Any], str | None, dict[str, Any] | None]  # record, dest_id, current
PACE_MARGIN = 0.99  # 1% under the declared rate: a late send must not push a window over it
# The writer reads a snapshot of None as "gone from the destination" (written as new, recorded
# as created, so a rollback would delete it): a destination that keeps no snapshots answers
# this marker instead, "there, content unknown", which a rollback refuses to restore.
NO_SNAPSHOT: dict[str, Any] = {"_batchgate": "no snapshot: the destination cannot read items"}
UNKNOWN_VERSION = "_batchgate:unknown-version"  # `versions()` of a destination without versions
LEGACY_KEY = (
    "source_id"  # the blog record's key field, for a destination no RecordSpec was bound to
)


@dataclass(frozen=True)
class Capabilities:
    """What a destination can do, read by the engine instead of probing for methods."""

    publish: bool = False  # written items go live only through a separate `publish` call
    live: bool = False  # a full run writes items live; False: as drafts (or the flag is ignored)
    snapshots: bool = False  # can read an item as it is (`snapshot_many`): write-ahead, restore
    versions: bool = False  # can tell whether an item changed since written (`versions`)
    restore: bool = False  # can put a snapshot back (`restore_many`)
    rate_per_s: float | None = None  # requests per second allowed; None: unlimited
    group_size: int = 1  # items one write (a request, a transaction) carries at most
    max_writers: int | None = None  # writes worth running at once; None: the engine's default
    idempotent_upsert: bool = False  # an upsert by key can never duplicate an item
    drafts: bool = False  # keeps an item written as a draft out of sight until it is published


@dataclass(frozen=True)
class SourceCapabilities:
    """What a source can do besides reading its items a chunk at a time."""

    refresh: bool = False  # can re-read one item just before its write (`refresh`)
    since: bool = False  # reads only the items edited since a moment (an incremental sync)


def guarantees(capabilities: Capabilities) -> list[str]:
    """What a rollback and a rerun can promise on a destination with these capabilities."""
    lines = []
    if capabilities.versions and capabilities.snapshots and capabilities.restore:
        lines.append("a rollback restores updated items and leaves alone any item changed since")
    else:
        lines.append(
            "a rollback deletes created items but refuses to restore updated ones "
            f"({_missing(capabilities)})"
        )
    if not capabilities.versions:
        lines.append(
            "a rollback cannot tell whether a created item was changed outside "
            "batchgate since (no versions)"
        )
    if capabilities.idempotent_upsert:
        lines.append("an upsert by key never duplicates an item")
    else:
        lines.append("a write whose answer was lost is looked up by key before it is sent again")
    if capabilities.publish:
        lines.append("items count as published only once the destination confirms it")
    return lines


def _missing(capabilities: Capabilities) -> str:
    names = ("snapshots", "versions", "restore")
    return "no " + ", no ".join(n for n in names if not getattr(capabilities, n))


def describe(capabilities: Capabilities) -> str:
    """One line for the dry-run report: the guarantees the destination gives."""
    return "Guarantees of this destination: " + "; ".join(guarantees(capabilities)) + "."


class DestinationBase:
    """A destination: the required core, and defaults for everything else from `capabilities`.

    Required: `key`, `upsert_many`, `find_many`, `delete_many`. Declaring a capability means
    defining its method too: snapshots `snapshot_many`, versions `versions`, restore
    `restore_many`, publish `publish`. A connector that calls an API paced by `rate_per_s`
    calls `self.pace()` before each request."""

    capabilities = Capabilities()
    record_spec: ClassVar[RecordSpec | None] = None  # set by `bind`, per instance

    # --- the required core ------------------------------------------------------------------

    if TYPE_CHECKING:  # required too; no property here, or it would hide a pydantic field `key`
        key: str  # stable identity of what is written to (no secret): names the hold and the map

    def upsert_many(self, entries: list[Entry], draft: bool) -> list[WriteResult | WriteError]:
        """Write a group of (record, dest_id, current): one result or error per entry, in order;
        dest_id is None for an item not written before; one item's error never fails the others."""
        raise NotImplementedError(f"{type(self).__name__} must define `upsert_many`")

    def find_many(self, keys: list[str]) -> dict[str, str]:
        """{key: dest_id} of the items written before, by their record key (absent: none)."""
        raise NotImplementedError(f"{type(self).__name__} must define `find_many`")

    def delete_many(self, dest_ids: list[str]) -> dict[str, WriteError]:
        """Delete a group (for rollback); an item already gone counts as deleted. {id: error}."""
        raise NotImplementedError(f"{type(self).__name__} must define `delete_many`")

    # --- told once, before check, prepare and any write -----------------------------------------

    def bind(self, spec: RecordSpec) -> None:
        """Learn the shape of the records this job writes (their key field, their fields)."""
        object.__setattr__(self, "record_spec", spec)  # a pydantic Block keeps it off its fields

    def record_key(self, record: Mapping[str, Any]) -> str:
        """The key of one record, from the field the RecordSpec names."""
        spec = self.record_spec
        return str(record[spec.key if spec is not None else LEGACY_KEY])

    def check(self) -> DestinationCheck:
        """Read-only look before a run (the dry-run calls it); refuse with FatalError if unusable."""
        return DestinationCheck()

    def prepare(self) -> None:
        """Get ready to write (writing runs only)."""

    # --- derived from the core -------------------------------------------------------------------

    def find(self, record: dict[str, Any]) -> str | None:
        key = self.record_key(record)
        return self.find_many([key]).get(key)

    def upsert(
        self,
        record: dict[str, Any],
        dest_id: str | None,
        draft: bool,
        current: dict[str, Any] | None = None,
    ) -> WriteResult:
        answer = self.upsert_many([(record, dest_id, current)], draft)[0]
        if isinstance(answer, WriteError):
            raise answer
        return answer

    def delete(self, dest_id: str) -> None:
        error = self.delete_many([dest_id]).get(dest_id)
        if error is not None:
            raise error

    # --- derived from the capabilities ------------------------------------------------------------

    def snapshot_many(self, dest_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """{dest_id: the item as it is, None if gone}; NO_SNAPSHOT each without snapshots."""
        return {dest_id: NO_SNAPSHOT for dest_id in dest_ids}

    def versions(self, dest_ids: list[str]) -> dict[str, str | None]:
        """{dest_id: its version now, None if gone}; UNKNOWN_VERSION each without versions."""
        return dict.fromkeys(dest_ids, UNKNOWN_VERSION)

    def restore_many(
        self, entries: list[tuple[str, dict[str, Any]]]
    ) -> dict[str, str | None | WriteError]:
        """{dest_id: version after, None if gone (nothing restored), or its error}."""
        refused = WriteError(
            f"{type(self).__name__} cannot restore items (no restore capability)",
            error_type="unknown",
        )
        return {dest_id: refused for dest_id, _ in entries}

    def publish(self, dest_ids: list[str]) -> dict[str, str]:
        """Make written items live; {dest_id: error} of those that failed."""
        return {}

    def snapshot(self, dest_id: str) -> dict[str, Any] | None:
        return self.snapshot_many([dest_id]).get(dest_id)

    def version(self, dest_id: str) -> str | None:
        return self.versions([dest_id]).get(dest_id)

    def restore(self, dest_id: str, previous: dict[str, Any]) -> bool:
        answer = self.restore_many([(dest_id, previous)]).get(dest_id)
        if isinstance(answer, WriteError):
            raise answer
        return answer is not None

    def link(self, dest_id: str, record: dict[str, Any]) -> str:
        """Where a person can look at the item."""
        return f"{self.key}/{dest_id}"

    @property
    def group_size(self) -> int:
        return max(1, self.capabilities.group_size)

    @property
    def rate_per_s(self) -> float | None:
        return self.capabilities.rate_per_s

    @property
    def max_writers(self) -> int | None:
        return self.capabilities.max_writers

    @property
    def needs_publish(self) -> bool:
        return self.capabilities.publish

    @property
    def idempotent(self) -> bool:
        return self.capabilities.idempotent_upsert

    @property
    def pacer(self) -> Pacer | None:
        """The process-wide pacer of this destination (shared by a sharded run's writers)."""
        rate = self.capabilities.rate_per_s
        return pacer_for(self.key, rate * PACE_MARGIN) if rate else None

    def pace(self) -> None:
        """Wait for the next request slot the declared rate allows (no wait when unlimited)."""
        pacer = self.pacer
        if pacer is not None:
            pacer.acquire()

    @property
    def quota_low(self) -> int | None:
        """The lowest request quota the API reported during the run, if it reports one."""
        return None

    def close(self) -> None:
        """Release connections at the end of a run."""


def capabilities_of(destination: Any) -> Capabilities:
    """A destination's capabilities: those it declares (every DestinationBase does); for an
    object that only follows the Destination protocol (a test double), what its attributes say,
    and nothing it does not name."""
    declared = getattr(destination, "capabilities", None)
    if isinstance(declared, Capabilities):
        return declared
    return Capabilities(
        publish=bool(getattr(destination, "needs_publish", False)),
        live=bool(getattr(destination, "publish_live", False)),
        snapshots=hasattr(destination, "snapshot_many"),
        versions=hasattr(destination, "versions"),
        restore=hasattr(destination, "restore_many"),
        rate_per_s=getattr(destination, "rate_per_s", None),
        group_size=getattr(destination, "group_size", 1),
        max_writers=getattr(destination, "max_writers", None),
        idempotent_upsert=bool(getattr(destination, "idempotent", False)),
    )


class SourceBase:
    """A source: `path` and `iter_chunks` required; `capabilities` and `refresh` optional."""

    capabilities = SourceCapabilities()

    if TYPE_CHECKING:  # required too (a property, an attribute or a pydantic field)
        path: str  # where the items come from, for the ledger and reports (no secret in it)

    def iter_chunks(
        self, schema: Schema, since: datetime | None = None, chunk_size: int = 5000
    ) -> Iterator[SourceBatch]:
        """The items a chunk of at most `chunk_size` at a time, typed by `schema` (see `batches`);
        raise SourceError when the source as a whole is unusable."""
        raise NotImplementedError(f"{type(self).__name__} must define `iter_chunks`")

    def read(self, schema: Schema, since: datetime | None = None) -> SourceBatch:
        """Every item at once (small sources and tests)."""
        batch = SourceBatch([], 0, 0, self.path)
        for chunk in self.iter_chunks(schema, since):
            batch.items += chunk.items
            batch.total_rows += chunk.total_rows
            batch.filtered_out += chunk.filtered_out
            batch.description = chunk.description
            batch.notes += chunk.notes
        return batch

    def refresh(self, item_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """The item read again just before its write (only called with the refresh capability)."""
        return data

    def batches(
        self,
        rows: Iterable[tuple[str, Mapping[str, Any]]],
        schema: Schema,
        chunk_size: int,
        description: str | None = None,
    ) -> Iterator[SourceBatch]:
        """Raw rows (location, values) typed into chunks, numbered across chunks."""
        chunk: list[tuple[str, Mapping[str, Any]]] = []
        seq = 0
        for row in rows:
            chunk.append(row)
            if len(chunk) >= chunk_size:
                yield self._typed(chunk, schema, seq, description)
                seq, chunk = seq + len(chunk), []
        if chunk or not seq:
            yield self._typed(chunk, schema, seq, description)

    def _typed(
        self, rows: list[Any], schema: Schema, seq: int, description: str | None
    ) -> SourceBatch:
        items = build_items(rows, schema)
        for item in items:
            item.seq += seq
            if not item.data.get("id"):
                item.id = f"row-{item.seq + 1}"
        return SourceBatch(items, len(items), 0, description or self.path)


REQUIRED = {
    DestinationBase: ("upsert_many", "find_many", "delete_many"),
    SourceBase: ("iter_chunks",),
}
IDENTITY = {DestinationBase: "key", SourceBase: "path"}  # required attributes
DECLARED = {
    "snapshots": "snapshot_many",
    "versions": "versions",
    "restore": "restore_many",
    "publish": "publish",
}


def missing_core(cls: type, connector: Any = None) -> list[str]:
    """The required core a connector class leaves to the base (whose methods only raise); its
    identity attribute is checked once the class or the constructed `connector` is given."""
    base = DestinationBase if issubclass(cls, DestinationBase) else SourceBase
    missing = [n for n in REQUIRED[base] if getattr(cls, n) is getattr(base, n)]
    name = IDENTITY[base]
    held = hasattr(cls, name) or name in getattr(cls, "model_fields", {})
    if connector is not None and not held and name not in getattr(connector, "__dict__", {}):
        missing.insert(0, name)
    return missing


def undefined_capabilities(destination: DestinationBase) -> list[str]:
    """Declared capabilities whose method the connector does not define (`snapshots -> ...`)."""
    cls, caps = type(destination), capabilities_of(destination)
    return [
        f"{flag} (define {method})"
        for flag, method in DECLARED.items()
        if getattr(caps, flag) and getattr(cls, method) is getattr(DestinationBase, method)
    ]


def source_capabilities_of(source: Any) -> SourceCapabilities:
    """A source's capabilities (a source that declares none can do neither)."""
    declared = getattr(source, "capabilities", None)
    return declared if isinstance(declared, SourceCapabilities) else SourceCapabilities()


def refresher(source: Any) -> Any:
    """The source's `refresh` when it declares it can re-read an item before its write."""
    return source.refresh if source_capabilities_of(source).refresh else None
