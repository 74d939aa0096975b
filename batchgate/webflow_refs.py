"""Reference and MultiReference fields: names (or slugs) of a record matched to item ids of the
referenced collection (plain Python, no HTTP).

A Reference takes an item id of the collection its `validations.collectionId` names, a
MultiReference a list of them (developers.webflow.com reference/field-types-item-values; apis.md,
"Corrections and additions", Field types); blog collections model categories and tags so.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

REFERENCE_KINDS = ("Reference", "MultiReference")


def is_reference(field_: dict[str, Any] | None) -> bool:
    return bool(field_) and field_.get("type") in REFERENCE_KINDS  # type: ignore[union-attr]


def target(field_: dict[str, Any]) -> str | None:
    """The referenced collection's id."""
    value = (field_.get("validations") or {}).get("collectionId")
    return str(value) if value else None


def names(value: Any, many: bool) -> list[str]:
    """The names a record value holds: a list, or (MultiReference) text split at commas."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple, set)):
        found = [str(v).strip() for v in value]
    elif many:
        found = [part.strip() for part in str(value).split(",")]
    else:
        found = [str(value).strip()]
    return list(dict.fromkeys(n for n in found if n))


def slugify(name: str) -> str:
    """A Webflow-style slug: lower case ASCII letters, digits and hyphens."""
    ascii_ = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-") or "item"


@dataclass
class RefIndex:
    """The items of one referenced collection, found by name (case-insensitive), slug or id."""

    collection_id: str
    display_name: str = ""
    _ids: dict[str, str] = field(default_factory=dict)
    known: list[str] = field(default_factory=list)  # names, as the collection spells them

    @classmethod
    def of(cls, collection_id: str, items: Iterable[dict[str, Any]],
           display_name: str = "") -> RefIndex:  # fmt: skip
        index = cls(collection_id, display_name)
        for item in items:
            index.add(item)
        return index

    def add(self, item: dict[str, Any]) -> None:
        data = item.get("fieldData") or {}
        item_id = str(item.get("id"))
        self._ids[item_id] = item_id
        for key in (data.get("slug"), data.get("name")):
            if key:
                self._ids.setdefault(str(key).casefold(), item_id)
        if data.get("name"):
            self.known.append(str(data["name"]))

    def find(self, name: str) -> str | None:
        return self._ids.get(name) or self._ids.get(name.casefold()) or self._ids.get(
            slugify(name))  # fmt: skip

    @property
    def shown(self) -> str:
        return f"{self.display_name or 'the referenced'} collection ({self.collection_id})"
