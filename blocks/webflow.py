"""Webflow destination: a CMS collection through the Data API v2, with httpx."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from prefect.blocks.core import Block
from pydantic import Field, PrivateAttr, SecretStr

from batchgate.backoff import parse_retry_after
from batchgate.config import DEFAULT_FIELD_MAP, WebflowDestinationConfig
from batchgate.connectors import Capabilities, DestinationBase
from batchgate.destinations import DestinationCheck, WriteResult
from batchgate.errors import (
    AlreadyExists,
    ConfigError,
    FatalError,
    PermanentError,
    RetryableError,
    WriteError,
)
from batchgate.pacer import Pacer, existing_pacer, pacer_for
from batchgate.richtext import keep_code_blocks
from batchgate.secrets import require_token_url
from batchgate.webflow_assets import to_upload
from batchgate.webflow_refs import REFERENCE_KINDS, is_reference
from blocks.webflow_assets import AssetStore, ImageCheck, ImageFetcher, require_site
from blocks.webflow_refs import References

# HTTP status -> (what to do, DLQ error type). Unknown 4xx are permanent, unknown 5xx retryable.
STATUS_ACTIONS: dict[int, tuple[str, str]] = {
    400: ("permanent", "validation"),
    401: ("fatal", "auth"),
    403: ("fatal", "auth"),
    404: ("permanent", "api-error"),
    409: ("permanent", "validation"),
    422: ("permanent", "validation"),
    429: ("retry", "rate-limit"),
    500: ("retry", "api-error"),
    502: ("retry", "api-error"),
    503: ("retry", "api-error"),
    504: ("retry", "timeout"),
}
PUBLISH_GROUP = 100
MAX_GROUP = 100  # items per multi-item write and per list page (the API's maximum)
PACE_MARGIN = 0.99
SNAPSHOT_FRESH_S = 10.0  # a group's write-ahead snapshots are at most this old (one shared listing)
FEW_ITEMS = 10  # a group this small reads its items by id, not the listing
CLOCK_MARGIN_S = 2.0  # the server's timestamps have 1 s resolution: read a little further back
ITEM_INDEX = re.compile(r"^items\[(\d+)\]\.?")
# a duplicate slug is named by `param: "slug"` and the slug itself, never by `items[n]` (apis.md)
SLUG_TAKEN = re.compile(r"already in database: '(?P<slug>[^']*)'", re.IGNORECASE)
DEFAULT_RATE_PER_MINUTE = 60  # until an answer's X-RateLimit-Limit says the plan's limit
# An invalid or unreachable file fails the write instead of being skipped (skipInvalidFiles
# defaults to true: openapi/v2.yml, item create/update), so a refused image fails its item.
WRITE_PARAMS = {"skipInvalidFiles": "false"}
# A multi-item write waits longer than a read: WRITE_BASE_S plus WRITE_PER_ITEM_S an item
# (a 100-item create with bodies and images: 50 s; README, "Webflow: write timeouts").
WRITE_BASE_S, WRITE_PER_ITEM_S = 20.0, 0.3


class WebflowDestination(DestinationBase, Block):
    """Creates, updates, publishes and deletes items of one Webflow CMS collection."""

    _block_type_name = "Batchgate Webflow Destination"
    _block_type_slug = "batchgate-webflow-destination"
    _description = (
        "A Webflow CMS collection (Data API v2) that receives a batchgate job's items: drafts or "
        "live, paced to the plan's rate limit, with Retry-After honoured."
    )

    base_url: str = Field(default="https://api.webflow.com/v2", description="API base URL.")
    collection_id: str = Field(description="The CMS collection that receives the items.")
    token: SecretStr = Field(description="API token with CMS read and write access.")
    rate_per_minute: int | None = Field(
        default=None,
        description="Requests per minute to send at most; unset: the limit the API states "
        "(X-RateLimit-Limit: 120 on CMS plans, 60 on Basic), 60 until its first answer.",
    )
    publish_live: bool = Field(default=False, description="Publish items; drafts unless true.")
    field_map: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_FIELD_MAP),
        description="Item field -> collection field slug.",
    )
    site_url: str | None = Field(default=None, description="Public site URL, for links in reports.")
    link_template: str | None = Field(
        default=None, description="Item link with {slug}, {id}, {collection_id} (for reviewers)."
    )
    timeout_s: float = Field(default=10.0, description="Timeout of one HTTP request.")
    write_timeout_s: float | None = Field(
        default=None,
        description="Timeout of one multi-item write. Unset: fitted to its items (20 s + 0.3 s "
        "an item, at least timeout_s): a 100-item create with bodies and images gets 50 s.",
    )
    items_per_request: int = Field(
        default=MAX_GROUP, ge=1, le=MAX_GROUP,
        description="Items one create, update or delete request carries (1-100); 1: one request per item.",
    )  # fmt: skip
    # body images and references (issue 20): blocks/webflow_assets.py, blocks/webflow_refs.py
    upload_images: str = Field(
        default="hosted", pattern="^(hosted|all|none)$",
        description="Body images uploaded to the site's assets: hosted (those whose URL expires, "
        "e.g. Notion's files), all, or none.",
    )  # fmt: skip
    fit_images: bool = Field(default=False, description="Re-encode an image over 4 MB to fit.")
    allow_private_hosts: bool = Field(
        default=False, description="Image URLs may reach private addresses (network setting)."
    )
    create_missing_references: bool = Field(
        default=False, description="Create a referenced name its collection lacks, first."
    )

    _client: httpx.Client | None = PrivateAttr(default=None)
    _schema: dict[str, Any] | None = PrivateAttr(default=None)
    _quota_low: int | None = PrivateAttr(default=None)
    _stated_limit: int | None = PrivateAttr(default=None)  # X-RateLimit-Limit, per minute
    _site_cache: dict[str, Any] | None = PrivateAttr(default=None)  # {} once known to be unknown
    # what a rollback found and left on the live site: id -> (live when it started, live after)
    _live_changes: dict[str, tuple[bool, bool]] = PrivateAttr(default_factory=dict)
    _lock: threading.RLock = PrivateAttr(default_factory=threading.RLock)
    # What the collection holds, from list requests and our own answers (group mode only)
    _index: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)  # id -> item
    _by_slug: dict[str, str] = PrivateAttr(default_factory=dict)
    _complete: bool = PrivateAttr(default=False)  # a full listing was made: a missing id is gone
    _mark: float | None = PrivateAttr(default=None)  # server time: later changes not listed yet
    _refreshed: float = PrivateAttr(default=0.0)  # monotonic start of the last listing
    _server_now: float | None = PrivateAttr(default=None)  # the Date of the latest answer
    _lost: dict[str, float] = PrivateAttr(default_factory=dict)  # slug -> when its create was lost
    _refused: set[str] = PrivateAttr(default_factory=set)  # slugs whose create was refused whole
    _index_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _assets: AssetStore | None = PrivateAttr(default=None)
    _refs: References | None = PrivateAttr(default=None)
    _image_check: ImageCheck | None = PrivateAttr(default=None)
    _check_notes: list[str] = PrivateAttr(default_factory=list)  # the dry-run's, added to late

    @classmethod
    def from_config(
        cls, config: WebflowDestinationConfig, timeout_s: float = 10.0,
        write_timeout_s: float | None = None,
    ) -> WebflowDestination:  # fmt: skip
        token = config.token or _env_token()
        return cls(
            base_url=config.base_url.rstrip("/"), collection_id=config.collection_id, token=token,
            rate_per_minute=config.rate_per_minute, publish_live=config.publish,
            field_map=dict(config.field_map), site_url=config.site_url, timeout_s=timeout_s,
            write_timeout_s=write_timeout_s,
            link_template=config.link_template, items_per_request=config.items_per_request,
            fit_images=config.images.fit_limit, upload_images=config.images.upload,
            create_missing_references=config.create_missing_references,
        )  # fmt: skip

    # --- identity and limits ----------------------------------------------------------------

    @property
    def key(self) -> str:
        return f"webflow:{self.collection_id}"

    @property
    def rate_per_minute_in_use(self) -> int:
        """The job's own limit if it set one, else the API's (X-RateLimit-Limit), else 60."""
        shared = existing_pacer(self.pacer_key)  # another destination of the token may know it
        stated = self._stated_limit or (shared.stated_limit if shared is not None else None)
        return self.rate_per_minute or stated or DEFAULT_RATE_PER_MINUTE

    @property
    def rate_per_s(self) -> float:
        return self.rate_per_minute_in_use / 60.0

    @property
    def pacer_key(self) -> str:
        """Webflow limits requests per API key (reference/rate-limits): one pacer per token,
        whatever the collection; named by a hash, never the token."""
        digest = hashlib.sha256(self.token.get_secret_value().encode()).hexdigest()[:16]
        return f"webflow-token:{digest}"

    @property
    def pacer(self) -> Pacer:
        # 1% under the plan's rate: a late send must not push a window over the limit
        return pacer_for(self.pacer_key, self.rate_per_s * PACE_MARGIN)

    # --- protocol ---------------------------------------------------------------------------

    @property
    def needs_publish(self) -> bool:
        return self.publish_live

    @property
    def idempotent(self) -> bool:
        return False  # a POST that times out may still have created the item

    @property
    def capabilities(self) -> Capabilities:
        """Items are read, versioned (a hash of their field data) and restored; a live job
        publishes them by a separate call; requests are paced at the plan's rate."""
        return Capabilities(
            publish=self.publish_live, live=self.publish_live, snapshots=True, versions=True,
            restore=True, rate_per_s=self.rate_per_s, group_size=self.items_per_request,
            idempotent_upsert=False,
            drafts=True,
        )  # fmt: skip

    def record_key(self, record: Mapping[str, Any]) -> str:
        """An item is found by its slug, the collection's unique field."""
        return str(record.get("slug") or "")

    def find_many(self, keys: list[str]) -> dict[str, str]:
        """{slug: item id} of the items the collection holds (one listing in group mode)."""
        found = {key: self.find({"slug": key}) for key in keys}
        return {key: dest_id for key, dest_id in found.items() if dest_id is not None}

    def prepare(self) -> None:
        self._collection()
        self._require_live_collection()

    def check(self) -> DestinationCheck:
        """Read the collection schema: category options, mapped fields it lacks, required ones
        unmapped; a publishing job needs a collection that was published once."""
        schema = self._collection()
        self._require_live_collection()
        slugs = {f["slug"]: f for f in schema.get("fields", [])}
        mapped = set(self.field_map.values())
        category = slugs.get(self.field_map.get("category", ""))
        options = _options(category) if category else None
        return DestinationCheck(
            categories=[o["name"] for o in options] if options is not None else None,
            unmapped_fields=sorted(
                f"{k} -> {v}" for k, v in self.field_map.items() if v not in slugs
            ),
            missing_required=sorted(
                s for s, f in slugs.items() if f.get("isRequired") and s not in mapped
            ),
            notes=self._noted(self._unsent_fields()),
            record_problems=self._record_problems,
        )

    def _require_live_collection(self) -> None:
        """A brand-new collection must be published once (a site publish) before its items can
        be (docs/working-with-the-cms/publishing): a publishing job stops before any write. The
        site's lastPublished older than the collection (or none) means it never was."""
        if not self.publish_live:
            return
        site = self._site_of_collection()
        if site is None:
            return  # the token cannot read sites: the publish itself will say
        published, created = (
            _stamp(site.get("lastPublished")),
            _stamp(self._collection().get("createdOn")),
        )
        if published is None or (created is not None and created > published + CLOCK_MARGIN_S):
            raise FatalError(
                f"Webflow collection {self.collection_id} has never been published, so its items "
                "cannot be published. Fix: publish the site once (Webflow Designer: Publish, or "
                f"POST /sites/{site.get('id')}/publish), then run again; or set "
                "destination.publish: false to write drafts.",
                error_type="validation",
            )

    def _site_of_collection(self) -> dict[str, Any] | None:
        """The site holding the collection (GET /sites, then each site's collections)."""
        with self._lock:
            cached = self._site_cache
        if cached is not None:
            return cached or None
        found: dict[str, Any] = {}
        try:
            for site in self._request("GET", "/sites").json().get("sites") or []:
                listed = self._request("GET", f"/sites/{site['id']}/collections").json()
                if any(c.get("id") == self.collection_id for c in listed.get("collections") or []):
                    found = site
                    break
        except (PermanentError, FatalError):
            found = {}
        with self._lock:
            self._site_cache = found
        return found or None

    def _unsent_fields(self) -> list[str]:
        """The record's fields that no field_map entry sends: said, never dropped unsaid."""
        spec = self.record_spec
        if spec is None:
            return []
        unsent = [f for f in spec.fields if f not in self.field_map and f != spec.key]
        if not unsent:
            return []
        return [f"Record fields not sent to the collection (no destination.field_map entry): "
                f"{', '.join(unsent)}. Map them to collection fields to send them."]  # fmt: skip

    def find(self, record: dict[str, Any]) -> str | None:
        """A retry's look-up. In group mode a create whose answer was lost is reconciled with the
        few list requests that cover the changes since it was sent, shared by its whole group; a
        create the server refused whole (429) needs no look-up."""
        slug = record.get("slug")
        if not slug:
            return None
        if self.items_per_request > 1:
            found, known = self._find_listed(slug)
            if known:
                return found
            # a write an earlier, stopped run may have made: one listing of the collection
            # answers for every such item, not one GET ?slug= each
            self._refresh(complete=True, max_age=SNAPSHOT_FRESH_S)
            with self._index_lock:
                return self._by_slug.get(slug)
        answer = self._request(
            "GET", f"/collections/{self.collection_id}/items", params={"slug": slug}
        )
        for item in answer.json().get("items", []):
            if item.get("fieldData", {}).get("slug") == slug:
                return str(item["id"])
        return None

    def snapshot(self, dest_id: str) -> dict[str, Any] | None:
        return self._with_live(dest_id, _snapshot(self._item(dest_id)))

    def _with_live(self, dest_id: str, snap: dict[str, Any] | None) -> dict[str, Any] | None:
        """A live item with changes in draft (isDraft true, lastPublished set: the publishing
        guide's states) shows another version on the site: that one is read too (one GET of
        .../live), so a rollback puts the live site back as well as the staged item."""
        if not snap or not (snap.get("live") and snap.get("isDraft")):
            return snap
        try:
            live = self._request(
                "GET", f"/collections/{self.collection_id}/items/{dest_id}/live"
            ).json()
        except PermanentError as exc:
            if exc.status_code != 404:
                raise
            return {**snap, "live": False}
        return {**snap, "liveFieldData": dict(live.get("fieldData") or {})}

    def version(self, dest_id: str) -> str | None:
        item = self._item(dest_id)
        return _version(item) if item is not None else None

    def upsert(
        self,
        record: dict[str, Any],
        dest_id: str | None,
        draft: bool,
        current: dict[str, Any] | None = None,
    ) -> WriteResult:
        field_data = self._field_data(record)
        path = f"/collections/{self.collection_id}/items"
        if dest_id is None:
            body = {"isArchived": False, "isDraft": draft, "fieldData": field_data}
            item = self._request("POST", path, json=body, params=WRITE_PARAMS).json()
            self._remember([item])  # a later find or version answers from the listing
            problem = self._stray(body, item) or _files_lost(body, item)
            if problem is not None:
                raise problem
            return WriteResult(str(item["id"]), "created", version=_version(item))
        # isDraft true on a live item keeps it live with the change held as a draft; false would
        # queue it for the next site publish by anyone (changelog 2025-06-23): a draft write
        # never goes live unapproved, a publishing run publishes explicitly after it
        body = {"isDraft": draft, "fieldData": field_data}
        item = self._request("PATCH", f"{path}/{dest_id}", json=body, params=WRITE_PARAMS).json()
        self._remember([item])
        lost = _files_lost(body, item)
        if lost is not None:
            raise lost
        return WriteResult(dest_id, "updated", current, version=_version(item))

    @property
    def group_size(self) -> int:
        return self.items_per_request

    def snapshot_many(self, dest_ids: list[str]) -> dict[str, dict[str, Any] | None]:
        """Group mode: read from one listing of the collection shared by every group (refreshed
        with the changes since, at most SNAPSHOT_FRESH_S old), not one GET per item."""
        if self._read_one_by_one(dest_ids):
            return {dest_id: self.snapshot(dest_id) for dest_id in dest_ids}
        self._refresh(complete=True, max_age=SNAPSHOT_FRESH_S)
        with self._index_lock:
            items = {dest_id: self._index.get(dest_id) for dest_id in dest_ids}
        return {
            dest_id: self._with_live(dest_id, _snapshot(item)) for dest_id, item in items.items()
        }

    def upsert_many(
        self, entries: list[tuple[dict[str, Any], str | None, dict[str, Any] | None]], draft: bool
    ) -> list[WriteResult | WriteError]:
        """Group mode: creates in `POST /items` with `items`, updates in `PATCH /items`, up to
        items_per_request each; one result or error per entry, in order."""
        if self.items_per_request == 1:
            return [self._upsert_one(record, dest_id, draft, current)
                    for record, dest_id, current in entries]  # fmt: skip
        results: list[WriteResult | WriteError | None] = [None] * len(entries)
        creates: list[tuple[int, dict[str, Any]]] = []
        updates: list[tuple[int, dict[str, Any]]] = []
        for n, (record, dest_id, _current) in enumerate(entries):
            try:
                field_data = self._field_data(record)
            except WriteError as exc:
                results[n] = exc
                continue
            if dest_id is None:
                creates.append(
                    (n, {"isArchived": False, "isDraft": draft, "fieldData": field_data})
                )
            else:  # isDraft as the run writes: a draft over a live item stays a draft (upsert)
                updates.append((n, {"id": dest_id, "isDraft": draft, "fieldData": field_data}))
        size = self.items_per_request
        for start in range(0, len(creates), size):
            self._write_group("POST", creates[start : start + size], results, entries)
        for start in range(0, len(updates), size):
            self._write_group("PATCH", updates[start : start + size], results, entries)
        # a slug already taken may be an earlier, unanswered create of ours that landed late:
        # the next look-up lists the changes again rather than trusting a fresh listing
        self._note_unanswered([body for n, body in creates if isinstance(results[n], AlreadyExists)],
                              None)  # fmt: skip
        return [r for r in results if r is not None]

    def _upsert_one(self, record: dict[str, Any], dest_id: str | None, draft: bool,
                    current: dict[str, Any] | None) -> WriteResult | WriteError:  # fmt: skip
        try:
            return self.upsert(record, dest_id, draft, current=current)
        except WriteError as exc:
            return exc

    def _write_group(self, method: str, group: list[tuple[int, dict[str, Any]]],
                     results: list[Any], entries: list[Any]) -> None:  # fmt: skip
        """One multi-item request, sent again without the items a 400 names (`items[n]`); a
        group refused whole for no named item is split in halves, so only an item that fails on
        its own fails. A transient error is every item's: the writer retries the group."""
        path = f"/collections/{self.collection_id}/items"
        if method == "POST":
            self._start_watch()
        pending = list(group)
        while pending:
            try:
                answer = self._request(method, path, json={"items": [b for _, b in pending]},
                                       params=WRITE_PARAMS, timeout=self._write_timeout(len(pending)))  # fmt: skip
            except PermanentError as exc:
                named = _named(exc, [b for _, b in pending])
                if named:  # those fail alone; the rest is sent again
                    for k, detail in named.items():
                        results[pending[k][0]] = _item_error(exc, detail)
                    pending = [p for k, p in enumerate(pending) if k not in named]
                elif len(pending) > 1:
                    half = len(pending) // 2
                    self._write_group(method, pending[:half], results, entries)
                    self._write_group(method, pending[half:], results, entries)
                    return
                else:
                    results[pending[0][0]] = self._alone(method, pending[0][1], exc)
                    return
            except WriteError as exc:  # transient (the writer retries the group) or fatal
                if method == "POST" and isinstance(exc, RetryableError):
                    self._note_unanswered([b for _, b in pending], exc)
                for n, _ in pending:
                    results[n] = exc
                return
            else:
                self._settle(method, pending, answer, results, entries)
                return

    def _alone(self, method: str, body: dict[str, Any], exc: PermanentError) -> WriteError:
        """One item refused on its own; an update of an id the server no longer has says so."""
        if method == "PATCH" and exc.status_code == 404:
            return PermanentError(
                f"Webflow item {body['id']} is no longer in collection {self.collection_id} "
                "(deleted after this run read it): not written. The next run creates it anew.",
                status_code=404, error_type="api-error",
            )  # fmt: skip
        return exc

    def _settle(self, method: str, pending: list[tuple[int, dict[str, Any]]],
                answer: httpx.Response, results: list[Any], entries: list[Any]) -> None:  # fmt: skip
        """Each item of a written group gets its result, matched by slug (creates) or id."""
        items = [i for i in (answer.json().get("items") or []) if isinstance(i, dict)]
        self._remember(items)
        key = "slug" if method == "POST" else "id"
        by_key = {(i.get("fieldData") or {}).get("slug") if key == "slug" else i.get("id"): i
                  for i in items}  # fmt: skip
        strays: list[str] = []
        for k, (n, body) in enumerate(pending):
            wanted = body["fieldData"].get("slug") if key == "slug" else body["id"]
            item = by_key.get(wanted) or (items[k] if len(items) == len(pending) else None)
            problem = None if item is None else (
                self._stray(body, item, strays) if method == "POST" else None
            ) or _files_lost(body, item)  # fmt: skip
            if item is None:
                results[n] = RetryableError(f"{method} {self.collection_id}/items: the answer "
                                            "lacks this item", error_type="api-error")  # fmt: skip
                if method == "POST":
                    self._note_unanswered([body], None)
            elif problem is not None:
                results[n] = problem
            elif method == "POST":
                results[n] = WriteResult(str(item["id"]), "created", version=_version(item))
            else:
                results[n] = WriteResult(body["id"], "updated", entries[n][2],
                                         version=_version(item))  # fmt: skip
        self._clean_up(strays, results)

    def _write_timeout(self, items: int) -> float:
        """A multi-item write's timeout: the job's own, else one that fits a 100-item create."""
        if items <= 1:
            return self.timeout_s
        if self.write_timeout_s is not None:
            return self.write_timeout_s
        return max(self.timeout_s, WRITE_BASE_S + WRITE_PER_ITEM_S * items)

    def _stray(self, body: dict[str, Any], item: dict[str, Any],
               strays: list[str] | None = None) -> WriteError | None:  # fmt: skip
        """A create answered with another slug than the one sent: Webflow suffixed a clashing
        slug (its migration skill: "silently appends a random suffix"). The item is a stray, not
        this record's write: it is deleted (now, or with its group's strays) and the record
        fails as a collision, so nothing is counted as written under a slug it does not have."""
        sent = (body.get("fieldData") or {}).get("slug")
        got = (item.get("fieldData") or {}).get("slug")
        if not sent or got == sent:
            return None
        stray_id = str(item.get("id"))
        self._forget([stray_id])
        if strays is not None:
            strays.append(stray_id)
        else:
            self._clean_up([stray_id], [])
        return AlreadyExists(
            f"POST {self.collection_id}/items: slug {sent!r} is already in database: Webflow "
            f"created the item as {got!r} instead (a suffixed slug), which was deleted again",
            status_code=400, error_type="validation",
        )  # fmt: skip

    def _clean_up(self, strays: list[str], results: list[Any]) -> None:
        """Delete the strays a suffixing create made; one that stays is named in its error."""
        if not strays:
            return
        failed = self.delete_many(strays)
        for n, result in enumerate(results):
            named = [s for s in failed if isinstance(result, AlreadyExists) and s in result.message]
            if named:
                results[n] = AlreadyExists(f"{result.message}; deleting the stray item {named[0]} "
                                           f"failed: {failed[named[0]].message}",
                                           status_code=400, error_type="validation")  # fmt: skip

    # --- what the collection holds (group mode) ------------------------------------------------

    def _start_watch(self) -> None:
        """Before the first create: changes from now on can be listed (a lost answer's check)."""
        with self._index_lock:
            if self._mark is None:
                self._mark = self._server_now

    def _note_unanswered(self, bodies: list[dict[str, Any]], exc: WriteError | None) -> None:
        """A create group without an answer may have landed (timeout, dropped connection, 5xx):
        its retry lists the changes since first. A 429 was refused before anything was applied."""
        refused = exc is not None and exc.status_code == 429
        now = time.monotonic()
        with self._index_lock:
            for body in bodies:
                slug = body["fieldData"].get("slug")
                if not slug:
                    continue
                if refused:
                    self._refused.add(slug)
                else:
                    self._lost[slug] = now

    def _find_listed(self, slug: str) -> tuple[str | None, bool]:
        """(id, True) when the listing answers for this slug; (None, False): ask the server."""
        with self._index_lock:
            if slug in self._refused:
                self._refused.discard(slug)
                return None, True
            lost = self._lost.pop(slug, None)
            complete = self._complete
        if lost is None and not complete:
            return None, False
        self._refresh(complete=False, max_age=SNAPSHOT_FRESH_S, after=lost)
        with self._index_lock:
            return self._by_slug.get(slug), True

    def _refresh(self, complete: bool, max_age: float, after: float | None = None) -> None:
        """Bring the index up to date: the whole collection once (when `complete` is needed or no
        server time is known), then only the items changed since (lastUpdated, newest first),
        unless the last listing started less than max_age ago (and after `after`)."""
        with self._index_lock:
            fresh = time.monotonic() - self._refreshed < max_age and self._mark is not None
            if (
                fresh
                and (after is None or self._refreshed > after)
                and (self._complete or not complete)
            ):
                return
            started, since = time.monotonic(), self._mark
            if since is None or (complete and not self._complete):
                since = None
            mark = self._list_changes(since)
            if since is None:
                self._complete = True
            self._mark, self._refreshed = mark, started

    def _list_changes(self, since: float | None) -> float | None:
        """List the items changed since `since` (server time; None: all); returns the server time
        of the first answer, from which the next listing starts."""
        params: dict[str, Any] = {"limit": MAX_GROUP, "offset": 0}
        if since is not None:
            params.update(sortBy="lastUpdated", sortOrder="desc")
        mark = None
        while True:
            answer = self._request("GET", f"/collections/{self.collection_id}/items", params=params)
            mark = mark if mark is not None else self._server_now
            items = [i for i in answer.json().get("items") or [] if isinstance(i, dict)]
            self._remember(items, locked=True)
            older = since is not None and any(
                (_stamp(i.get("lastUpdated")) or 0.0) < since - CLOCK_MARGIN_S for i in items
            )
            if older or len(items) < MAX_GROUP:
                return mark
            params["offset"] += MAX_GROUP

    def _remember(self, items: list[dict[str, Any]], locked: bool = False) -> None:
        if not locked:
            with self._index_lock:
                self._remember(items, locked=True)
            return
        for item in items:
            self._index[str(item["id"])] = item
            slug = (item.get("fieldData") or {}).get("slug")
            if slug:
                self._by_slug[slug] = str(item["id"])

    def _item(self, dest_id: str) -> dict[str, Any] | None:
        try:
            return dict(
                self._request("GET", f"/collections/{self.collection_id}/items/{dest_id}").json()
            )
        except PermanentError as exc:
            if exc.status_code == 404:
                return None
            raise

    def publish(self, dest_ids: list[str]) -> dict[str, str]:
        """The explicit publish after approval (`POST .../items/publish`, up to 100 ids)."""
        failed: dict[str, str] = {}
        for start in range(0, len(dest_ids), PUBLISH_GROUP):
            group = dest_ids[start : start + PUBLISH_GROUP]
            answer = self._request(
                "POST", f"/collections/{self.collection_id}/items/publish", json={"itemIds": group}
            ).json()
            published = set(answer.get("publishedItemIds", group))
            self._note_published(published)
            for dest_id in group:
                if dest_id not in published:
                    failed[dest_id] = "not published"
            for error in answer.get("errors", []) or []:
                _note_publish_error(failed, group, error)
        return failed

    def _note_published(self, dest_ids: set[str]) -> None:
        """The index knows these items are live now (a rollback in this process reads it)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        with self._index_lock:
            for dest_id in dest_ids:
                if dest_id in self._index:
                    self._index[dest_id] = {**self._index[dest_id], "lastPublished": stamp,
                                            "isDraft": False}  # fmt: skip

    def delete(self, dest_id: str) -> None:
        self._request("DELETE", f"/collections/{self.collection_id}/items/{dest_id}")
        self._forget([dest_id])

    @property
    def live_changes(self) -> dict[str, tuple[bool, bool]]:
        """What this destination's deletes and restores found on the live site and left there:
        {id: (live before, live after)} (the rollback report's live line)."""
        return dict(self._live_changes)

    def _live(self, dest_ids: list[str]) -> set[str]:
        """Which of these items the live site shows (lastPublished set), from the index the
        rollback's versions read made, else by id."""
        with self._index_lock:
            known = {d: self._index.get(d) for d in dest_ids}
        items = {d: item if item is not None else self._item(d) for d, item in known.items()}
        return {d for d, item in items.items() if item and item.get("lastPublished")}

    def _unpublish(self, dest_ids: list[str]) -> None:
        """`DELETE .../items/live`: off the live site, a draft again; a staged delete alone would
        leave the live copy until the next site publish (apis.md)."""
        for start in range(0, len(dest_ids), PUBLISH_GROUP):
            group = dest_ids[start : start + PUBLISH_GROUP]
            self._request("DELETE", f"/collections/{self.collection_id}/items/live",
                          json={"items": [{"id": d} for d in group]})  # fmt: skip

    def versions(self, dest_ids: list[str]) -> dict[str, str | None]:
        """From the shared listing (refreshed with its changes), no GET per item, with one item
        per write request too (a run checks a slice of its map at once); a few items by id."""
        if not dest_ids or self._few(dest_ids):
            return {dest_id: self.version(dest_id) for dest_id in dest_ids}
        self._refresh(complete=True, max_age=SNAPSHOT_FRESH_S)
        with self._index_lock:
            items = {dest_id: self._index.get(dest_id) for dest_id in dest_ids}
        return {d: _version(item) if item else None for d, item in items.items()}

    def delete_many(self, dest_ids: list[str]) -> dict[str, WriteError]:
        """`DELETE /items` with up to items_per_request ids each. A group naming an id the server
        no longer has is refused whole (404): its items are deleted one by one, and a missing one
        counts as deleted."""
        failed: dict[str, WriteError] = {}
        size = self.items_per_request
        for start in range(0, len(dest_ids), size):
            group = dest_ids[start : start + size]
            try:
                live = self._live(group)
                if live:  # taken off the live site first: unpublished, then deleted
                    self._unpublish(sorted(live))
                self._live_changes.update((d, (d in live, False)) for d in group)
                if size == 1:
                    raise PermanentError("one at a time", status_code=404)
                self._request("DELETE", f"/collections/{self.collection_id}/items",
                              json={"items": [{"id": d} for d in group]})  # fmt: skip
                self._forget(group)
            except PermanentError as exc:
                if exc.status_code != 404:
                    failed.update(dict.fromkeys(group, exc))
                    continue
                for dest_id in group:
                    try:
                        self.delete(dest_id)
                    except PermanentError as one:
                        if one.status_code == 404:
                            self._forget([dest_id])
                        else:
                            failed[dest_id] = one
                    except WriteError as one:
                        failed[dest_id] = one
            except WriteError as exc:
                failed.update(dict.fromkeys(group, exc))
        return failed

    def restore_many(
        self, entries: list[tuple[str, dict[str, Any]]]
    ) -> dict[str, str | None | WriteError]:
        """`PATCH /items` with up to items_per_request snapshots each (see `restore`); an item the
        server no longer has is None (nothing restored), alone."""
        live = self._live([dest_id for dest_id, _ in entries])
        if self.items_per_request == 1:
            out: dict[str, str | None | WriteError] = {}
            for dest_id, previous in entries:
                try:
                    out[dest_id] = (
                        self.version(dest_id) if self.restore(dest_id, previous) else None
                    )
                except WriteError as exc:
                    out[dest_id] = exc
            return self._restore_live(entries, live, out)
        bodies = [(n, {"id": dest_id, **self._restore_body(previous)})
                  for n, (dest_id, previous) in enumerate(entries)]  # fmt: skip
        results: list[Any] = [None] * len(entries)
        shape = [(None, dest_id, None) for dest_id, _ in entries]
        size = self.items_per_request
        for start in range(0, len(bodies), size):
            self._write_group("PATCH", bodies[start : start + size], results, shape)
        out = {}
        for (dest_id, _), result in zip(entries, results, strict=True):
            if isinstance(result, WriteResult):
                out[dest_id] = result.version
            elif isinstance(result, PermanentError) and result.status_code == 404:
                out[dest_id] = None
            else:
                out[dest_id] = result
        return self._restore_live(entries, live, out)

    def _restore_live(self, entries: list[tuple[str, dict[str, Any]]], live: set[str],
                      out: dict[str, str | None | WriteError]) -> dict[str, str | None | WriteError]:  # fmt: skip
        """The live site as before the run: an item live then gets its restored version
        published again; one the run put live is unpublished. An item that failed is left."""
        done = [(d, p) for d, p in entries if isinstance(out.get(d), str)]
        again = [d for d, p in done if p.get("live") and "liveFieldData" not in p]
        drafted = [(d, p) for d, p in done if p.get("live") and "liveFieldData" in p]
        down = [d for d, previous in done if not previous.get("live") and d in live]
        failures: dict[str, str] = {}
        try:
            failures.update(self.publish(again) if again else {})
        except WriteError as exc:
            failures.update(dict.fromkeys(again, exc.message))
        for dest_id, previous in drafted:
            try:
                failures.update(self._republish(dest_id, previous))
            except WriteError as exc:
                failures[dest_id] = exc.message
        try:
            if down:
                self._unpublish(down)
        except WriteError as exc:
            failures.update(dict.fromkeys(down, exc.message))
        for dest_id, reason in failures.items():
            out[dest_id] = RetryableError(f"restored, but the live site was not: {reason}",
                                          error_type="api-error")  # fmt: skip
        for dest_id, previous in done:
            after = bool(previous.get("live")) if dest_id not in failures else dest_id in live
            self._live_changes[dest_id] = (dest_id in live, after)
        return out

    def _republish(self, dest_id: str, previous: dict[str, Any]) -> dict[str, str]:
        """An item that was live with changes in draft: its live version is written and
        published, then its draft put back (isDraft true keeps the live one on the site)."""
        path = f"/collections/{self.collection_id}/items/{dest_id}"
        shown = {**previous, "fieldData": previous["liveFieldData"], "isDraft": False}
        self._request("PATCH", path, json=self._restore_body(shown))
        failed = self.publish([dest_id])
        if not failed:
            answer = self._request(
                "PATCH", path, json={**self._restore_body(previous), "isDraft": True}
            )
            self._remember([answer.json()])
        return failed

    def _restore_body(self, previous: dict[str, Any]) -> dict[str, Any]:
        """PATCH merges field data, so a field the snapshot lacks is cleared explicitly (null):
        the item is put back as it was, not as the snapshot merged over the newer version. An
        item live before is written isDraft false, then published (`_restore_live`)."""
        slugs = [f["slug"] for f in self._collection().get("fields", [])]
        fields = previous.get("fieldData") or {}
        body = {k: v for k, v in previous.items() if k in ("isDraft", "isArchived")}
        if previous.get("live") and "liveFieldData" not in previous:
            body["isDraft"] = False
        return {**body, "fieldData": {**{s: None for s in slugs if s not in fields}, **fields}}

    def _read_one_by_one(self, dest_ids: list[str]) -> bool:
        """A few items (at most FEW_ITEMS) are read by id, unless the run already holds the
        whole listing: a small sync of a big collection costs a few GETs, not a listing of
        every item; a bigger group reads the listing once, shared by every group of the run."""
        if self.items_per_request == 1 or not dest_ids:
            return True
        return self._few(dest_ids)

    def _few(self, dest_ids: list[str]) -> bool:
        with self._index_lock:
            listed = self._complete
        return not listed and len(dest_ids) <= FEW_ITEMS

    def _forget(self, dest_ids: list[str]) -> None:
        with self._index_lock:
            for dest_id in dest_ids:
                item = self._index.pop(dest_id, None) or {}
                self._by_slug.pop((item.get("fieldData") or {}).get("slug", ""), None)

    def restore(self, dest_id: str, previous: dict[str, Any]) -> bool:
        """One item back as it was (see `_restore_body`; `restore_many` restores the live site)."""
        body = self._restore_body(previous)
        try:
            answer = self._request(
                "PATCH", f"/collections/{self.collection_id}/items/{dest_id}", json=body
            )
        except PermanentError as exc:
            if exc.status_code == 404:
                self._forget([dest_id])
                return False
            raise
        item = answer.json() if answer.content else None
        if isinstance(item, dict) and item.get("id"):
            self._remember([item])
        return True

    def link(self, dest_id: str, record: dict[str, Any]) -> str:
        if self.link_template:
            return self.link_template.format(slug=record.get("slug", ""), id=dest_id,
                                             collection_id=self.collection_id)  # fmt: skip
        if self.site_url:
            return f"{self.site_url.rstrip('/')}/{record.get('slug', dest_id)}"
        return f"{self.base_url}/collections/{self.collection_id}/items/{dest_id}"

    # --- mapping ------------------------------------------------------------------------------

    def _collection(self) -> dict[str, Any]:
        with self._lock:
            if self._schema is None:
                self._schema = self._request("GET", f"/collections/{self.collection_id}").json()
            return self._schema

    def _field_data(self, record: dict[str, Any]) -> dict[str, Any]:
        """Only fields the collection has are sent; Option names become option ids."""
        fields = {f["slug"]: f for f in self._collection().get("fields", [])}
        data: dict[str, Any] = {}
        for source_field, slug in self.field_map.items():
            field = fields.get(slug)
            value = record.get(source_field)
            if field is None or value is None:
                continue
            kind = field.get("type")
            if kind == "Option":
                ids = {o["name"]: o["id"] for o in _options(field) or []}
                if value not in ids:
                    raise PermanentError(
                        f"{slug}: option {value!r} does not exist in the collection "
                        f"(options: {', '.join(ids) or 'none'})",
                        error_type="validation",
                    )
                value = ids[value]
            elif kind == "Image":
                value = {"url": self._image_url(value), "alt": record.get("title") or ""}
            elif kind in REFERENCE_KINDS:
                value = self._references().ids(field, value)
            elif kind == "RichText" and isinstance(value, str):
                # a Markdown body's <pre> blocks would be emptied by Webflow: inline code instead
                value = self._rehosted(keep_code_blocks(value))
            data[slug] = value
        return data

    # --- body images and references (issue 20) ---------------------------------------------

    def _references(self) -> References:
        """The referenced collections (categories, tags), each listed once per run."""
        with self._lock:
            if self._refs is None:
                self._refs = References(self._request, self.create_missing_references,
                                        self.publish_live)  # fmt: skip
            return self._refs

    def _asset_store(self) -> AssetStore:
        with self._lock:
            if self._assets is None:
                self._assets = AssetStore(
                    self._request, lambda: require_site(self._site_of_collection(),
                                                        self.collection_id),
                    ImageFetcher(self.allow_private_hosts, max(self.timeout_s, 30.0)),
                    self.fit_images,
                )  # fmt: skip
            return self._assets

    def _rehosted(self, markup: str) -> str:
        """A RichText body whose images are uploaded to the site's assets, each `src` the hosted
        URL in Webflow's figure markup: nothing written depends on a Notion-signed URL."""
        images = to_upload(markup, self.upload_images) if self.upload_images != "none" else []
        if not images:
            return markup
        from batchgate.webflow_assets import rewrite

        store = self._asset_store()
        return rewrite(markup, {image.src: store.hosted(image.src) for image in images})

    def _image_url(self, url: Any) -> Any:
        """An Image field's URL: Webflow re-hosts it itself (at most 4 MB); one over the limit is
        re-encoded and uploaded first when the job asks for it (images.fit_limit)."""
        if not self.fit_images or not isinstance(url, str) or not url:
            return url
        return self._asset_store().fitted_url(url)

    @property
    def images_reencoded(self) -> dict[str, str]:
        """{image: "re-encoded from X MB to Y MB (-n%)"} of the images this run re-encoded."""
        return dict(self._assets.fitted) if self._assets is not None else {}

    @property
    def references_created(self) -> list[str]:
        return list(self._refs.created) if self._refs is not None else []

    def _noted(self, notes: list[str]) -> list[str]:
        """The dry-run's notes: the record checks add theirs as they meet them."""
        self._check_notes = notes
        return notes

    def _record_problems(self, record: dict[str, Any]) -> list[tuple[str, str, str]]:
        """The dry-run's look at one record: its references known to their collections (or to
        be created), its images fetchable and under 4 MB (or re-encodable)."""
        fields = {f["slug"]: f for f in self._collection().get("fields", [])}
        problems: list[tuple[str, str, str]] = []
        images: list[tuple[str, str, bool]] = []
        for source_field, slug in self.field_map.items():
            field, value = fields.get(slug), record.get(source_field)
            if field is None or value in (None, "", []):
                continue
            if is_reference(field):
                problems += self._reference_problems(source_field, field, value)
            elif field.get("type") == "Image" and isinstance(value, str):
                images.append((source_field, value, False))
            elif field.get("type") == "RichText" and self.upload_images != "none":
                images += [(source_field, i.src, True)
                           for i in to_upload(str(value), self.upload_images)]  # fmt: skip
        if images:
            with self._lock:
                if self._image_check is None:
                    self._image_check = ImageCheck(ImageFetcher(self.allow_private_hosts,
                                                                self.timeout_s), self.fit_images)  # fmt: skip
            check = self._image_check
            problems += check.problems(images)
            with self._lock:
                self._check_notes += [n for n in check.notes if n not in self._check_notes]
        return problems

    def _reference_problems(self, source_field: str, field: dict[str, Any],
                            value: Any) -> list[tuple[str, str, str]]:  # fmt: skip
        index, unknown = self._references().unknown(field, value)
        if not unknown:
            return []
        shown = ", ".join(repr(n) for n in unknown)
        if self.create_missing_references:
            note = (f"{field['slug']}: {shown} will be created in {index.shown} before the first "
                    "write that needs it (destination.create_missing_references).")  # fmt: skip
            with self._lock:
                if note not in self._check_notes:
                    self._check_notes.append(note)
            return []
        return [(source_field, f"{field['slug']}: {shown} not found in {index.shown} (a "
                 f"{field['type']} field takes the ids of that collection's items)",
                 f"Create {shown} in {index.shown} (known: {', '.join(index.known[:20]) or 'none'}), "
                 "or set destination.create_missing_references: true to create them before the "
                 "first write.")]  # fmt: skip

    # --- HTTP ---------------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(
                    base_url=require_token_url(self.base_url, "destination.base_url"),
                    timeout=self.timeout_s,
                    headers={
                        "Authorization": f"Bearer {self.token.get_secret_value()}",
                        "Accept": "application/json",
                    },
                    limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
                )
            return self._client

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:  # noqa: C901
        """One paced request; every failure is mapped into the write-error split."""
        self.pacer.acquire()
        try:
            response = self._http().request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise RetryableError(
                f"{method} {path}: no answer within {self.timeout_s:g} s ({type(exc).__name__})",
                error_type="timeout",
            ) from None
        except httpx.TransportError as exc:
            raise RetryableError(
                f"{method} {path}: connection failed ({type(exc).__name__}: {exc})",
                error_type="api-error",
            ) from None
        self._watch_quota(response)
        self._note_clock(response)
        if response.is_success:
            return response
        raise self._error(method, path, response)

    def _note_clock(self, response: httpx.Response) -> None:
        """The server's time (its Date header): where a listing of changes starts."""
        with contextlib.suppress(KeyError, TypeError, ValueError):
            self._server_now = parsedate_to_datetime(response.headers["Date"]).timestamp()

    def _watch_quota(self, response: httpx.Response) -> None:
        """Take the plan's limit from X-RateLimit-Limit (per API key, per minute: 120 on CMS
        plans, reference/rate-limits) unless the job set its own; the pacer follows it.
        Read X-RateLimit-Remaining and keep the lowest seen (logged at the end of a run). No pause on an
        empty quota: our own pace spends exactly a window's quota, so empty is normal (a short
        hold here cost 3-5% of the rate, measured). When another client shares the key, the
        server's 429 and its Retry-After make every writer wait."""
        limit = response.headers.get("X-RateLimit-Limit", "").strip()
        if limit.isdigit() and int(limit) > 0 and int(limit) != self._stated_limit:
            with self._lock:
                self._stated_limit = int(limit)
            self.pacer.stated_limit = int(limit)  # and the token's pacer takes its rate now
        remaining = response.headers.get("X-RateLimit-Remaining", "").strip()
        if remaining.isdigit():
            with self._lock:
                low = self._quota_low
                self._quota_low = int(remaining) if low is None else min(low, int(remaining))

    def _error(self, method: str, path: str, response: httpx.Response) -> WriteError:
        status = response.status_code
        action, error_type = STATUS_ACTIONS.get(
            status, ("retry", "api-error") if status >= 500 else ("permanent", "validation")
        )
        message = f"{method} {path}: HTTP {status} {_describe(response)}"
        if action == "retry":
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if status == 429:
                self.pacer.hold(retry_after if retry_after is not None else 60.0)
            return RetryableError(message, status_code=status, error_type=error_type,
                                  retry_after=retry_after)  # fmt: skip
        error: WriteError
        if action == "fatal":
            error = FatalError(
                f"{message}. Fix: check the Webflow token and its access to collection "
                f"{self.collection_id}.",
                status_code=status,
                error_type=error_type,
            )
        else:
            kind = AlreadyExists if _duplicate(message) else PermanentError
            error = kind(message, status_code=status, error_type=error_type)
        error.details = _details(response)  # type: ignore[attr-defined]
        return error

    @property
    def quota_low(self) -> int | None:
        """The lowest X-RateLimit-Remaining the server reported during this run."""
        return self._quota_low

    def close(self) -> None:
        if self._assets is not None:
            self._assets.close()
        if self._client is not None:
            self._client.close()
            self._client = None


def _files_lost(body: dict[str, Any], item: dict[str, Any]) -> WriteError | None:
    """An Image sent that the answer lacks was skipped (skipInvalidFiles): the item fails."""
    sent = body.get("fieldData") or {}
    kept = item.get("fieldData") or {}
    lost = [slug for slug, value in sent.items()
            if isinstance(value, dict) and "url" in value and not kept.get(slug)]  # fmt: skip
    if not lost:
        return None
    return PermanentError(
        f"Webflow did not keep the image of {', '.join(lost)} (an invalid or unreachable file, "
        "or over 4 MB): the item is not counted as written",
        status_code=400, error_type="validation",
    )  # fmt: skip


def _options(field: dict[str, Any]) -> list[dict[str, Any]] | None:
    return (field.get("validations") or {}).get("options")


def _note_publish_error(failed: dict[str, str], group: list[str], error: Any) -> None:
    """One entry of publish's `errors`: a string (Webflow's model), or an `{id, message}` object.

    A string is the reason of the ids it names, else of every id left unpublished."""
    if isinstance(error, dict):
        failed[str(error.get("id", "?"))] = str(error.get("message", error))
        return
    named = [dest_id for dest_id in group if dest_id in str(error)]
    for dest_id in named or [d for d in group if failed.get(d) == "not published"]:
        failed[dest_id] = str(error)


def _details(response: httpx.Response) -> list[tuple[str, str]]:
    """The error body's details as (param, description); an entry may be a string (apis.md)."""
    try:
        body = response.json()
    except ValueError:
        return []
    entries = (body.get("details") if isinstance(body, dict) else None) or []
    return [(str(d.get("param", "")), str(d.get("description", ""))) if isinstance(d, dict)
            else ("", str(d)) for d in entries if isinstance(d, (dict, str))]  # fmt: skip


def _named(exc: WriteError, bodies: list[dict[str, Any]]) -> dict[int, str]:
    """The items of a group a 400 names, by index: a duplicate by its slug (`param: "slug"`,
    `Unique value is already in database: '<slug>'`), else `items[n].field` where given."""
    named: dict[int, str] = {}
    slugs = {(b.get("fieldData") or {}).get("slug"): k for k, b in enumerate(bodies)}
    for param, description in getattr(exc, "details", []):
        taken = SLUG_TAKEN.search(description)
        match = ITEM_INDEX.match(param)
        if taken and taken.group("slug") in slugs:
            named[slugs[taken.group("slug")]] = f"slug: {description}"
        elif match and int(match.group(1)) < len(bodies):
            field = param[match.end() :]
            named[int(match.group(1))] = f"{field}: {description}".strip(": ")
    return named


def _item_error(exc: WriteError, detail: str | None) -> WriteError:
    """The group's refusal as one item's: its own detail, the group's status and type."""
    if detail is None:
        return exc
    head = exc.message.split(" - ")[0]
    kind = AlreadyExists if _duplicate(detail) else PermanentError
    return kind(f"{head} - {detail}", status_code=exc.status_code, error_type=exc.error_type)


def _duplicate(text: str) -> bool:
    """Webflow's refusal of a slug another item holds (`fieldData.slug: Unique value is already
    in database: 'x'`)."""
    return "slug" in text and "already in database" in text.lower()


def _snapshot(item: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a rollback puts back: the staged item, and whether the live site showed it."""
    if item is None:
        return None
    return {"isDraft": item.get("isDraft"), "fieldData": item.get("fieldData", {}),
            "live": bool(item.get("lastPublished"))}  # fmt: skip


def _stamp(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _describe(response: httpx.Response) -> str:
    """The error body's code, message and details (Webflow's shape), never the request headers."""
    try:
        body = response.json()
    except ValueError:
        return response.reason_phrase or ""
    code, message = body.get("code", ""), body.get("message", "")
    details = "; ".join(
        f"{d.get('param', '')}: {d.get('description', '')}".strip(": ")
        if isinstance(d, dict)
        else str(d)
        for d in body.get("details") or []
        if isinstance(d, (dict, str))
    )
    return " - ".join(p for p in (code, message, details) if p)


def _env_token() -> SecretStr:
    token = os.environ.get("WEBFLOW_TOKEN")
    if not token:
        raise ConfigError(
            "destination.token is not set and WEBFLOW_TOKEN is not in the environment. Fix: "
            "export WEBFLOW_TOKEN=... and write token: ${WEBFLOW_TOKEN} in the job file."
        )
    return SecretStr(token)


def _version(item: dict[str, Any]) -> str:
    """What an item holds, as a hash of its field data (publishing does not change it)."""
    blob = json.dumps(item.get("fieldData", {}), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]
