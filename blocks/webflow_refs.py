"""The referenced collections of a Webflow collection, read once per run (their items listing),
and the items a job with `destination.create_missing_references` creates in them.

A Reference field takes an item id of `validations.collectionId`, a MultiReference a list of
them (reference/field-types-item-values; apis.md, "Corrections and additions", Field types): a
record's category or tags, as names, become those ids here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from batchgate.errors import AlreadyExists, PermanentError
from batchgate.webflow_refs import RefIndex, names, slugify, target

Request = Callable[..., httpx.Response]  # the destination's paced, error-mapped request
PAGE = 100  # items per list request (the API's maximum)


@dataclass
class References:
    request: Request
    create_missing: bool = False
    publish: bool = False  # a publishing job publishes what it creates
    created: list[str] = field(default_factory=list)  # "name in collection", for the report
    _indexes: dict[str, RefIndex] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def index(self, collection_id: str) -> RefIndex:
        """The referenced collection's items, listed once per run."""
        with self._lock:
            if collection_id not in self._indexes:
                self._indexes[collection_id] = self._read(collection_id)
            return self._indexes[collection_id]

    def _read(self, collection_id: str) -> RefIndex:
        shown = self.request("GET", f"/collections/{collection_id}").json().get("displayName")
        items: list[dict[str, Any]] = []
        offset = 0
        while True:
            answer = self.request("GET", f"/collections/{collection_id}/items",
                                  params={"offset": offset, "limit": PAGE}).json()  # fmt: skip
            page = [i for i in answer.get("items") or [] if isinstance(i, dict)]
            items += page
            offset += len(page)
            if len(page) < PAGE:
                return RefIndex.of(collection_id, items, str(shown or ""))

    def unknown(self, field_: dict[str, Any], value: Any) -> tuple[RefIndex, list[str]]:
        """The names of a record value the referenced collection does not hold."""
        index = self.index(_target(field_))
        wanted = names(value, field_.get("type") == "MultiReference")
        return index, [n for n in wanted if index.find(n) is None]

    def ids(self, field_: dict[str, Any], value: Any) -> str | list[str] | None:
        """The item id(s) a record value names; a missing name is created first when the job
        allows it, else the item fails (the dry-run blocked it already)."""
        many = field_.get("type") == "MultiReference"
        index = self.index(_target(field_))
        found = []
        for name in names(value, many):
            item_id = index.find(name) or self._missing(field_, index, name)
            found.append(item_id)
        if many:
            return found
        return found[0] if found else None

    def _missing(self, field_: dict[str, Any], index: RefIndex, name: str) -> str:
        if not self.create_missing:
            raise PermanentError(
                f"{field_.get('slug')}: {name!r} is not an item of {index.shown}. Fix: create it "
                "there, or set destination.create_missing_references: true",
                error_type="validation",
            )  # fmt: skip
        with self._lock:  # one create per name, whichever writer meets it first
            found = index.find(name)
            if found is not None:
                return found
            body = {"isArchived": False, "isDraft": False,
                    "fieldData": {"name": name, "slug": slugify(name)}}  # fmt: skip
            try:
                item = self.request(
                    "POST", f"/collections/{index.collection_id}/items", json=body
                ).json()
            except AlreadyExists:  # another process (a shard) created it since the listing
                again = self._indexes[index.collection_id] = self._read(index.collection_id)
                found = again.find(name)
                if found is None:
                    raise
                return found
            if self.publish:
                self.request("POST", f"/collections/{index.collection_id}/items/publish",
                             json={"itemIds": [item["id"]]})  # fmt: skip
            index.add(item)
            self.created.append(f"{name!r} in {index.shown}")
            return str(item["id"])


def _target(field_: dict[str, Any]) -> str:
    found = target(field_)
    if found is None:
        raise PermanentError(f"{field_.get('slug')}: the Reference field names no collection "
                             "(validations.collectionId)", error_type="validation")  # fmt: skip
    return found
