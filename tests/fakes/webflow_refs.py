"""The fake Webflow's referenced collections (Categories, Tags) and Webflow's blog template.

Sources (../shared/reference/apis.md, "Corrections and additions", Field types):
- Reference takes an item id of `validations.collectionId`; MultiReference a list of ids
  (developers.webflow.com reference/field-types-item-values). A name is refused here: no source
  says a Reference accepts one.
- Webflow's blog template has `name`, `slug`, `post-body` (RichText), `post-summary`,
  `main-image`, `thumbnail-image`, `featured`, `color`, and models categories as a Reference to
  their own collection (Webflow's CMS-migration skill `wfu-migrate-cms`; no Option category was
  found in any template).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

CATEGORIES = ["Engineering", "Data", "Cloud", "Security", "AI"]
TAGS = ["python", "sql", "notion", "webflow"]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@dataclass
class RefCollection:
    """A collection other items reference: name and slug only, as the template's Categories."""

    display_name: str
    names: list[str] = field(default_factory=list)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for name in self.names:
            self.add(name, _slug(name))

    def add(self, name: str, slug: str) -> dict[str, Any]:
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        item = {"id": uuid.uuid4().hex[:24], "cmsLocaleId": "loc", "lastPublished": now,
                "lastUpdated": now, "createdOn": now, "isArchived": False, "isDraft": False,
                "fieldData": {"name": name, "slug": slug}}  # fmt: skip
        with self.lock:
            self.items[item["id"]] = item
        return item

    def by_name(self, name: str) -> dict[str, Any] | None:
        with self.lock:
            return next((i for i in self.items.values() if i["fieldData"]["name"] == name), None)

    def schema(self) -> dict[str, Any]:
        fields = [_field("name", "PlainText", True), _field("slug", "PlainText", True)]
        return {"id": self.id, "displayName": self.display_name, "singularName": self.display_name,
                "slug": _slug(self.display_name), "fields": fields}  # fmt: skip


def _field(slug: str, kind: str, required: bool = False,
           validations: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    return {"id": uuid.uuid4().hex[:24], "isRequired": required, "isEditable": True, "type": kind,
            "slug": slug, "displayName": slug.replace("-", " ").title(), "helpText": "",
            "validations": validations}  # fmt: skip


def blog_template(categories: list[str] | None = None, tags: list[str] | None = None
                  ) -> tuple[list[dict[str, Any]], list[RefCollection]]:  # fmt: skip
    """Webflow's blog template collection (fields), and its Categories and Tags collections."""
    cats = RefCollection("Categories", list(CATEGORIES if categories is None else categories))
    tagged = RefCollection("Tags", list(TAGS if tags is None else tags))
    fields = [
        _field("name", "PlainText", True), _field("slug", "PlainText", True),
        _field("post-body", "RichText"), _field("post-summary", "PlainText"),
        _field("main-image", "Image"), _field("thumbnail-image", "Image"),
        _field("featured", "Switch"), _field("color", "Color"),
        _field("category", "Reference", validations={"collectionId": cats.id}),
        _field("tags", "MultiReference", validations={"collectionId": tagged.id}),
        _field("publish-date", "DateTime"), _field("seo-title", "PlainText"),
        _field("seo-description", "PlainText"), _field("reading-time", "Number"),
    ]  # fmt: skip
    return fields, [cats, tagged]


def refused(fields: list[dict[str, Any]], field_data: dict[str, Any],
            collections: dict[str, RefCollection]) -> tuple[str, str] | None:  # fmt: skip
    """(param, description) of a Reference value that is not an item id of its collection."""
    for spec in fields:
        if spec["type"] not in ("Reference", "MultiReference") or spec["slug"] not in field_data:
            continue
        value = field_data[spec["slug"]]
        target = collections.get((spec.get("validations") or {}).get("collectionId", ""))
        ids = value if spec["type"] == "MultiReference" else [value]
        if value is None:
            continue
        if spec["type"] == "MultiReference" and not isinstance(value, list):
            return f"fieldData.{spec['slug']}", "Must be an array of item ids"
        for one in ids:
            if target is None or not isinstance(one, str) or one not in target.items:
                return (f"fieldData.{spec['slug']}",
                        f"Referenced item not found: {one!r} is not an item id of collection "
                        f"{target.id if target else '?'}")  # fmt: skip
    return None


def route(handler: Any, method: str, path: str, query: dict[str, str], body: Any) -> bool:
    """The referenced collections' routes (schema, items listing, create, publish)."""
    collections: dict[str, RefCollection] = getattr(handler.state, "ref_collections", {}) or {}
    match = re.fullmatch(r"/v2/collections/([^/]+)(/items(?:/publish)?)?", path)
    if match is None or match.group(1) not in collections:
        return False
    ref, tail = collections[match.group(1)], match.group(2)
    if method == "GET" and tail is None:
        handler._send(200, ref.schema(), method)
    elif method == "GET" and tail == "/items":
        offset, limit = int(query.get("offset", 0)), min(int(query.get("limit", 100)), 100)
        with ref.lock:
            items = list(ref.items.values())
        handler._send(200, {"items": items[offset : offset + limit], "pagination": {
            "limit": limit, "offset": offset, "total": len(items)}}, method)  # fmt: skip
    elif method == "POST" and tail == "/items":
        data = (body or {}).get("fieldData") or {}
        if not data.get("name") or not data.get("slug"):
            handler._error(400, "validation_error", "Validation Error", method,
                           [{"param": "fieldData.name", "description": "Field is required"}])  # fmt: skip
        elif any(i["fieldData"]["slug"] == data["slug"] for i in ref.items.values()):
            handler._error(400, "validation_error", "Validation Error", method,
                           [{"param": "slug", "description":
                             f"Unique value is already in database: '{data['slug']}'"}])  # fmt: skip
        else:
            handler._send(202, ref.add(str(data["name"]), str(data["slug"])), method)
    elif method == "POST" and tail == "/items/publish":
        ids = [str(i) for i in (body or {}).get("itemIds") or []]
        handler._send(202, {"publishedItemIds": [i for i in ids if i in ref.items],
                            "errors": []}, method)  # fmt: skip
    else:
        handler._error(404, "resource_not_found", f"No route {method} {path}", method)
    return True
