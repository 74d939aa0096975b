"""A real HTTP server on 127.0.0.1 that behaves like the Notion API (version 2025-09-03).

Bearer auth; a required Notion-Version header (400 missing_version); ids with or without dashes;
a database (with its title) and its data sources (one by default, more when asked) with the
property schema; data source queries (and the legacy database query) with filters (the conditions
of each property type, timestamp conditions, and/or), sorts, page_size (at most 100), opaque
cursors (a bad one is a 400), `result_type` and the 10,000-result cap; pages; blocks and their
children with pagination and nesting (none is an empty list); Notion's error bodies; Notion's
per-connection limit, a budget of requests per fixed window (180 per 60 s), answered with 429
rate_limited, `additional_data.rate_limit_reason` and Retry-After (or, when `rate_per_s` is given,
a token bucket averaging that rate). Faults: 500/502/503/504/529 at a given rate, a blocked
integration, pages whose blocks the integration may not read, and a query that repeats its cursor.
tests/test_fakes_contract.py checks it with Notion's own SDK.

Sources, as ../shared/reference/apis.md names them: developers.notion.com request-limits (the
fixed window, rate_limit_reason, 529), query-large-data-sources (the cap, request_status),
the data source query reference (result_type), the error codes of the API reference.
"""

from __future__ import annotations

import base64
import json
import math
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.fakes.base import JsonHandler, ThreadedServer

VERSION = "2025-09-03"
CATEGORIES = ["Engineering", "Data", "Cloud", "Security", "AI"]


@dataclass
class NotionFaults:
    error_rate: float = 0.0  # share of requests answered with one of `statuses`
    # developers.notion.com request-limits: retry 500, 502, 503, 504 for reads, and 529
    # service_overload ("whether Notion sends 529 is unconfirmed": it may, so the fake does)
    statuses: tuple[int, ...] = (500, 503, 529)
    repeat_cursor: bool = False  # a query answers its first cursor forever
    # request-limits: `rate_limit_reason: public_api_request_blocked` is never lifted by waiting
    blocked: bool = False
    # block ids (pages too) whose children the integration may not read: 403 restricted_resource,
    # or 404 object_not_found for a page (or a synced block's original) not shared with it
    forbidden: dict[str, int] = field(default_factory=dict)
    latency: tuple[float, float] = (0.0, 0.0)
    seed: int = 11


@dataclass
class NotionState:
    token: str = "notion-test-token"
    # developers.notion.com request-limits: per connection, a fixed budget of requests per
    # 60-second window (180; 600 on Business and Enterprise), spendable at any pace within it;
    # over it, 429 rate_limited with Retry-After "the time until the window resets"
    window_requests: int = 180
    window_s: float = 60.0
    rate_per_s: float | None = None  # given: a token bucket of this average instead (older tests)
    burst: float = 10.0
    # query-large-data-sources: "a single data source query returns at most 10,000 results"
    result_limit: int = 10_000
    # the data source query reference: by default a wiki data source returns pages and data
    # sources alike; `result_type: "page"` (or "data_source") keeps one kind
    wiki: bool = False
    extra_data_sources: list[dict[str, str]] = field(default_factory=list)  # [{id, name}]
    faults: NotionFaults = field(default_factory=NotionFaults)
    database_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    data_source_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    queries: list[dict[str, Any]] = field(default_factory=list)  # the body of every query
    pages: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> page, in order
    children: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # block id -> blocks
    blocks: dict[str, dict[str, Any]] = field(default_factory=dict)  # every block, by id
    requests: list[tuple[float, str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.tokens = self.burst
        self.refilled = self.started = time.monotonic()
        self.window, self.spent = 0, 0  # the current fixed window's number, and its requests
        self.rng = random.Random(self.faults.seed)

    def take(self) -> float:
        """0 if the request may go, else the seconds until it could."""
        with self.lock:
            now = time.monotonic()
            if self.rate_per_s is not None:
                return self._bucket(now, self.rate_per_s)
            window = int((now - self.started) // self.window_s)
            if window != self.window:
                self.window, self.spent = window, 0
            if self.spent < self.window_requests:
                self.spent += 1
                return 0.0
            return self.started + (window + 1) * self.window_s - now

    def _bucket(self, now: float, rate: float) -> float:
        self.tokens = min(self.burst, self.tokens + (now - self.refilled) * rate)
        self.refilled = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / rate

    def edit(self, page_id: str, **properties: Any) -> None:
        """Change a page as a person would: its properties, and last_edited_time (to the minute)."""
        with self.lock:
            page = self.pages[page_id]
            for name, value in properties.items():
                page["properties"][name] = value
            page["last_edited_time"] = _minute(datetime.now(UTC))
            if "Last edited" in page["properties"]:
                page["properties"]["Last edited"]["last_edited_time"] = page["last_edited_time"]


def _minute(moment: datetime) -> str:
    return moment.replace(second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M:00.000Z")


# --- content builders --------------------------------------------------------------------------


def text(content: str, *, bold: bool = False, italic: bool = False, code: bool = False,
         strike: bool = False, underline: bool = False, link: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        "type": "text", "text": {"content": content, "link": {"url": link} if link else None},
        "annotations": {"bold": bold, "italic": italic, "strikethrough": strike,
                        "underline": underline, "code": code, "color": "default"},
        "plain_text": content, "href": link,
    }  # fmt: skip


def block(kind: str, rich: list[dict[str, Any]] | None = None, children: list[dict[str, Any]] |
          None = None, **extra: Any) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {"rich_text": rich or [], **extra} if kind != "divider" else {}
    out = {"object": "block", "id": str(uuid.uuid4()), "type": kind, kind: body,
           "has_children": bool(children), "archived": False, "in_trash": False}  # fmt: skip
    if children:
        out["_children"] = children
    return out


def hosted_file(url: str, expires_in: timedelta = timedelta(hours=1)) -> dict[str, Any]:
    """A Notion-hosted file; its signed URL expires `expires_in` from now (kept on every read)."""
    expiry = (datetime.now(UTC) + expires_in).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {"type": "file", "file": {"url": f"{url}?X-Amz-Signature={uuid.uuid4().hex}",
                                     "expiry_time": expiry}}  # fmt: skip


def blog_blocks(n: int, rng: random.Random) -> list[dict[str, Any]]:
    """A post body with every block type the renderer knows, nesting and split rich text."""
    paragraphs = rng.randint(8, 120)
    blocks = [
        block("heading_1", [text(f"Part one of post {n}")]),
        block("paragraph", [text("It starts "), text("bold", bold=True), text(" and "),
                            text("italic", italic=True), text(", with "),
                            text("a link", link=f"https://example.com/{n}"), text(" and "),
                            text("code()", code=True), text(" & <script>alert(1)</script>.")]),
        block("bulleted_list_item", [text("First point")], children=[
            block("bulleted_list_item", [text("A nested point")]),
            block("bulleted_list_item", [text("Another, "), text("struck", strike=True)]),
        ]),
        block("bulleted_list_item", [text("Second point")]),
        block("numbered_list_item", [text("Step one")], children=[
            block("paragraph", [text("Details of step one, "), text("underlined", underline=True)]),
        ]),
        block("numbered_list_item", [text("Step two")]),
        block("heading_2", [text("The middle")]),
        block("quote", [text("A quote worth keeping.")], children=[
            block("paragraph", [text("Said by someone.")]),
        ]),
        block("code", [text("def main():\n"), text("    return 1 < 2\n")], language="python",
              caption=[text("main.py")]),
        block("image", [], type="external", external={"url": f"https://img.example.com/b{n}.png"},
              caption=[text(f"Figure {n}")]),
        block("divider"),
        block("heading_3", [text("Details")], children=None),
        block("toggle", [text("More")], children=[block("paragraph", [text("Hidden text.")])]),
    ]  # fmt: skip
    words = ["data", "pipeline", "cloud", "batch", "notion", "webflow", "migration", "team"]
    for k in range(paragraphs):
        blocks.append(block("paragraph", [text(" ".join(rng.choice(words) for _ in range(12))),
                                          text(f" (paragraph {k + 1})")]))  # fmt: skip
    return blocks


def png_header(width: int, height: int) -> bytes:
    """The first bytes of a PNG: enough for an image probe to read its size."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + crc + b"\0" * 64


def blog_page(n: int, state: NotionState, *, status: str = "Published",
              category: str | None = None, hosted: bool = False,
              files: str = "https://files.notion.test",
              expires_in: timedelta = timedelta(hours=1)) -> dict[str, Any]:  # fmt: skip
    page_id = str(uuid.UUID(int=n + 1))
    edited = _minute(datetime(2025, 10, 1, tzinfo=UTC) + timedelta(minutes=n))
    cover = (hosted_file(f"{files}/files/cover-{n}.png", expires_in) if hosted else
             {"type": "external", "name": "cover", "external": {"url": f"{files}/img/cover-{n}.png"}})  # fmt: skip
    properties = {
        "Name": {"id": "title", "type": "title",
                 "title": [text(f"Post {n}: "), text("notes on <things>", italic=True)]},
        "Slug": {"id": "slug", "type": "rich_text", "rich_text": [text(f"post-{n}")]},
        "Status": {"id": "st", "type": "status", "status": {"id": "s1", "name": status,
                                                            "color": "green"}},
        "Category": {"id": "cat", "type": "select", "select": {
            "id": "c1", "name": category or CATEGORIES[n % len(CATEGORIES)], "color": "blue"}},
        "Tags": {"id": "tags", "type": "multi_select",
                 "multi_select": [{"id": "t1", "name": "notion"}, {"id": "t2", "name": f"t{n % 7}"}]},
        "Featured": {"id": "feat", "type": "checkbox", "checkbox": n % 10 == 0},
        "Publish date": {"id": "pd", "type": "date",
                         "date": {"start": f"2025-{1 + n % 12:02d}-{1 + n % 28:02d}", "end": None,
                                  "time_zone": None}},
        "Cover image": {"id": "cov", "type": "files", "files": [cover]},
        "Summary": {"id": "sum", "type": "rich_text",
                    "rich_text": [text(f"What post {n} is about, in one line.")]},
        "Last edited": {"id": "le", "type": "last_edited_time", "last_edited_time": edited},
    }  # fmt: skip
    return {"object": "page", "id": page_id, "created_time": edited, "last_edited_time": edited,
            "archived": False, "in_trash": False, "url": f"https://www.notion.so/post-{n}-{page_id}",
            "properties": properties}  # fmt: skip


SCHEMA_TYPES = {"Name": "title", "Slug": "rich_text", "Status": "status", "Category": "select",
                "Tags": "multi_select", "Featured": "checkbox", "Publish date": "date",
                "Cover image": "files", "Summary": "rich_text", "Last edited": "last_edited_time"}  # fmt: skip


class NotionServer(ThreadedServer):
    """Starts the fake API in a thread; `base_url` is what source.base_url takes."""

    prefix = "/v1"

    def __init__(self, state: NotionState | None = None, port: int = 0) -> None:
        super().__init__(_Handler, state or NotionState(), port)

    def add_pages(self, count: int, start: int = 1, seed: int = 3, bodies: bool = True,
                  **kwargs: Any) -> list[str]:  # fmt: skip
        """Blog pages with bodies (or, `bodies=False`, empty ones: cheap by the thousand);
        returns their ids."""
        rng = random.Random(seed)
        ids = []
        kwargs.setdefault("files", self.base_url.removesuffix("/v1"))
        for n in range(start, start + count):
            page = blog_page(n, self.state, **kwargs)
            self.add(page, blog_blocks(n, rng) if bodies else [])
            ids.append(page["id"])
        return ids

    def add(self, page: dict[str, Any], blocks: list[dict[str, Any]]) -> None:
        with self.state.lock:
            self.state.pages[page["id"]] = page
        self._store(page["id"], blocks)

    def _store(self, parent: str, blocks: list[dict[str, Any]]) -> None:
        for b in blocks:
            if b.get("_children"):
                self._store(b["id"], b.pop("_children"))
        with self.state.lock:
            self.state.children[parent] = blocks
            self.state.blocks.update((b["id"], b) for b in blocks)


class _Handler(JsonHandler):
    state: NotionState

    def _dispatch(self, method: str) -> None:
        state = self.state
        if method == "GET" and self.path.startswith(("/files/", "/img/")):
            return self._image()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.headers.get("Authorization") != f"Bearer {state.token}":
            return self._error(401, "unauthorized", "API token is invalid.", method)
        if not self.headers.get("Notion-Version"):
            return self._error(400, "missing_version", "Notion-Version header failed validation: "
                               "Notion-Version should be defined, instead was `undefined`.", method)  # fmt: skip
        if state.faults.blocked:  # request-limits: never lifted by waiting, never to be retried
            return self._rate_limited(method, 60, "public_api_request_blocked")
        wait = state.take()
        if wait > 0:  # request-limits: Retry-After is an integer number of seconds
            return self._rate_limited(method, max(1, math.ceil(wait)), "public_api_request_rate_limit")
        low, high = state.faults.latency
        if high:
            time.sleep(random.uniform(low, high))
        with state.lock:
            fault = state.rng.random() < state.faults.error_rate
            status = state.rng.choice(state.faults.statuses)
        if fault:
            return self._fault(status, method)
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return self._error(400, "invalid_json", "Error parsing JSON body.", method)
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        routes = [
            ("GET", r"/v1/databases/(?P<id>[^/]+)", self._database),
            ("POST", r"/v1/databases/(?P<id>[^/]+)/query", self._query),  # legacy, deprecated
            ("GET", r"/v1/data_sources/(?P<id>[^/]+)", self._data_source),
            ("POST", r"/v1/data_sources/(?P<id>[^/]+)/query", self._query),
            ("GET", r"/v1/pages/(?P<id>[^/]+)", self._page),
            ("GET", r"/v1/blocks/(?P<id>[^/]+)", self._block),
            ("GET", r"/v1/blocks/(?P<id>[^/]+)/children", self._children),
        ]
        for verb, pattern, handler in routes:
            found = re.fullmatch(pattern, url.path)
            if verb == method and found:
                return handler(method, _canon(found.group("id")), body, query)
        return self._error(400, "invalid_request_url", "Invalid request URL.", method)

    def _rate_limited(self, method: str, retry_after: int, reason: str) -> None:
        """429 rate_limited; `additional_data.rate_limit_reason` says which limit (request-limits)."""
        self._send(429, {"object": "error", "status": 429, "code": "rate_limited",
                         "message": "You have been rate limited. Please try again in a few minutes.",
                         "request_id": str(uuid.uuid4()),
                         "additional_data": {"rate_limit_reason": reason}},
                   method, {"Retry-After": str(retry_after)})  # fmt: skip

    def _fault(self, status: int, method: str) -> None:
        """A server fault. A 502 comes from a proxy in front of the API: its body is not Notion's
        JSON (unconfirmed; a reader must cope with either)."""
        if status == 502:
            return self._reply(method, 502, b"<html><body>502 Bad Gateway</body></html>",
                               content_type="text/html")  # fmt: skip
        code = {500: "internal_server_error", 503: "service_unavailable",
                504: "gateway_timeout", 529: "service_overload"}[status]  # fmt: skip
        return self._error(status, code, "Something went wrong.", method)

    # --- routes -------------------------------------------------------------------------------

    def _database(self, method: str, ident: str, body: Any, query: Any) -> None:
        if ident != _canon(self.state.database_id):
            return self._not_found(method, ident)
        self._send(200, {"object": "database", "id": ident, "title": [text("Blog posts")],
                         "description": [], "icon": None, "cover": None, "is_inline": False,
                         "in_trash": False, "is_locked": False,
                         "parent": {"type": "workspace", "workspace": True},
                         "created_time": "2025-09-01T00:00:00.000Z",
                         "last_edited_time": "2025-09-01T00:00:00.000Z",
                         "url": f"https://www.notion.so/{ident.replace('-', '')}",
                         "data_sources": [{"id": self.state.data_source_id, "name": "Posts"},
                                          *self.state.extra_data_sources]},
                   method)  # fmt: skip

    def _data_source(self, method: str, ident: str, body: Any, query: Any) -> None:
        if ident != _canon(self.state.data_source_id):
            return self._not_found(method, ident)
        properties = {name: {"id": name.lower()[:4], "name": name, "type": kind, kind: {}}
                      for name, kind in SCHEMA_TYPES.items()}  # fmt: skip
        self._send(200, {"object": "data_source", "id": ident, "title": [text("Posts")],
                         "parent": {"type": "database_id",
                                    "database_id": _canon(self.state.database_id)},
                         "properties": properties}, method)  # fmt: skip

    def _query(self, method: str, ident: str, body: dict[str, Any], query: Any) -> None:
        if ident not in (_canon(self.state.data_source_id), _canon(self.state.database_id)):
            return self._not_found(method, ident)
        with self.state.lock:
            self.state.queries.append(body)
        window = _window(body.get("page_size"), body.get("start_cursor"), "body")
        wrong = (_bad_filter(body.get("filter")) or _bad_sorts(body.get("sorts"))
                 or _bad_result_type(body.get("result_type")))  # fmt: skip
        if wrong or isinstance(window, str):
            return self._error(400, "validation_error", wrong or str(window), method)
        size, start = window
        with self.state.lock:
            pages = [p for p in self.state.pages.values() if _matches(p, body.get("filter"))]
        pages = _sort(pages, body.get("sorts") or [])
        results = self._of_type(pages, body.get("result_type"))
        if self.state.faults.repeat_cursor and start:
            start = size  # the second page keeps pointing at itself
        # query-large-data-sources: pagination stops at the cap, has_more is then false, and
        # every page of a capped query says so in request_status
        capped = len(results) > self.state.result_limit
        end = min(start + size, self.state.result_limit)
        chunk = results[start:end]
        more = end < min(len(results), self.state.result_limit)
        answer = {"object": "list", "results": chunk, "has_more": more,
                  "next_cursor": _encode(end) if more else None,
                  "type": "page_or_data_source", "page_or_data_source": {}}  # fmt: skip
        if capped:
            answer["request_status"] = {"type": "incomplete",
                                        "incomplete_reason": "query_result_limit_reached"}  # fmt: skip
        self._send(200, answer, method)

    def _of_type(self, pages: list[dict[str, Any]], kind: str | None) -> list[dict[str, Any]]:
        """A wiki's query holds its pages and its data sources unless result_type names one kind."""
        if not self.state.wiki or kind == "page":
            return pages
        sources = [{"object": "data_source", "id": s["id"], "title": [text(s["name"])],
                    "created_time": "2025-09-01T00:00:00.000Z",
                    "last_edited_time": "2025-09-01T00:00:00.000Z", "properties": {}}
                   for s in [{"id": self.state.data_source_id, "name": "Posts"},
                             *self.state.extra_data_sources]]  # fmt: skip
        return sources if kind == "data_source" else sources + pages

    def _page(self, method: str, ident: str, body: Any, query: Any) -> None:
        page = self.state.pages.get(ident)
        if page is None:
            return self._not_found(method, ident)
        self._send(200, _fresh(page), method)

    def _block(self, method: str, ident: str, body: Any, query: Any) -> None:
        """A block; a page read as a block is a child_page with the page's blocks as children."""
        found = self.state.blocks.get(ident)
        page = self.state.pages.get(ident)
        if found is None and page is None:
            return self._not_found(method, ident)
        if found is None:
            title = "".join(t["plain_text"] for p in page["properties"].values()  # type: ignore[union-attr]
                            if p.get("type") == "title" for t in p["title"])  # fmt: skip
            found = {"object": "block", "id": ident, "type": "child_page",
                     "child_page": {"title": title}, "has_children": bool(self.state.children.get(ident)),
                     "archived": False, "in_trash": False}  # fmt: skip
        self._send(200, _fresh(found), method)

    def _children(self, method: str, ident: str, body: Any, query: dict[str, str]) -> None:
        refused = self.state.faults.forbidden.get(ident)
        if refused == 403:
            return self._error(403, "restricted_resource", "API token does not have access to "
                               "this resource.", method)  # fmt: skip
        if refused == 404:
            return self._not_found(method, ident)
        known = ident in self.state.blocks or ident in self.state.pages
        blocks = self.state.children.get(ident, [] if known else None)
        if blocks is None:
            return self._not_found(method, ident)
        window = _window(query.get("page_size"), query.get("start_cursor"), "query")
        if isinstance(window, str):
            return self._error(400, "validation_error", window, method)
        size, start = window
        chunk = blocks[start : start + size]
        more = start + size < len(blocks)
        self._send(200, {"object": "list", "results": [_fresh(b) for b in chunk], "has_more": more,
                         "next_cursor": _encode(start + size) if more else None,
                         "type": "block", "block": {}}, method)  # fmt: skip

    # --- plumbing -----------------------------------------------------------------------------

    def _image(self) -> None:
        """Cover images (hosted and external alike): the head of a 16:9 PNG, whatever the Range."""
        self._reply("GET", 200, png_header(1600, 900), content_type="image/png")

    def _not_found(self, method: str, ident: str) -> None:
        self._error(404, "object_not_found", f"Could not find object with ID: {ident}. Make sure "
                    "the relevant pages and databases are shared with your integration.", method)  # fmt: skip

    def _error(self, status: int, code: str, message: str, method: str,
               headers: dict[str, str] | None = None) -> None:  # fmt: skip
        self._send(status, {"object": "error", "status": status, "code": code, "message": message,
                            "request_id": str(uuid.uuid4())}, method, headers)  # fmt: skip

    def _send(self, status: int, payload: Any, method: str,
              headers: dict[str, str] | None = None) -> None:  # fmt: skip
        self._reply(method, status, json.dumps(payload).encode(), headers)


def _fresh(obj: dict[str, Any]) -> dict[str, Any]:
    """Hosted file URLs are signed anew on every read, as Notion's are."""
    blob = json.dumps(obj)
    blob = re.sub(
        r"X-Amz-Signature=[0-9a-f]+", lambda _: f"X-Amz-Signature={uuid.uuid4().hex}", blob
    )
    return json.loads(blob)


def _canon(ident: str) -> str:
    """An id as Notion writes it (dashed, lower case); Notion takes it with or without dashes."""
    try:
        return str(uuid.UUID(ident))
    except ValueError:
        return ident


def _encode(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode(cursor: str | None) -> int | None:
    """The offset of a cursor of ours; None for a cursor we never gave."""
    if not cursor:
        return 0
    try:
        kind, offset = base64.urlsafe_b64decode(cursor.encode()).decode().split(":")
        return int(offset) if kind == "offset" and int(offset) >= 0 else None
    except (ValueError, UnicodeDecodeError):
        return None


def _window(page_size: Any, cursor: str | None, where: str) -> tuple[int, int] | str:
    """(page size, start offset), or the message of Notion's 400 validation_error."""
    try:
        size = 100 if page_size is None else int(page_size)
    except (TypeError, ValueError):
        size = 0
    if not 1 <= size <= 100:
        return (f"body failed validation: {where}.page_size should be a number between 1 and "
                f"100, instead was `{json.dumps(page_size)}`.")  # fmt: skip
    start = _decode(cursor)
    if start is None:
        return f"The start_cursor provided is invalid: {cursor}"
    return size, start


# --- filters and sorts ---------------------------------------------------------------------------

TEXT = {"equals", "does_not_equal", "contains", "does_not_contain", "starts_with", "ends_with",
        "is_empty", "is_not_empty"}  # fmt: skip
DATE = {"equals", "before", "after", "on_or_before", "on_or_after", "is_empty", "is_not_empty"}
CONDITIONS = {  # what each property type can be filtered on (the relative dates are not faked)
    "title": TEXT, "rich_text": TEXT, "url": TEXT,
    "status": {"equals", "does_not_equal", "is_empty", "is_not_empty"},
    "select": {"equals", "does_not_equal", "is_empty", "is_not_empty"},
    "multi_select": {"contains", "does_not_contain", "is_empty", "is_not_empty"},
    "checkbox": {"equals", "does_not_equal"}, "files": {"is_empty", "is_not_empty"},
    "date": DATE, "last_edited_time": DATE, "created_time": DATE,
}  # fmt: skip


def _value(page: dict[str, Any], kind: str, name: str | None) -> Any:
    """What a filter or a sort compares: text, a name, names, a bool, an instant, or None."""
    if name is None:  # a timestamp of the page itself
        return _when(page[kind])
    prop = page["properties"].get(name) or {}
    value = prop.get(kind)
    if kind in ("title", "rich_text"):
        return "".join(p["plain_text"] for p in value or []) or None
    if kind in ("status", "select"):
        return (value or {}).get("name")
    if kind == "multi_select":
        return [o["name"] for o in value or []]
    if kind == "date":
        return _when(value["start"]) if value else None
    if kind in ("last_edited_time", "created_time"):
        return _when(value) if value else None
    return value


def _test(value: Any, op: str, operand: Any, kind: str) -> bool:
    if op == "is_empty":
        return value in (None, [], "")
    if op == "is_not_empty":
        return value not in (None, [], "")
    if kind in ("date", "last_edited_time", "created_time"):
        bound = _when(operand)
        if value is None:
            return False
        return {"equals": value == bound, "before": value < bound, "after": value > bound,
                "on_or_before": value <= bound, "on_or_after": value >= bound}[op]  # fmt: skip
    if kind == "multi_select":
        return (operand in value) == (op == "contains")
    if op in ("equals", "does_not_equal"):
        return (value == operand) == (op == "equals")
    text_value = value or ""
    return {"contains": operand in text_value, "does_not_contain": operand not in text_value,
            "starts_with": text_value.startswith(operand),
            "ends_with": text_value.endswith(operand)}[op]  # fmt: skip


def _matches(page: dict[str, Any], rule: dict[str, Any] | None) -> bool:
    if not rule:
        return True
    if "and" in rule:
        return all(_matches(page, r) for r in rule["and"])
    if "or" in rule:
        return any(_matches(page, r) for r in rule["or"])
    if "timestamp" in rule:
        kind, name = rule["timestamp"], None
    else:
        kind, name = SCHEMA_TYPES[rule["property"]], rule["property"]
    ((op, operand),) = rule[kind].items()
    return _test(_value(page, kind, name), op, operand, kind)


def _bad_filter(rule: dict[str, Any] | None) -> str | None:
    """Notion refuses a filter whose condition does not fit the property's type."""
    if not rule:
        return None
    for key in ("and", "or"):
        if key in rule:
            return next((w for w in map(_bad_filter, rule[key]) if w), None)
    if "timestamp" in rule:
        kind = rule["timestamp"]
        if kind not in ("last_edited_time", "created_time"):
            return f"body failed validation: body.filter.timestamp should be `created_time` or `last_edited_time`, instead was `{kind}`."
    else:
        kind = SCHEMA_TYPES.get(rule.get("property", ""))
        if kind is None:
            return f"Could not find property with name or id: {rule.get('property')}"
    if kind not in rule:
        given = next((k for k in rule if k not in ("property", "timestamp")), "?")
        return (
            f"body failed validation: body.filter.{given} should be not present, instead was "
            f"`{json.dumps(rule.get(given))}`; property {rule.get('property')} is a {kind}."
        )
    condition = rule[kind]
    if not isinstance(condition, dict) or len(condition) != 1 or set(condition) - CONDITIONS[kind]:
        return (f"body failed validation: body.filter.{kind} should have one of "
                f"{sorted(CONDITIONS[kind])}, instead was `{json.dumps(condition)}`.")  # fmt: skip
    return None


def _bad_result_type(kind: Any) -> str | None:
    if kind is None or kind in ("page", "data_source"):
        return None
    return (f"body failed validation: body.result_type should be `page` or `data_source`, "
            f"instead was `{json.dumps(kind)}`.")  # fmt: skip


def _bad_sorts(sorts: Any) -> str | None:
    """Each sort names a property of the schema or a timestamp, and a direction."""
    for entry in sorts or []:
        known = (entry.get("property") in SCHEMA_TYPES if "property" in entry
                 else entry.get("timestamp") in ("created_time", "last_edited_time"))  # fmt: skip
        if not known:
            return f"Could not find sort property with name or id: {entry.get('property') or entry.get('timestamp')}"
        if entry.get("direction") not in ("ascending", "descending"):
            return (f"body failed validation: body.sorts.direction should be `ascending` or "
                    f"`descending`, instead was `{entry.get('direction')}`.")  # fmt: skip
    return None


def _sort(pages: list[dict[str, Any]], sorts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first sort decides, the next break ties; empty values go last either way."""
    for entry in reversed(sorts):
        name = entry.get("property")
        kind = SCHEMA_TYPES[name] if name else entry["timestamp"]

        def key(page: dict[str, Any], kind: str = kind, name: str | None = name) -> Any:
            value = _value(page, kind, name)
            return value[0] if isinstance(value, list) else value

        having = [p for p in pages if key(p) not in (None, [])]
        having.sort(key=key, reverse=entry["direction"] == "descending")
        pages = having + [p for p in pages if key(p) in (None, [])]
    return pages


def _when(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
