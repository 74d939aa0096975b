"""Validation a chunk at a time: a rule that needs the whole set (unique) keeps keys of what it has
seen in a store it is given, never the items, and names every owner of a shared value once the
stream has ended. `StoredKeys` keeps them as rows in a database (the ledger's batchgate_seen), so
the process holds no more than a chunk."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from batchgate.models import Item, ItemResult
from batchgate.validation.rules import Context, Rule, Unique


def _key(value: Any) -> int:
    blob = f"{type(value).__name__}:{value}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little")


class KeyStore(Protocol):
    """What a unique rule keeps of the values it has seen."""

    def add(self, pairs: Sequence[tuple[Any, int]]) -> None:
        """See (value, seq) pairs of one chunk; chunks arrive in source order."""

    def shared_values(self) -> Iterable[tuple[Any, list[int]]]:
        """Once the stream has ended: every value seen more than once, with its owners' seqs in
        order."""


class SeenRows(Protocol):
    """Where `StoredKeys` keeps its rows (the ledger: `Ledger.add_seen`, `Ledger.shared_seen`)."""

    def add_seen(self, run_id: str, rule: str, rows: Sequence[tuple[int, int, str]]) -> None: ...

    def shared_seen(self, run_id: str, rule: str) -> Iterable[tuple[str, list[int]]]: ...


class StoredKeys:
    """The values one unique rule has seen as rows of a database, (key, seq, value as JSON) for
    every item, the key the value's 64-bit hash as a signed integer: the process keeps nothing
    between chunks. Values are compared, not only their hashes, when the shared ones are read."""

    def __init__(self, rows: SeenRows, run_id: str, rule: str) -> None:
        self.rows, self.run_id, self.rule = rows, run_id, rule

    def add(self, pairs: Sequence[tuple[Any, int]]) -> None:
        self.rows.add_seen(self.run_id, self.rule, [
            (_signed(_key(value)), seq, json.dumps(value, default=str)) for value, seq in pairs
        ])  # fmt: skip

    def shared_values(self) -> Iterator[tuple[Any, list[int]]]:
        for value, seqs in self.rows.shared_seen(self.run_id, self.rule):
            yield json.loads(value), seqs


def _signed(key: int) -> int:
    return key - (1 << 64) if key >= 1 << 63 else key


class StreamValidator:
    """Runs a rule set over one chunk at a time; `amend` then applies the unique rules' findings
    to the items already recorded."""

    def __init__(
        self, rules: list[Rule], context: Context, keys: Callable[[Rule], KeyStore]
    ) -> None:
        """`keys(rule)` gives each unique rule its store of what it has seen (e.g.
        `lambda rule: StoredKeys(ledger, run_id, rule.name)`)."""
        self.context = context
        self.order = {rule.name: n for n, rule in enumerate(rules)}
        self.unique = [(rule, keys(rule)) for rule in rules if isinstance(rule, Unique)]
        self.others = [rule for rule in rules if not isinstance(rule, Unique)]

    def validate(self, items: list[Item]) -> list[ItemResult]:
        for rule in self.others:
            rule.prepare(items, self.context)
        for rule, seen in self.unique:
            seen.add([(v, item.seq) for item in items
                      if (v := item.data.get(rule.field)) is not None and v != ""])  # fmt: skip
        results = [
            ItemResult(item.id, item.seq, item.title, item.location,
                       [issue for rule in self.others for issue in rule.check(item, self.context)])
            for item in items
        ]  # fmt: skip
        self.context.image_sizes.clear()  # a chunk's probes: memory stays flat
        return results

    def amend(
        self,
        read: Callable[[list[int]], list[dict[str, Any]]],
        write: Callable[[list[dict[str, Any]]], Any],
    ) -> int:
        """Give every owner of a shared value its unique issue, naming the others, as one pass
        over the whole set would: `read(seqs)` returns recorded item rows (issues parsed),
        `write(rows)` stores the changed ones. Returns how many items were changed."""
        changed = 0
        for rule, seen in self.unique:
            for value, seqs in seen.shared_values():
                rows = read(seqs)
                rule._shared = {value: [r["item_id"] for r in rows]}  # type: ignore[attr-defined]
                amended = list(self._amended(rule, value, rows))
                write(amended)
                changed += len(amended)
        return changed

    def _amended(self, rule: Rule, value: Any, rows: list[dict[str, Any]]) -> Iterator[dict]:
        for row in rows:
            item = Item(row["item_id"], row["seq"], row["location"] or "", {rule.field: value})
            new = [issue.as_dict() for issue in rule.check(item, self.context)]
            issues = [i for i in row["issues"] if i.get("rule") != rule.name] + new
            issues.sort(key=lambda i: self.order.get(i.get("rule"), len(self.order)))
            severities = {i.get("severity") for i in issues}
            status = "blocked" if "blocked" in severities else "warning" if issues else "ready"
            blocked = status == "blocked"
            yield {
                "seq": row["seq"],
                "status": status,
                "issues": json.dumps(issues),
                "content_hash": None if blocked else row.get("content_hash"),
                "data": None if blocked else row.get("data"),
            }
