"""Reading a Notion database politely: its data source, every page, every block.

Notion gives each connection a budget of 180 requests per fixed 60-second window (an average of
3/s; developers.notion.com request-limits). Every request here goes through one pacer per token
that keeps 98% of that budget in every 60 seconds; a 429's Retry-After and the backoff after a
500/502/503/504/529 hold every reader (all retried: every call made here is a read); a blocked
integration (`public_api_request_blocked`) stops at once. A query is capped at 10,000 results
(query-large-data-sources): past the cap the query is read again from the last `created_time`
seen. Page bodies are read with a few threads, so the pace, not the latency, sets the speed.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from batchgate.backoff import parse_retry_after
from batchgate.errors import SourceError
from batchgate.notion_html import PageLinks, file_expiry, file_url, hosted_expiries, render
from batchgate.notion_html import plain_text as rich_plain
from batchgate.secrets import require_token_url
from batchgate.window_pacer import WindowPacer, window_pacer_for

NOTION_VERSION = "2025-09-03"
RATE_PER_S = 3.0  # 180 requests per 60-second window (600 on Business and Enterprise: 10)
WINDOW_S = 60.0  # request-limits: the budget is per fixed 60-second window
PACE = 0.98  # a little under the budget Notion allows
BURST = 4.0  # within the window, requests leave at most 4x the average rate
# request-limits: retry 429 and 529 (pause new requests), and 500, 502, 503, 504 for reads
RETRY_STATUSES = {429, 500, 502, 503, 504, 529}
BLOCKED = "public_api_request_blocked"  # request-limits: never retry
PAGE_SIZE = 100
THROTTLE_BUDGET = 30  # 429 answers one request may wait out
RETRY_AFTER_MAX_S = 120.0  # the connection limit's is at most 60; the workspace's can be longer
BACKOFF_MAX_S = 30.0
CREATED_ASCENDING = {"timestamp": "created_time", "direction": "ascending"}

# Which Notion property types each blog field can be read from (the names: config.NOTION_PROPERTIES).
FIELD_TYPES = {
    "title": ("title", "rich_text"),
    "slug": ("rich_text", "title", "url", "formula"),
    "status": ("status", "select"),
    "category": ("select", "status", "rich_text"),
    "tags": ("multi_select", "rich_text", "select"),
    "featured": ("checkbox",),
    "publish_date": ("date", "created_time"),
    "hero_image_url": ("files", "url"),
    "summary": ("rich_text", "title"),
    "last_edited": ("last_edited_time", "date"),
}
REQUIRED = {"title", "slug", "category", "hero_image_url"}


class NotionRefused(SourceError):
    """Notion refused one request for good (its status and code kept): the caller decides
    whether that stops the read or fails one item."""

    def __init__(self, message: str, status: int, code: str, where: str = "") -> None:
        super().__init__(message)
        self.status, self.code, self.where = status, code, where


def retry_after_s(value: str | None, default: float) -> float:
    """A Retry-After header's wait (seconds or an HTTP-date), `default` when it is missing or not
    a number (`nan`, garbage), clamped to 0..RETRY_AFTER_MAX_S."""
    wait = parse_retry_after(value)
    if wait is None or not math.isfinite(wait):
        wait = default
    return min(max(wait, 0.0), RETRY_AFTER_MAX_S)


class NotionReader:
    """The Notion API calls a source needs, with pacing, retries and clear errors."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 30.0,
        retries: int = 6,
        workers: int = 4,
        rate_per_s: float = RATE_PER_S,
        window_s: float = WINDOW_S,
        backoff_base_s: float = 0.5,
    ) -> None:
        self.base_url = require_token_url(base_url, "source.base_url").rstrip("/")
        self.retries, self.workers = retries, workers
        self.backoff_base_s = backoff_base_s
        budget = max(1, math.floor(rate_per_s * window_s * PACE))
        self.pacer: WindowPacer = window_pacer_for(
            f"notion:{self.base_url}", token, budget, window_s, 1.0 / (rate_per_s * BURST)
        )
        self.requests = 0
        self.throttled = 0  # 429 answers received
        self.faults = 0  # 5xx answers and timeouts received
        self.notes: list[str] = []  # what a report should say of the source (several sources)
        self._lock = threading.Lock()
        self._client = httpx.Client(
            base_url=self.base_url,
            timeout=timeout_s,
            headers={
                "Authorization": f"Bearer {token}",
                "Notion-Version": NOTION_VERSION,
                "Content-Type": "application/json",
            },  # fmt: skip
        )

    def close(self) -> None:
        self._client.close()

    # --- one request --------------------------------------------------------------------------

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One read, retried on 429 (after Retry-After), 500, 502, 503, 504, 529 and timeouts.

        Every wait is the pacer's hold, so every reader of this integration waits (a shared
        backoff, not one thread's sleep). 429s have their own, larger budget: the server said
        when to come back. A blocked integration is never retried."""
        last, failures, throttled = "", 0, 0
        while failures <= self.retries and throttled <= THROTTLE_BUDGET:
            self.pacer.acquire()
            with self._lock:
                self.requests += 1
            try:
                response = self._client.request(method, path, **kwargs)
            except httpx.TimeoutException:
                failures += 1
                last = "no answer in time"
                self._fault()
                self.pacer.hold(self._backoff(failures))
                continue
            except httpx.TransportError as exc:
                raise SourceError(
                    f"cannot reach Notion at {self.base_url} ({type(exc).__name__}: {exc}). Fix: "
                    "check source.base_url and the network."
                ) from None
            if response.is_success:
                self.pacer.recover()
                return _json(response, method, path)
            if response.status_code not in RETRY_STATUSES:
                raise NotionRefused(self._explain(method, path, response), response.status_code,
                                    _code(response), f"{method} {path}")  # fmt: skip
            last = f"HTTP {response.status_code} {_code(response)}".rstrip()
            header = response.headers.get("Retry-After")
            if response.status_code == 429:
                if _reason(response) == BLOCKED:
                    raise NotionRefused(_blocked(method, path), 429, "rate_limited")
                throttled += 1
                with self._lock:
                    self.throttled += 1
                self.pacer.hold(retry_after_s(header, 1.0))
                self.pacer.slow_down()
            else:
                failures += 1
                self._fault()
                self.pacer.hold(retry_after_s(header, self._backoff(failures)))
        raise SourceError(
            f"Notion kept failing on {method} {path}: {last} ({failures} errors, {throttled} "
            "rate-limit answers). Fix: try again later (Notion may be overloaded, or another "
            "client shares this integration's rate limit), or check status.notion.so."
        )

    def _backoff(self, failures: int) -> float:
        return float(min(self.backoff_base_s * 2 ** (failures - 1), BACKOFF_MAX_S))

    def _fault(self) -> None:
        with self._lock:
            self.faults += 1

    def _explain(self, method: str, path: str, response: httpx.Response) -> str:
        status, code = response.status_code, _code(response)
        message = _message(response)
        where = f"{method} {path}: HTTP {status} {code}" + (f" - {message}" if message else "")
        if status == 401:
            return (f"Notion refused the token ({where}). Fix: set NOTION_TOKEN (or source.token) "
                    "to the integration's internal secret.")  # fmt: skip
        if status in (403, 404):
            return (f"{where}. Fix: check source.database_id, and share the database with the "
                    "integration (in Notion: ••• > Connections > your integration).")  # fmt: skip
        if status == 400:
            return f"Notion refused the request ({where}). Fix: check source.filter and the properties."
        return where

    # --- the database ---------------------------------------------------------------------------

    def data_source(self, database_id: str, data_source_id: str | None = None) -> dict[str, Any]:
        """The data source to query (the database's first unless named) and its property schema;
        a database of several data sources, none named, is noted in `notes`, naming them."""
        if not data_source_id:
            database = self.call("GET", f"/databases/{database_id}")
            sources = database.get("data_sources") or []
            if not sources:
                raise SourceError(f"Notion database {database_id} has no data source. Fix: check "
                                  "source.database_id (it must be a database, not a page).")  # fmt: skip
            data_source_id = str(sources[0]["id"])
            if len(sources) > 1:
                self.notes.append(_several_sources(database_id, sources))
        return self.call("GET", f"/data_sources/{data_source_id}")

    def query(
        self, data_source_id: str, filter_: dict[str, Any] | None
    ) -> Iterator[dict[str, Any]]:
        """Every page matching the filter, oldest first. A query stops at 10,000 results and says
        so only in `request_status` (query-large-data-sources): the query is then asked again
        for what was created at or after the last page read, and pages seen are not repeated."""
        path = f"/data_sources/{data_source_id}/query"
        seen: set[str] = set()
        after: str | None = None
        while True:
            body = {"sorts": [CREATED_ASCENDING], "result_type": "page",
                    **({"filter": f} if (f := _created_since(filter_, after)) else {})}  # fmt: skip
            capped, last = False, after
            for answer in self._answers("POST", path, body):
                capped = capped or _incomplete(answer)
                for page in answer.get("results") or []:
                    if page.get("object", "page") != "page" or page["id"] in seen:
                        continue  # a wiki's data source, or a page read before this window
                    seen.add(page["id"])
                    last = page.get("created_time") or last
                    yield page
            if not capped:
                return
            if last == after:
                raise SourceError(_stuck(data_source_id, after))
            after = last

    def page(self, page_id: str) -> dict[str, Any]:
        return self.call("GET", f"/pages/{page_id}")

    def blocks(self, block_id: str) -> list[dict[str, Any]]:
        """A block's children, every page of them, each with its own children read (recursively)."""
        out = list(self._list("GET", f"/blocks/{block_id}/children"))
        for block in out:
            if block.get("has_children"):
                block["children"] = self.blocks(str(block["id"]))
        return out

    def _list(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every result of a paginated list."""
        for answer in self._answers(method, path, body):
            yield from answer.get("results") or []

    def _answers(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every answer of a paginated list (the cursor goes in a POST's body, a GET's query);
        a cursor seen twice is an error, not a loop."""
        seen: set[str] = set()
        cursor: str | None = None
        while True:
            page = {"page_size": PAGE_SIZE, **({"start_cursor": cursor} if cursor else {})}
            answer = (self.call(method, path, json={**(body or {}), **page}) if method == "POST"
                      else self.call(method, path, params=page))  # fmt: skip
            yield answer
            cursor = answer.get("next_cursor")
            if not answer.get("has_more") or not cursor:
                return
            if cursor in seen:
                raise SourceError(
                    f"Notion returned the cursor {cursor!r} twice while paging {path}: stopping "
                    "instead of looping. Fix: run again; if it persists, report it to Notion "
                    "support."
                )
            seen.add(cursor)

    def bodies(self, page_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Every page's blocks, a few pages at a time (the pacer keeps the rate)."""
        bodies, unreadable = self.readable_bodies(page_ids)
        if unreadable:
            raise SourceError(next(iter(unreadable.values())))
        return bodies

    def readable_bodies(
        self, page_ids: list[str]
    ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
        """Every page's blocks, and why the pages whose blocks Notion refuses (403, 404: not
        shared with the integration) could not be read: those fail alone, not the read."""
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            read = list(pool.map(self._body_or_reason, page_ids))
        bodies = {p: r for p, r in zip(page_ids, read, strict=True) if isinstance(r, list)}
        return bodies, {p: r for p, r in zip(page_ids, read, strict=True) if isinstance(r, str)}

    def _body_or_reason(self, page_id: str) -> list[dict[str, Any]] | str:
        try:
            return self.blocks(page_id)
        except NotionRefused as exc:
            if exc.status not in (403, 404):
                raise
            return f"Notion refused reading its blocks ({exc.where}: HTTP {exc.status} {exc.code})"


# --- mapping a page to an item --------------------------------------------------------------------


def build_filter(
    wanted: dict[str, Any], schema: dict[str, Any], since: datetime | None = None
) -> dict[str, Any] | None:
    """The query filter for the job's `filter` (property -> value) and an incremental `since`."""
    properties = schema.get("properties") or {}
    parts: list[dict[str, Any]] = []
    for name, value in wanted.items():
        if isinstance(value, dict):  # written in Notion's own filter syntax
            parts.append({"property": name, **value})
            continue
        prop = properties.get(name)
        if prop is None:
            raise SourceError(_missing(name, properties, "source.filter"))
        kind = prop.get("type")
        values = value if isinstance(value, list) else [value]
        ops = []
        for one in values:
            if kind == "checkbox":
                ops.append({"property": name, "checkbox": {"equals": bool(one)}})
            elif kind in ("status", "select"):
                ops.append({"property": name, kind: {"equals": str(one)}})
            elif kind == "multi_select":
                ops.append({"property": name, "multi_select": {"contains": str(one)}})
            elif kind in ("rich_text", "title"):
                ops.append({"property": name, kind: {"equals": str(one)}})
            else:
                raise SourceError(
                    f"source.filter names the property {name!r}, of type {kind}; batchgate filters "
                    "checkbox, status, select, multi_select, rich_text and title properties by "
                    f"value. Fix: write the filter in Notion's syntax, e.g. {name}: "
                    f"{{{kind}: {{equals: ...}}}}."
                )
        parts.append(ops[0] if len(ops) == 1 else {"or": ops})
    if since is not None:
        parts.append({"timestamp": "last_edited_time",
                      "last_edited_time": {"on_or_after": since.isoformat()}})  # fmt: skip
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"and": parts}


def check_properties(mapping: dict[str, str], schema: dict[str, Any]) -> dict[str, str]:
    """Each mapped field's property type; a wrong type or a missing required property is an error."""
    properties = schema.get("properties") or {}
    types = {}
    for field, name in mapping.items():
        prop = properties.get(name)
        if prop is None:
            if field in REQUIRED:
                raise SourceError(_missing(name, properties, f"source.properties.{field}"))
            continue
        kind = str(prop.get("type"))
        allowed = FIELD_TYPES.get(field)
        if allowed and kind not in allowed:
            raise SourceError(
                f"Notion property {name!r} (mapped to {field}) is of type {kind}; {field} needs "
                f"{' or '.join(allowed)}. Fix: map {field} to another property in "
                f"source.properties, or change the property's type in Notion."
            )
        types[field] = kind
    return types


def page_row(
    page: dict[str, Any],
    blocks: list[dict[str, Any]],
    mapping: dict[str, str],
    links: PageLinks | None = None,
) -> dict[str, Any]:
    """A page as the raw row the blog preset types: its properties, its body as HTML (links
    to migrated pages resolved by `links`), the text it publishes and the blocks it loses."""
    properties = page.get("properties") or {}
    row: dict[str, Any] = {"id": str(page["id"])}
    expiries: list[str] = []
    hosted = _hosted_urls(blocks)
    for field, name in mapping.items():
        prop = properties.get(name)
        if prop is None:
            continue
        row[field] = property_value(name, prop)
        if prop.get("type") == "files":
            hosted |= _hosted_urls(prop.get("files") or [])
        if field == "hero_image_url" and prop.get("type") == "files" and prop.get("files"):
            expiry = file_expiry(prop["files"][0])
            if expiry:
                expiries.append(expiry)
    if row.get("last_edited") is None:
        row["last_edited"] = page.get("last_edited_time")
    body = render(blocks, links)
    row["body_html"], row["body_text"], row["lost_blocks"] = body.html, body.text, body.lost
    row["source_url"] = page.get("url")
    expiries += hosted_expiries(blocks)
    row["media_expires_at"] = min(expiries) if expiries else None
    row["content_key"] = content_key(row, hosted)
    return row


def property_value(name: str, prop: dict[str, Any]) -> Any:
    """A Notion property value as plain Python: text, a list of names, a bool, a date, a URL."""
    kind = prop.get("type")
    value = prop.get(str(kind))
    if kind in ("title", "rich_text"):
        return rich_plain(value) or None
    if kind in ("select", "status"):
        return (value or {}).get("name")
    if kind == "multi_select":
        return [option.get("name") for option in value or [] if option.get("name")]
    if kind == "checkbox":
        return bool(value)
    if kind == "date":
        return (value or {}).get("start")
    if kind in ("created_time", "last_edited_time", "url", "email", "number"):
        return value
    if kind == "files":
        return file_url(value[0]) if value else None
    if kind == "formula":
        inner = value or {}
        return inner.get(str(inner.get("type")))
    raise SourceError(
        f"Notion property {name!r} has the type {kind}, which batchgate cannot read. Fix: map the "
        "field to a title, rich_text, select, status, multi_select, checkbox, date, files or url "
        "property in source.properties."
    )


# The query parameters of an S3 presigned URL: what Notion signs its hosted files' URLs with, and
# what changes on every read of an unedited page.
SIGNING_PARAMS = frozenset({
    "x-amz-algorithm", "x-amz-content-sha256", "x-amz-credential", "x-amz-date",
    "x-amz-expires", "x-amz-security-token", "x-amz-signature", "x-amz-signedheaders",
})  # fmt: skip


def content_key(row: dict[str, Any], hosted: set[str] | frozenset[str] = frozenset()) -> str:
    """A hash of the content with the signing parameters taken out of the `hosted` URLs only
    (Notion-hosted files, which are signed anew on every read): an unedited page keeps its key,
    and any other edit, a link's query included, changes it."""
    swaps = []
    for url in sorted(hosted, key=len, reverse=True):  # a longer URL may contain a shorter one
        plain = unsigned(url)
        swaps += [(url, plain), (html.escape(url, quote=True), html.escape(plain, quote=True))]
    stable = {
        key: _replace_all(value, swaps) if isinstance(value, str) else value
        for key, value in row.items()
        if key not in ("media_expires_at", "content_key")
    }
    blob = json.dumps(stable, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def unsigned(url: str) -> str:
    """A URL without its S3 signing parameters (the other query parameters kept, in order)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k.lower() not in SIGNING_PARAMS]  # fmt: skip
    return urlunsplit(parts._replace(query=urlencode(query)))


def _hosted_urls(objects: list[dict[str, Any]]) -> set[str]:
    """URLs of the Notion-hosted file objects (type "file") among files and blocks, nested ones too."""
    found: set[str] = set()
    for obj in objects:
        is_file = obj.get("object") != "block" and obj.get("type") in ("file", "external")
        body = obj if is_file else obj.get(str(obj.get("type")))  # a block holds its file
        if isinstance(body, dict) and body.get("type") == "file":
            url = (body.get("file") or {}).get("url")
            if url:
                found.add(str(url))
        found |= _hosted_urls(obj.get("children") or [])
    return found


def _replace_all(text: str, swaps: list[tuple[str, str]]) -> str:
    for old, new in swaps:
        text = text.replace(old, new)
    return text


def _missing(name: str, properties: dict[str, Any], setting: str) -> str:
    names = ", ".join(sorted(properties)) or "none"
    return (f"the Notion database has no property {name!r} (it has: {names}). Fix: set {setting} "
            "to one of those names.")  # fmt: skip


def _code(response: httpx.Response) -> str:
    try:
        return str(response.json().get("code") or "")
    except (ValueError, AttributeError):  # a proxy's HTML (a 502), or JSON not an object
        return ""


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message") or "")[:300]
    except (ValueError, AttributeError):
        return response.text[:300]


def _json(response: httpx.Response, method: str, path: str) -> dict[str, Any]:
    try:
        return dict(response.json())
    except ValueError:
        raise SourceError(
            f"Notion answered {method} {path} with HTTP {response.status_code} but no JSON. Fix: "
            "check source.base_url (it must be the API's, e.g. https://api.notion.com/v1)."
        ) from None


def _reason(response: httpx.Response) -> str:
    """A 429's `additional_data.rate_limit_reason` (request-limits), or ''."""
    try:
        data = response.json().get("additional_data") or {}
    except (ValueError, AttributeError):
        return ""
    return str(data.get("rate_limit_reason") or "") if isinstance(data, dict) else ""


def _blocked(method: str, path: str) -> str:
    return (f"Notion has blocked this integration's requests ({method} {path}: HTTP 429 "
            f"rate_limited, rate_limit_reason {BLOCKED}); waiting will not lift it, so nothing "
            "was retried. Fix: check the integration at notion.so/profile/integrations (a "
            "workspace owner may have disabled it) or ask Notion support, then run again.")  # fmt: skip


def _incomplete(answer: dict[str, Any]) -> bool:
    """A capped query (query-large-data-sources): any page of it may say so."""
    status = answer.get("request_status") or {}
    return isinstance(status, dict) and status.get("type") == "incomplete"


def _created_since(
    filter_: dict[str, Any] | None, after: str | None
) -> dict[str, Any] | None:
    """The job's filter, and created at or after `after` when given (flattened into an `and`:
    Notion nests compound filters two levels deep at most)."""
    if after is None:
        return filter_
    window = {"timestamp": "created_time", "created_time": {"on_or_after": after}}
    if not filter_:
        return window
    if set(filter_) == {"and"}:
        return {"and": [*filter_["and"], window]}
    return {"and": [filter_, window]}


def _stuck(data_source_id: str, after: str | None) -> str:
    return (f"Notion data source {data_source_id} holds more than 10,000 pages matching the "
            f"filter created at {after} or later that cannot be told apart by created_time, so "
            "they cannot all be read (a query returns at most 10,000). Fix: narrow source.filter "
            "and run one job per part.")  # fmt: skip


def _several_sources(database_id: str, sources: list[dict[str, Any]]) -> str:
    names = ", ".join(f"{s.get('name') or '(untitled)'!r} ({s.get('id')})" for s in sources)
    first = sources[0].get("name") or sources[0].get("id")
    return (f"Notion database {database_id} has {len(sources)} data sources: {names}; only the "
            f"first, {first!r}, is read. Fix: set source.data_source_id to the one to migrate "
            "(one job per data source).")  # fmt: skip
