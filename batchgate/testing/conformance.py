"""The conformance suites: the required core of a connector and every capability it declares.

Subclass one in a test module and provide the fixture it names (`destination` or `source`):
a fresh connector, empty (or at least holding no item the suite writes). Override `record` when
the destination takes records of another shape than `spec`, and `refused_record` to check that
one item's refusal fails that item only.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, SecretStr

from batchgate.connectors import (
    NO_SNAPSHOT,
    UNKNOWN_VERSION,
    Capabilities,
    capabilities_of,
    missing_core,
    undefined_capabilities,
)
from batchgate.destinations import DestinationCheck, WriteResult
from batchgate.errors import AlreadyExists, WriteError
from batchgate.records import RecordSpec
from batchgate.schema import GENERIC, Schema
from batchgate.sources import SourceBatch

GROUP = 3  # items the suite writes at once (fewer when the destination's group is smaller)
PRODUCTS = RecordSpec(
    key="sku",
    fields={
        "sku": "string",
        "name": "string",
        "price": "number",
        "stock": "integer",
        "launched": "date",
        "tags": "list",
    },
    title="name",
)


def sample_value(kind: str, field: str, n: int, revision: int) -> Any:
    """A value of a field type; each revision differs."""
    values = {
        "string": f"{field} {n} r{revision}",
        "integer": n * 10 + revision + 1,
        "number": n + 0.25 + revision,
        "boolean": revision % 2 == 0,
        "date": date(2026, 1, 1) + timedelta(days=n + revision),
        "datetime": datetime(2026, 1, 1, 12) + timedelta(hours=n + revision),
        "list": [f"t{n}", f"r{revision}"],
        "url": f"https://example.com/{field}/{n}/{revision}",
        "json": {"n": n, "revision": revision},
    }
    return values.get(kind, values["string"])


def secrets_in(value: Any, depth: int = 0) -> list[str]:
    """Every SecretStr a connector holds, in its fields or attributes (nested models too)."""
    if depth > 4:
        return []
    if isinstance(value, SecretStr):
        return [value.get_secret_value()] if value.get_secret_value() else []
    if isinstance(value, BaseModel):
        parts = [getattr(value, name, None) for name in type(value).model_fields]
    else:
        parts = list(getattr(value, "__dict__", {}).values())
    return [s for part in parts for s in secrets_in(part, depth + 1)]


class DestinationConformance:
    """What every destination must do, and what each capability it declares promises."""

    spec: ClassVar[RecordSpec] = PRODUCTS

    @pytest.fixture
    def destination(self) -> Any:
        pytest.fail("provide a `destination` fixture: a fresh destination to write to")

    @pytest.fixture
    def bound(self, destination: Any) -> Any:
        """The destination told the records' shape, checked and prepared, as a run does."""
        bind = getattr(destination, "bind", None)
        if bind is not None:
            bind(self.spec)
        assert isinstance(destination.check(), DestinationCheck)
        destination.prepare()
        yield destination
        close = getattr(destination, "close", None)
        if close is not None:
            close()

    @pytest.fixture
    def run_tag(self) -> str:
        return uuid.uuid4().hex[:8]  # keys of this test only, whatever the destination holds

    def record(self, n: int, revision: int = 0, tag: str = "") -> dict[str, Any]:
        """Record n in the shape of `spec`; another revision changes every field but the key."""
        data = {
            field: sample_value(kind, field, n, revision)
            for field, kind in self.spec.fields.items()
        }
        data[self.spec.key] = f"bg-{tag}-{n:03d}"
        return data

    def refused_record(self, n: int, tag: str = "") -> dict[str, Any] | None:
        """A record the destination refuses on its own merits (None: not checked)."""
        return None

    def key_of(self, destination: Any, record: dict[str, Any]) -> str:
        record_key = getattr(destination, "record_key", None)
        return record_key(record) if record_key is not None else str(record[self.spec.key])

    def caps(self, destination: Any) -> Capabilities:
        return capabilities_of(destination)

    def write(
        self,
        destination: Any,
        records: list[dict[str, Any]],
        dest_ids: list[str | None] | None = None,
    ) -> list[Any]:
        ids = dest_ids or [None] * len(records)
        entries = [(r, d, None) for r, d in zip(records, ids, strict=True)]
        answers = list(destination.upsert_many(entries, True))
        assert len(answers) == len(entries), "one result or error per entry"
        return answers

    def created(self, destination: Any, tag: str, count: int = GROUP) -> list[WriteResult]:
        count = max(1, min(count, self.caps(destination).group_size))
        answers = self.write(destination, [self.record(n, 0, tag) for n in range(count)])
        assert all(isinstance(a, WriteResult) for a in answers), answers
        return answers

    # --- the required core --------------------------------------------------------------------

    def test_defines_the_required_core_and_what_it_declares(self, bound: Any) -> None:
        assert missing_core(type(bound), bound) == []
        assert undefined_capabilities(bound) == []
        assert isinstance(self.caps(bound), Capabilities) and self.caps(bound).group_size >= 1

    def test_key_is_stable_and_holds_no_secret(self, bound: Any) -> None:
        key = bound.key
        assert isinstance(key, str) and key and key == bound.key
        for secret in secrets_in(bound):
            assert secret not in key, "the key names the hold and the map: no secret in it"

    def test_writes_a_group_and_finds_it_by_key(self, bound: Any, run_tag: str) -> None:
        answers = self.created(bound, run_tag)
        assert all(a.action == "created" for a in answers)
        assert len({a.dest_id for a in answers}) == len(answers)
        keys = [self.key_of(bound, self.record(n, 0, run_tag)) for n in range(len(answers))]
        assert bound.find_many(keys) == {k: a.dest_id for k, a in zip(keys, answers, strict=True)}
        assert bound.find_many([self.key_of(bound, self.record(99, 0, run_tag))]) == {}
        assert bound.find(self.record(0, 0, run_tag)) == answers[0].dest_id

    def test_an_update_keeps_the_destination_id(self, bound: Any, run_tag: str) -> None:
        first = self.created(bound, run_tag)
        again = self.write(
            bound,
            [self.record(n, 1, run_tag) for n in range(len(first))],
            [a.dest_id for a in first],
        )
        assert [(a.dest_id, a.action) for a in again] == [(a.dest_id, "updated") for a in first]

    def test_one_refused_item_fails_alone_in_order(self, bound: Any, run_tag: str) -> None:
        bad = self.refused_record(1, run_tag)
        if bad is None or self.caps(bound).group_size < 3:
            pytest.skip("no refused_record given, or groups smaller than 3")
        answers = self.write(bound, [self.record(0, 0, run_tag), bad, self.record(2, 0, run_tag)])
        assert isinstance(answers[1], WriteError) and not isinstance(answers[1], AlreadyExists)
        assert isinstance(answers[0], WriteResult) and isinstance(answers[2], WriteResult)
        keys = [self.key_of(bound, self.record(n, 0, run_tag)) for n in (0, 2)]
        assert bound.find_many(keys) == {keys[0]: answers[0].dest_id, keys[1]: answers[2].dest_id}

    def test_delete_many_deletes_and_tolerates_gone_items(self, bound: Any, run_tag: str) -> None:
        answers = self.created(bound, run_tag)
        ids = [a.dest_id for a in answers]
        assert bound.delete_many(ids) == {}
        keys = [self.key_of(bound, self.record(n, 0, run_tag)) for n in range(len(ids))]
        assert bound.find_many(keys) == {}
        assert bound.delete_many(ids[:1]) == {}, "an item already gone counts as deleted"

    # --- what each declared capability promises ------------------------------------------------

    def test_idempotent_upsert_writes_no_duplicate(self, bound: Any, run_tag: str) -> None:
        if not self.caps(bound).idempotent_upsert:
            pytest.skip("idempotent_upsert not declared")
        first = self.created(bound, run_tag, 1)[0]
        again = self.write(bound, [self.record(0, 1, run_tag)])[0]  # as if never written
        assert isinstance(again, AlreadyExists) or (
            isinstance(again, WriteResult) and again.dest_id == first.dest_id
        ), again
        key = self.key_of(bound, self.record(0, 0, run_tag))
        assert bound.find_many([key]) == {key: first.dest_id}

    def test_versions_change_on_update_and_end_on_delete(self, bound: Any, run_tag: str) -> None:
        first = self.created(bound, run_tag, 1)[0]
        if not self.caps(bound).versions:
            assert bound.versions([first.dest_id]) == {first.dest_id: UNKNOWN_VERSION}
            pytest.skip("versions not declared: the base says unknown, never a guess")
        assert bound.versions([first.dest_id]) == {first.dest_id: first.version}
        updated = self.write(bound, [self.record(0, 1, run_tag)], [first.dest_id])[0]
        assert updated.version != first.version
        assert bound.versions([first.dest_id]) == {first.dest_id: updated.version}
        assert bound.delete_many([first.dest_id]) == {}
        assert bound.versions([first.dest_id]) == {first.dest_id: None}

    def test_snapshots_and_restore_round_trip(self, bound: Any, run_tag: str) -> None:
        first = self.created(bound, run_tag, 1)[0]
        caps = self.caps(bound)
        if not caps.snapshots:
            assert bound.snapshot_many([first.dest_id]) == {first.dest_id: NO_SNAPSHOT}
            pytest.skip("snapshots not declared: the base answers NO_SNAPSHOT, never None")
        before = bound.snapshot_many([first.dest_id])[first.dest_id]
        assert before is not None
        self.write(bound, [self.record(0, 1, run_tag)], [first.dest_id])
        if not caps.restore:
            pytest.skip("restore not declared")
        restored = bound.restore_many([(first.dest_id, before)])[first.dest_id]
        assert isinstance(restored, str) or (restored is not None and not caps.versions), restored
        if caps.versions:
            assert restored == first.version == bound.versions([first.dest_id])[first.dest_id]
        assert bound.delete_many([first.dest_id]) == {}
        assert bound.snapshot_many([first.dest_id]) == {first.dest_id: None}
        assert bound.restore_many([(first.dest_id, before)]) == {first.dest_id: None}

    def test_publish_confirms_every_item(self, bound: Any, run_tag: str) -> None:
        if not self.caps(bound).publish:
            pytest.skip("publish not declared")
        answers = self.created(bound, run_tag)
        assert bound.publish([a.dest_id for a in answers]) == {}


class SourceConformance:
    """What every source must do: name itself without a secret and yield typed, numbered chunks."""

    schema: ClassVar[Schema] = GENERIC

    @pytest.fixture
    def source(self) -> Any:
        pytest.fail("provide a `source` fixture holding at least 3 items")

    def test_defines_the_required_core(self, source: Any) -> None:
        assert missing_core(type(source), source) == []
        path = source.path
        assert isinstance(path, str) and path
        for secret in secrets_in(source):
            assert secret not in path

    def test_chunks_are_typed_numbered_and_bounded(self, source: Any) -> None:
        chunks = list(source.iter_chunks(self.schema, None, chunk_size=2))
        assert chunks and all(isinstance(c, SourceBatch) for c in chunks)
        assert all(len(c.items) <= 2 for c in chunks)
        seqs = [item.seq for c in chunks for item in c.items]
        assert seqs == list(range(len(seqs))) and len(seqs) >= 3
        assert all(item.id and item.location for c in chunks for item in c.items)
