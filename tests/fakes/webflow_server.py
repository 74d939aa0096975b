"""A real HTTP server on 127.0.0.1 that behaves like the Webflow Data API v2 for one site.

It follows the reference sheet's shapes (tests/test_fakes_contract.py checks them with Webflow's own
SDK): bearer auth, the site's collection list, collection schema with Option fields, items with
create (202) / update (200) / delete (204) / publish (202), one at a time or many at once (an
`items` list, `/items/bulk`), the `/live` variants, the slug and name filters, sortBy/sortOrder and
offset pagination, a per-window rate limit with X-RateLimit-* headers and 429 + Retry-After,
duplicate slugs as 400 validation_error. Faults can be injected: 500s, answers slower than the
client's timeout (the write is still applied), dropped connections, and latency.

The publish model is Webflow's since 2025-07-07 (changelog 2025-06-23 "Breaking changes for CMS
publishing"; developers.webflow.com docs/working-with-the-cms/publishing): each item has a live
copy apart from the staged one (`state.live`), changed only by a publish and taken down only by
`DELETE .../items/live`; see `_publish_now`, `_apply`, `_remove` and `_publish_site` for each rule.
Open questions of the documents are switches: `slug_clash` (does a multi-item create refuse a
clashing slug, or suffix it as Webflow's migration skill says?), `string_details`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.fakes import webflow_assets, webflow_refs
from tests.fakes.base import JsonHandler, ThreadedServer

CATEGORIES = ["Engineering", "Data", "Cloud", "Security", "AI"]
MAX_GROUP = 100  # items per list, multi-item write and publish
SORT_KEYS = {"lastPublished", "name", "slug", "createdOn", "lastUpdated"}
# X-RateLimit-Limit per API key: 60 requests/min on Starter/Basic, 120 on CMS, eCommerce and
# Business (developers.webflow.com reference/rate-limits); a site with a CMS collection is CMS+.
PLAN_LIMITS = {"cms": 120, "basic": 60}
SITE_PUBLISH_EVERY_S = 60.0  # POST /sites/{id}/publish: once a minute (reference/rate-limits)
SLUG_CLASH = ("refuse", "suffix")
# RichText: "The API doesn't currently support code blocks in Rich Text fields. Passing code
# blocks will result in an empty string." (reference/field-types-item-values): a <pre> block's
# content is dropped (inline <code> in a paragraph is not a code block and is kept)
CODE_BLOCK = re.compile(r"(<pre\b[^>]*>).*?(</pre>)", re.IGNORECASE | re.DOTALL)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def blog_fields(categories: list[str] | None = None, extra_required: list[str] | None = None,
                without: list[str] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The fields of Webflow's blog template collection."""
    fields = [
        ("name", "PlainText", True), ("slug", "PlainText", True), ("post-body", "RichText", False),
        ("post-summary", "PlainText", False), ("main-image", "Image", False),
        ("featured", "Switch", False), ("category", "Option", False),
        ("publish-date", "DateTime", False), ("seo-title", "PlainText", False),
        ("seo-description", "PlainText", False), ("reading-time", "Number", False),
    ]  # fmt: skip
    fields += [(slug, "PlainText", True) for slug in extra_required or []]
    out = []
    for slug, kind, required in fields:
        if slug in (without or []):
            continue
        entry: dict[str, Any] = {
            "id": uuid.uuid4().hex[:24], "isRequired": required, "isEditable": True, "type": kind,
            "slug": slug, "displayName": slug.replace("-", " ").title(), "helpText": "",
            "validations": None,
        }  # fmt: skip
        if kind == "Option":
            options = categories if categories is not None else CATEGORIES
            entry["validations"] = {
                "options": [{"name": n, "id": f"opt-{n.lower()}"} for n in options]
            }
        out.append(entry)
    return out


@dataclass
class Faults:
    """What goes wrong, and how often. Rates are fractions of write requests."""

    error_rate: float = 0.0  # 500 internal_error
    error_slugs: set[str] = field(default_factory=set)  # always 500 for these (see error_times)
    error_times: int = 0  # error_slugs fail only their first N writes (0: always)
    error_while: str | None = None  # error_slugs fail only while this file exists (an outage)
    listing_lag_s: float = 0.0  # listings leave out items created less than this long ago
    bad_request_slugs: set[str] = field(default_factory=set)  # always 400 validation_error
    slow_rate: float = 0.0  # answer after slow_seconds; the write is applied first
    slow_seconds: float = 0.0
    drop_rate: float = 0.0  # close the connection with no answer; the write is applied first
    latency: tuple[float, float] = (0.0, 0.0)  # every answer waits uniform(lo, hi) seconds
    # the cost of a write's content (a model, not a measurement of Webflow: see WRITE_MODEL):
    # seconds per item written, per Image field fetched into the CDN, per KB of field data
    item_latency_s: float = 0.0
    image_latency_s: float = 0.0
    kb_latency_s: float = 0.0
    # while this file exists every write waits slow_while_s (under a client's timeout), so a
    # test can keep a writer busy until something else has happened, then let it go on
    slow_while: str | None = None
    slow_while_s: float = 3.0
    publish_errors: int = 0  # the first N publish requests answer 500 (nothing is published)
    # with skipInvalidFiles (default true) an invalid or unreachable file is skipped and the item
    # written without it; false fails the request (openapi/v2.yml, the `skipInvalidFiles` query
    # parameter of item create/update). These slugs' Image fields are such files.
    skip_image_slugs: set[str] = field(default_factory=set)
    seed: int = 7


class WebflowState:
    """The server's data, guarded by one lock."""

    def __init__(self, collection_id: str, token: str, fields: list[dict[str, Any]],
                 rate_limit: int, window_s: float, faults: Faults,
                 site_id: str | None = None, collection_published: bool = True,
                 slug_clash: str | None = None, string_details: bool = False) -> None:  # fmt: skip
        self.collection_id, self.token, self.fields = collection_id, token, fields
        self.site_id = site_id or uuid.uuid4().hex[:24]
        self.created = _now()
        # a brand-new collection must be published once (a site publish) before its items can be
        # published (docs/working-with-the-cms/publishing); the site's lastPublished says so: a
        # collection created after it was never published
        self.collection_published = collection_published
        self.site_published = _now() if collection_published else None
        self.site_publish_at = float("-inf")  # monotonic time of the last site publish
        # the open question (Webflow's skill wfu-migrate-cms: a bulk create "silently appends a
        # random suffix" to a clashing slug; the API reference documents only the refusal);
        # BATCHGATE_FAKE_SLUG_CLASH=suffix runs any test file under the other answer
        self.slug_clash = slug_clash or os.environ.get("BATCHGATE_FAKE_SLUG_CLASH") or "refuse"
        assert self.slug_clash in SLUG_CLASH, self.slug_clash
        self.string_details = string_details  # details entries may be strings (apis.md)
        self.rate_limit, self.window_s, self.faults = rate_limit, window_s, faults
        self.items: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.rng = random.Random(faults.seed)
        self.window_start = time.monotonic()
        self.failures: dict[str, int] = {}  # writes refused so far, by slug (for error_times)
        self.born: dict[str, float] = {}  # when each item was created (for listing_lag_s)
        self.window_count = 0
        self.requests: list[tuple[float, str, str, int]] = []  # (time, method, path, status)
        self.live: dict[str, dict[str, Any]] = {}  # id -> the item as the live site shows it
        # the request log of creates: every item create the fake judged (applied, suffixed, or
        # refused because its own slug was taken), by the slug sent. A client that creates an
        # item twice shows a count of 2 whichever way the fake answers the clash
        self.creates: Counter[str] = Counter()
        # the site's assets and the referenced collections (WebflowServer sets its own; a state
        # built directly, as some tests do, has none of either)
        self.assets = webflow_assets.AssetState(self.site_id, False)
        self.ref_collections: dict[str, Any] = {}

    @property
    def published(self) -> set[str]:
        """The ids the live site shows."""
        with self.lock:
            return set(self.live)

    def live_site(self) -> dict[str, dict[str, Any]]:
        """What the live site shows: {slug: fieldData} of every live copy."""
        with self.lock:
            return {i["fieldData"].get("slug"): dict(i["fieldData"]) for i in self.live.values()}

    def take_quota(self) -> tuple[bool, int, float]:
        """(allowed, remaining, seconds until the window resets)."""
        with self.lock:
            now = time.monotonic()
            if now - self.window_start >= self.window_s:
                self.window_start, self.window_count = now, 0
            reset = self.window_s - (now - self.window_start)
            if self.window_count >= self.rate_limit:
                return False, 0, reset
            self.window_count += 1
            return True, self.rate_limit - self.window_count, reset

    def roll(self, rate: float) -> bool:
        with self.lock:
            return rate > 0 and self.rng.random() < rate

    def still_failing(self, slug: str) -> bool:
        if self.faults.error_while is not None:
            return os.path.exists(self.faults.error_while)
        with self.lock:
            if self.faults.error_times and self.failures.get(slug, 0) >= self.faults.error_times:
                return False
            self.failures[slug] = self.failures.get(slug, 0) + 1
            return True

    def slugs(self) -> list[str]:
        with self.lock:
            return [i["fieldData"].get("slug") for i in self.items.values()]


class WebflowServer(ThreadedServer):
    """Starts the fake API in a thread; `base_url` is what the destination's base_url takes."""

    prefix = "/v2"

    def __init__(self, collection_id: str | None = None, token: str = "test-token",
                 fields: list[dict[str, Any]] | None = None, rate_limit: int = 1000,
                 window_s: float = 60.0, faults: Faults | None = None,
                 site_id: str | None = None, plan: str | None = None,
                 collection_published: bool = True, slug_clash: str | None = None,
                 string_details: bool = False,
                 ref_collections: list[webflow_refs.RefCollection] | None = None,
                 rehost_body: bool = False) -> None:  # fmt: skip
        """`plan` ("cms" or "basic") sets the real limit per 60 s; else `rate_limit` per window.
        `ref_collections`: the collections Reference fields name (webflow_refs.blog_template);
        `rehost_body`: RichText `<img>` copied to the CDN too (an open question, webflow_assets)."""
        collection_id = collection_id or uuid.uuid4().hex[:24]
        # BATCHGATE_FAKE_COLLECTION=template serves Webflow's blog template by default (a Reference
        # category, MultiReference tags: webflow_refs.blog_template) to any test file
        if fields is None and os.environ.get("BATCHGATE_FAKE_COLLECTION") == "template":
            fields, ref_collections = webflow_refs.blog_template()
        if plan is not None:
            rate_limit, window_s = PLAN_LIMITS[plan], 60.0
        state = WebflowState(collection_id, token, fields or blog_fields(), rate_limit,
                             window_s, faults or Faults(), site_id, collection_published,
                             slug_clash, string_details)  # fmt: skip
        state.assets = webflow_assets.AssetState(state.site_id, rehost_body)
        state.ref_collections = {c.id: c for c in ref_collections or []}
        super().__init__(_Handler, state)
        self.asset_host = webflow_assets.AssetHost(state.assets)  # S3 upload and CDN

    def close(self) -> None:
        super().close()
        host = getattr(self, "asset_host", None)  # a subclass may build its server another way
        if host is not None:
            host.close()

    @property
    def items(self) -> dict[str, dict[str, Any]]:
        return self.state.items


class _Handler(JsonHandler):
    state: WebflowState

    # --- plumbing -------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        state = self.state
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.headers.get("Authorization") != f"Bearer {state.token}":
            self._send(401, {"code": "not_authorized", "message": "Request not authorized",
                             "externalReference": None, "details": []}, method)  # fmt: skip
            return
        allowed, remaining, reset = state.take_quota()  # counted on arrival, as a real API does
        self._quota = (remaining, reset)
        low, high = state.faults.latency
        if high > 0:
            time.sleep(random.uniform(low, high))
        gate = state.faults.slow_while
        if gate and method in ("POST", "PATCH", "PUT", "DELETE") and os.path.exists(gate):
            time.sleep(state.faults.slow_while_s)
        if not allowed:
            self._send(429, {"message": "Too Many Requests", "code": "too_many_requests",
                             "externalReference": None, "details": []}, method,
                       {"Retry-After": str(max(1, math.ceil(reset)))})  # fmt: skip
            return
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self._error(400, "validation_error", "Invalid JSON body", method)
            return
        if method in ("POST", "PATCH") and isinstance(body, dict):
            time.sleep(_write_cost(body, len(raw), state.faults))
        self._route(method, self.path, body)

    def _route(self, method: str, path: str, body: dict[str, Any]) -> None:
        cid, site = re.escape(self.state.collection_id), re.escape(self.state.site_id)
        items = rf"/v2/collections/{cid}/items"
        url_path, _, query = path.partition("?")
        params = {k: v[0] for k, v in parse_qs(query).items()}  # assets, referenced collections:
        if webflow_assets.route(self, method, url_path, params, body) or webflow_refs.route(
            self, method, url_path, params, body
        ):
            return
        one = r"/(?P<item>(?!live$|bulk$|publish$)[^/]+)"
        routes = [  # the /live variants publish (or unpublish) what they write
            ("GET", r"/v2/sites", self._list_sites),
            ("GET", rf"/v2/sites/{site}", self._get_site),
            ("POST", rf"/v2/sites/{site}/publish", self._publish_site),
            ("GET", rf"/v2/sites/{site}/collections", self._list_collections),
            ("GET", rf"/v2/collections/{cid}", self._get_collection),
            ("GET", rf"{items}(?P<live>/live)?", self._list_items),
            ("POST", rf"{items}(?P<live>/live)?", self._create_item),
            ("POST", rf"{items}/bulk", self._create_bulk),
            ("PATCH", rf"{items}(?P<live>/live)?", self._update_items),
            ("DELETE", rf"{items}(?P<live>/live)?", self._delete_items),
            ("POST", rf"{items}/publish", self._publish),
            ("GET", rf"{items}{one}(?P<live>/live)?", self._get_item),
            ("PATCH", rf"{items}{one}(?P<live>/live)?", self._update_item),
            ("DELETE", rf"{items}{one}(?P<live>/live)?", self._delete_item),
        ]
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, url_path)
            if verb == method and match:
                handler(method, body, query, **match.groupdict())
                return
        self._error(404, "resource_not_found", f"No route {method} {url_path}", method)

    def _send(
        self, status: int, payload: Any, method: str, headers: dict[str, str] | None = None
    ) -> None:
        data = b"" if status == 204 else json.dumps(payload).encode()
        remaining, _ = getattr(self, "_quota", (self.state.rate_limit, 0))
        # X-RateLimit-Limit is per minute (reference/rate-limits): a test's shorter window says
        # what it allows in a minute
        per_minute = round(self.state.rate_limit * 60.0 / self.state.window_s)
        quota = {"X-RateLimit-Limit": str(per_minute),
                 "X-RateLimit-Remaining": str(remaining)}  # fmt: skip
        self._reply(method, status, data, {**quota, **(headers or {})})

    def _error(self, status: int, code: str, message: str, method: str,
               details: list[dict[str, str]] | None = None) -> None:  # fmt: skip
        where = getattr(self, "_where", "")  # in a multi-item write, the item's index: items[n].
        details = [{**d, "param": where + d["param"]} if d["param"] != "slug" else d
                   for d in details or []]  # fmt: skip
        shown: list[Any] = details
        if self.state.string_details:  # `details` entries may be strings (apis.md, Webflow's Error)
            shown = [f"{d['param']}: {d['description']}" for d in details]
        self._send(status, {"code": code, "message": message, "externalReference": None,
                            "details": shown}, method)  # fmt: skip

    def _write_faults(self, method: str, slug: str | None) -> bool:
        """Inject a fault before a write; True if the answer was already sent."""
        faults = self.state.faults
        if slug in faults.bad_request_slugs:
            self._error(400, "validation_error", "Validation Error", method,
                        [{"param": "fieldData.name", "description": "Field is invalid"}])  # fmt: skip
            return True
        if (slug in faults.error_slugs and self.state.still_failing(slug)) or self.state.roll(
            faults.error_rate
        ):
            self._error(500, "internal_error", "Internal Server Error", method)
            return True
        return False

    def _after_write(self, status: int, payload: Any, method: str) -> None:
        """The write is applied; the answer may still be slow or never come."""
        faults = self.state.faults
        if self.state.roll(faults.drop_rate):
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(2)
            return
        if self.state.roll(faults.slow_rate):
            time.sleep(faults.slow_seconds)
        self._send(status, payload, method)

    # --- API ------------------------------------------------------------------------------

    def _collection(self) -> dict[str, Any]:
        return {"id": self.state.collection_id, "displayName": "Blog Posts",
                "singularName": "Blog Post", "slug": "blog", "createdOn": self.state.created,
                "lastUpdated": self.state.created}  # fmt: skip

    def _site(self) -> dict[str, Any]:
        """The Site object (openapi/v2.yml `Site`): lastPublished null until a site publish."""
        return {"id": self.state.site_id, "workspaceId": "ws", "displayName": "Blog",
                "shortName": "blog", "createdOn": self.state.created,
                "lastUpdated": self.state.created, "lastPublished": self.state.site_published,
                "previewUrl": None, "timeZone": "UTC", "customDomains": [], "locales": None}  # fmt: skip

    def _list_sites(self, method: str, body: dict, query: str) -> None:
        self._send(200, {"sites": [self._site()]}, method)

    def _get_site(self, method: str, body: dict, query: str) -> None:
        self._send(200, self._site(), method)

    def _publish_site(self, method: str, body: dict, query: str) -> None:
        """Once a minute (reference/rate-limits). Publishes every item queued (isDraft false with
        changes since its last publish), drops the live copy of an item deleted while staged
        (a staged delete leaves the live site until the next site publish: community evidence,
        apis.md), and publishes the collection itself (docs/working-with-the-cms/publishing)."""
        with self.state.lock:
            wait = self.state.site_publish_at + SITE_PUBLISH_EVERY_S - time.monotonic()
            if wait <= 0:
                self.state.site_publish_at = time.monotonic()
                self._publish_queued()
        if wait > 0:
            self._send(429, {"message": "Too Many Requests", "code": "too_many_requests",
                             "externalReference": None, "details": []}, method,
                       {"Retry-After": str(math.ceil(wait))})  # fmt: skip
            return
        self._send(202, {"customDomains": [], "publishToWebflowSubdomain": True}, method)

    def _publish_queued(self) -> None:
        """Under the lock: a site publish."""
        state = self.state
        state.collection_published, state.site_published = True, _now()
        for item_id in [i for i in state.live if i not in state.items]:
            del state.live[item_id]
        for item in state.items.values():
            if not item["isDraft"] and _queued(item, state.live.get(item["id"])):
                self._publish_now(item)

    def _list_collections(self, method: str, body: dict, query: str) -> None:
        self._send(200, {"collections": [self._collection()]}, method)

    def _get_collection(self, method: str, body: dict, query: str) -> None:
        self._send(200, {**self._collection(), "fields": self.state.fields}, method)

    def _list_items(self, method: str, body: dict, query: str, live: str | None = None) -> None:
        params = {k: v[0] for k, v in parse_qs(query).items()}
        offset, limit = int(params.get("offset", 0)), min(int(params.get("limit", 100)), 100)
        sort_by, order = params.get("sortBy"), params.get("sortOrder", "asc")
        if (sort_by and sort_by not in SORT_KEYS) or order not in ("asc", "desc"):
            self._error(400, "validation_error", "Validation Error", method,
                        [{"param": "sortOrder" if order not in ("asc", "desc") else "sortBy",
                          "description": "Invalid value"}])  # fmt: skip
            return
        lag = self.state.faults.listing_lag_s
        with self.state.lock:
            source = self.state.live if live else self.state.items  # the live site's copies
            items = [dict(i) for i in source.values()
                     if not (lag and time.monotonic() - self.state.born.get(i["id"], 0) < lag)]  # fmt: skip
        for key in ("slug", "name"):
            if key in params:
                items = [i for i in items if i["fieldData"].get(key) == params[key]]
        if sort_by:
            items = _sorted(items, sort_by, descending=order == "desc")
        page = items[offset : offset + limit]
        self._send(200, {"items": page, "pagination": {"limit": limit, "offset": offset,
                                                       "total": len(items)}}, method)  # fmt: skip

    def _validate(self, field_data: dict[str, Any], method: str, item_id: str | None,
                  taken_too: Collection[str] = (), many: bool = False) -> bool:  # fmt: skip
        """Unknown fields, missing required ones (on create), duplicate slugs: 400 sent, False.
        A clashing slug of a multi-item create is suffixed instead when `slug_clash` says so."""
        known = {f["slug"]: f for f in self.state.fields}
        for slug in field_data:
            if slug not in known:
                self._error(400, "validation_error", "Validation Error", method,
                            [{"param": f"fieldData.{slug}", "description": "Field not found"}])  # fmt: skip
                return False
        # a Reference takes only item ids of its collection (webflow_refs.refused, its sources)
        wrong = webflow_refs.refused(self.state.fields, field_data,
                                     getattr(self.state, "ref_collections", {}))  # fmt: skip
        if wrong is not None:
            self._error(400, "validation_error", "Validation Error", method,
                        [{"param": wrong[0], "description": wrong[1]}])  # fmt: skip
            return False
        for slug, spec in known.items():
            if spec["isRequired"] and item_id is None and not field_data.get(slug):
                self._error(400, "validation_error", "Validation Error", method,
                            [{"param": f"fieldData.{slug}", "description": "Field is required"}])  # fmt: skip
                return False
        slug = field_data.get("slug")
        with self.state.lock:
            taken = any(i["fieldData"].get("slug") == slug and i["id"] != item_id
                        for i in self.state.items.values())  # fmt: skip
        if slug and (taken or slug in taken_too):
            if item_id is None:
                with self.state.lock:
                    self.state.creates[slug] += 1
            if item_id is None and many and self.state.slug_clash == "suffix":
                field_data["slug"] = f"{slug}-{self.state.rng.getrandbits(24):06x}"
                field_data["_sent_slug"] = slug
                return True
            # the error seen in the wild names `param: "slug"` (apis.md), never `items[n]`
            self._error(400, "validation_error", "Validation Error", method,
                        [{"param": "slug",
                          "description": f"Unique value is already in database: '{slug}'"}])  # fmt: skip
            return False
        return True

    def _accept(self, entries: list[dict[str, Any]], method: str,
                existing: list[dict[str, Any]] | None = None, many: bool = False) -> bool:  # fmt: skip
        """Faults, then validation, of every item of a write (all or none); False if answered.
        In a multi-item write an error's detail names the item: `items[n].fieldData.slug`."""
        try:
            return self._accept_each(entries, method, existing, many)
        finally:
            self._where = ""

    def _accept_each(self, entries: list[dict[str, Any]], method: str,
                     existing: list[dict[str, Any]] | None, many: bool) -> bool:  # fmt: skip
        if not 1 <= len(entries) <= MAX_GROUP:
            self._error(400, "validation_error", "Validation Error", method,
                        [{"param": "items", "description": f"Between 1 and {MAX_GROUP} items"}])  # fmt: skip
            return False
        olds = existing or [None] * len(entries)  # type: ignore[list-item]
        slugs = [(e.get("fieldData") or {}).get("slug") or (o or {}).get("fieldData", {}).get("slug")
                 for e, o in zip(entries, olds, strict=True)]  # fmt: skip
        for n, slug in enumerate(slugs):
            self._where = f"items[{n}]." if many else ""
            if self._write_faults(method, slug):
                return False
        seen: set[str] = set()
        for n, (entry, old) in enumerate(zip(entries, olds, strict=True)):
            self._where = f"items[{n}]." if many else ""
            field_data = entry.get("fieldData") or {}
            if not isinstance(field_data, dict) or not self._validate(
                field_data, method, old["id"] if old else None, seen, many
            ):
                if not isinstance(field_data, dict):
                    self._error(400, "validation_error", "Validation Error", method,
                                [{"param": "fieldData", "description": "Must be an object"}])  # fmt: skip
                return False
            seen.add(field_data.get("slug") or "")
        return True

    def _publish_now(self, item: dict[str, Any]) -> None:
        """Under the lock: the item is live as of now, its live copy the staged item's."""
        item["isDraft"], item["lastPublished"] = False, _now()
        self.state.live[item["id"]] = json.loads(json.dumps(item))

    def _new(self, entry: dict[str, Any], live: bool) -> dict[str, Any]:
        now = _now()
        field_data = dict(entry.get("fieldData") or {})
        sent = field_data.pop("_sent_slug", None)
        item = {"id": uuid.uuid4().hex[:24], "cmsLocaleId": "loc", "lastPublished": None,
                "lastUpdated": now, "createdOn": now, "isArchived": bool(entry.get("isArchived")),
                "isDraft": bool(entry.get("isDraft", False)),
                "fieldData": self._stored(field_data, entry)}  # fmt: skip
        with self.state.lock:
            if sent is None:  # a suffixed create was counted when its clash was judged
                self.state.creates[field_data.get("slug") or ""] += 1
            self.state.items[item["id"]] = item
            self.state.born[item["id"]] = time.monotonic()
            if live:
                self._publish_now(item)
        return item

    def _stored(self, field_data: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
        """What Webflow keeps of written field data: RichText without its code blocks, an Image
        the fetch refused left out (skipInvalidFiles true, the default)."""
        kinds = {f["slug"]: f["type"] for f in self.state.fields}
        kept = {}
        for slug, value in field_data.items():
            if kinds.get(slug) == "RichText" and isinstance(value, str):
                value = CODE_BLOCK.sub(r"\1\2", value)
                if hasattr(self.state, "assets"):  # <img> re-hosted too? (webflow_assets)
                    value = self.state.assets.rehost_html(value)
            if kinds.get(slug) == "Image" and entry.get("_skip_image"):
                continue
            kept[slug] = value
        return kept

    def _files_refused(self, entries: list[dict[str, Any]], query: str, method: str) -> bool:
        """Entries whose Image cannot be fetched: skipped (default), or the request fails with
        skipInvalidFiles=false (openapi/v2.yml); True if the 400 was sent."""
        strict = parse_qs(query).get("skipInvalidFiles", ["true"])[0] == "false"
        bad = [e for e in entries if (e.get("fieldData") or {}).get("slug")
               in self.state.faults.skip_image_slugs]  # fmt: skip
        bad += [e for e in entries if e not in bad and self._rehost_images(e)]
        if bad and strict:
            self._error(400, "validation_error", "Validation Error", method,
                        [{"param": "fieldData.main-image", "description": "Invalid file"}])  # fmt: skip
            return True
        for entry in bad:
            entry["_skip_image"] = True
        return False

    def _rehost_images(self, entry: dict[str, Any]) -> bool:
        """Copy the entry's Image fields into the CDN as {fileId, url, alt} (webflow_assets,
        its sources); True if one is an invalid file (unreachable, an error, over 4 MB)."""
        assets = getattr(self.state, "assets", None)
        data = entry.get("fieldData")
        if assets is None or not isinstance(data, dict):
            return False
        invalid = False
        for spec in self.state.fields:
            if spec["type"] == "Image" and spec["slug"] in data:
                data[spec["slug"]], why = assets.rehost(data[spec["slug"]])
                invalid = invalid or why is not None
        return invalid

    def _create_item(self, method: str, body: dict, query: str, live: str | None = None) -> None:
        """One item, or several with an `items` list (answered as a list)."""
        entries = body["items"] if isinstance(body.get("items"), list) else [body]
        if live and not self._collection_live(method):
            return
        if self._files_refused(entries, query, method):
            return
        if not self._accept(entries, method, many="items" in body):
            return
        created = [self._new(entry, bool(live)) for entry in entries]
        self._after_write(202, {"items": created} if "items" in body else created[0], method)

    def _create_bulk(self, method: str, body: dict, query: str) -> None:
        """`fieldData` an object (one item answered) or a list (`{"items": [...]}`)."""
        many = isinstance(body.get("fieldData"), list)
        flags = {k: body[k] for k in ("isDraft", "isArchived") if k in body}
        entries = [{**flags, "fieldData": data}
                   for data in (body.get("fieldData") if many else [body.get("fieldData")])]  # fmt: skip
        if self._files_refused(entries, query, method) or not self._accept(
            entries, method, many=many
        ):
            return
        created = [self._new(entry, False) for entry in entries]
        for item in created:  # a bulk item names every locale it was written in
            item["cmsLocaleIds"] = body.get("cmsLocaleIds") or [item["cmsLocaleId"]]
        answer = [{k: v for k, v in i.items() if k != "cmsLocaleId"} for i in created]
        self._after_write(202, {"items": answer} if many else answer[0], method)

    def _found(self, ids: list[Any], method: str) -> list[dict[str, Any]] | None:
        """The items of these ids, or None once a 404 is sent."""
        with self.state.lock:
            found = [self.state.items.get(str(i)) for i in ids]
        if None in found:
            self._error(404, "resource_not_found", "Item not found", method)
            return None
        return found  # type: ignore[return-value]

    def _apply(self, item: dict[str, Any], entry: dict[str, Any], live: bool) -> None:
        """A staged write. Since 2025-07-07 (changelog 2025-06-23) isDraft true on a live item
        keeps it live with the change held as a draft, and isDraft false leaves the change
        queued for the next site publish: only a publish (or a /live write) changes the live copy."""
        with self.state.lock:
            merged = {**item["fieldData"], **self._stored(entry.get("fieldData") or {}, entry)}
            # a field set to null is cleared, as the real API does
            item["fieldData"] = {k: v for k, v in merged.items() if v is not None}
            for flag in ("isDraft", "isArchived"):
                if flag in entry:
                    item[flag] = bool(entry[flag])
            item["lastUpdated"] = _now()
            if live:
                self._publish_now(item)

    def _get_item(self, method: str, body: dict, query: str, item: str,
                  live: str | None = None) -> None:  # fmt: skip
        found = self._found([item], method)
        if found is None:
            return
        with self.state.lock:
            copy = self.state.live.get(item)
        if live and copy is None:
            self._error(404, "resource_not_found", "Live item not found", method)
            return
        self._send(200, copy if live else found[0], method)

    def _update_item(self, method: str, body: dict, query: str, item: str,
                     live: str | None = None) -> None:  # fmt: skip
        found = self._found([item], method)
        if found is None or (live and not self._collection_live(method)):
            return
        if self._files_refused([body], query, method) or not self._accept([body], method, found):
            return
        self._apply(found[0], body, bool(live))
        self._after_write(200, found[0], method)

    def _update_items(self, method: str, body: dict, query: str, live: str | None = None) -> None:
        entries = body.get("items") if isinstance(body.get("items"), list) else []
        found = self._found([e.get("id") for e in entries], method) if entries else []
        if found is None or (live and not self._collection_live(method)):
            return
        if self._files_refused(entries, query, method) or not self._accept(
            entries, method, found, many=True
        ):
            return
        for item, entry in zip(found, entries, strict=True):
            self._apply(item, entry, bool(live))
        self._after_write(200, {"items": found}, method)

    def _remove(self, ids: list[Any], live: bool) -> None:
        """Delete these staged items, or (live) take them off the site: `DELETE .../items/live`
        unpublishes and sets isDraft true (apis.md, openapi/v2.yml). A staged delete leaves the
        live copy on the site until the next site publish (community evidence, apis.md)."""
        with self.state.lock:
            for item_id in map(str, ids):
                if not live:
                    del self.state.items[item_id]
                else:
                    self.state.live.pop(item_id, None)
                    self.state.items[item_id].update(isDraft=True, lastPublished=None)

    def _delete_item(self, method: str, body: dict, query: str, item: str,
                     live: str | None = None) -> None:  # fmt: skip
        if self._found([item], method) is not None:
            self._remove([item], bool(live))
            self._send(204, None, method)

    def _delete_items(self, method: str, body: dict, query: str, live: str | None = None) -> None:
        ids = [e.get("id") for e in body.get("items") or [] if isinstance(e, dict)]
        if not 1 <= len(ids) <= MAX_GROUP:
            self._error(400, "validation_error", "Validation Error", method,
                        [{"param": "items", "description": f"Between 1 and {MAX_GROUP} items"}])  # fmt: skip
            return
        if self._found(ids, method) is not None:
            self._remove(ids, bool(live))
            self._send(204, None, method)

    def _publish(self, method: str, body: dict, query: str) -> None:
        """`itemIds`, or `items` with locales; errors are strings, as Webflow's model says."""
        ids = [str(i) for i in body.get("itemIds") or []]
        ids += [str(e.get("id")) for e in body.get("items") or [] if isinstance(e, dict)]
        with self.state.lock:
            refuse = self.state.faults.publish_errors > 0
            if refuse:
                self.state.faults.publish_errors -= 1
        if refuse:
            self._error(500, "internal_error", "Internal Server Error", method)
            return
        if len(ids) > MAX_GROUP:
            self._error(400, "validation_error", "Too many items", method)
            return
        if not self._collection_live(method):
            return
        with self.state.lock:
            ok = [i for i in ids if i in self.state.items]
            for i in ok:
                self._publish_now(self.state.items[i])
        errors = [f"Item not found: {i}" for i in ids if i not in ok]
        self._send(202, {"publishedItemIds": ok, "errors": errors}, method)

    def _collection_live(self, method: str) -> bool:
        """A brand-new collection must be published once (a site publish) before its items can be
        published (docs/working-with-the-cms/publishing); the error's status is undocumented:
        409 conflict here. False if it was sent."""
        if self.state.collection_published:
            return True
        self._error(409, "conflict", "Collection has not been published yet: publish the site "
                    "once before publishing its items", method)  # fmt: skip
        return False


# The latency model README's "write timeouts" measure against: 0.1-0.4 s an answer, 80 ms an item,
# 250 ms an Image fetched into the CDN, 2 ms a KB (an assumption: Webflow publishes no figures)
WRITE_MODEL = {"latency": (0.1, 0.4), "item_latency_s": 0.08, "image_latency_s": 0.25,
               "kb_latency_s": 0.002}  # fmt: skip


def _write_cost(body: dict[str, Any], size: int, faults: Faults) -> float:
    """Seconds a write's content costs under the fault's latency model."""
    entries = body.get("items") if isinstance(body.get("items"), list) else [body]
    if isinstance(body.get("fieldData"), list):
        entries = [{"fieldData": d} for d in body["fieldData"]]
    images = sum(1 for e in entries if isinstance(e, dict)
                 for v in (e.get("fieldData") or {}).values()
                 if isinstance(v, dict) and "url" in v)  # fmt: skip
    return (faults.item_latency_s * len(entries) + faults.image_latency_s * images
            + faults.kb_latency_s * size / 1024)  # fmt: skip


def _queued(item: dict[str, Any], live: dict[str, Any] | None) -> bool:
    """Changes not on the live site yet (the 'Queued to publish' state when isDraft is false)."""
    return live is None or live.get("fieldData") != item.get("fieldData")


def _sorted(items: list[dict[str, Any]], key: str, descending: bool) -> list[dict[str, Any]]:
    """Items by a sortBy key (a field's value or an item date); items without one go last."""

    def value(item: dict[str, Any]) -> Any:
        return item["fieldData"].get(key) if key in ("name", "slug") else item.get(key)

    having = sorted((i for i in items if value(i) is not None), key=value, reverse=descending)
    return having + [i for i in items if value(i) is None]


def main(argv: list[str] | None = None) -> None:
    """A local Webflow sandbox for trying batchgate by hand (the README's story uses it)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--collection", default="blogposts0000000000000000")
    parser.add_argument("--token", default="sandbox-token", help="the bearer token it accepts")
    parser.add_argument(
        "--fail",
        nargs="*",
        default=[],
        metavar="SLUG",
        help="answer 500 to writes of these slugs",
    )
    parser.add_argument(
        "--reject",
        nargs="*",
        default=[],
        metavar="SLUG",
        help="answer 400 validation_error to writes of these slugs",
    )
    parser.add_argument(
        "--fail-times",
        type=int,
        default=0,
        help="each --fail slug fails only its first N writes (0: always)",
    )
    parser.add_argument(
        "--fail-while",
        default=None,
        metavar="FILE",
        help="each --fail slug fails while FILE exists: an outage that ends when it is removed",
    )
    args = parser.parse_args(argv)
    faults = Faults(error_slugs=set(args.fail), bad_request_slugs=set(args.reject),
                    error_times=args.fail_times, error_while=args.fail_while)  # fmt: skip
    fields = blog_fields([*CATEGORIES, "DevOps"])
    state = WebflowState(args.collection, args.token, fields, 1000, 60.0, faults)
    sandbox = ThreadedServer(_Handler, state, args.port)
    sandbox.prefix = "/v2"
    print(f"Webflow sandbox on {sandbox.base_url}, collection {args.collection}", flush=True)
    try:
        sandbox.thread.join()
    except KeyboardInterrupt:
        sandbox.close()


if __name__ == "__main__":
    main()
