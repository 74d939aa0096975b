"""Untrusted item data is contained: item URLs stay off private addresses (every redirect hop
included), image probes are bounded in time and bytes, odd headers and control characters block
their item instead of crashing the run, hostile job files are refused, and item text is escaped
wherever it is rendered. Real servers on 127.0.0.1 and 127.0.0.2, real PostgreSQL, no mocks."""

from __future__ import annotations

import gzip
import html
import json
import re
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from batchgate.config import LedgerConfig, load_job
from batchgate.errors import ConfigError
from batchgate.images import BlockedURL, ImageProbe, ProbeError
from batchgate.schema import BLOG, build_items
from batchgate.validation.rules import AspectParams, AspectRatio, Context
from blocks.ledger import open_ledger
from tests.conftest import blog_row
from tests.test_images import png

BATCHGATE = str(Path(sys.executable).with_name("batchgate"))
ALLOW = "network: {allow_private_hosts: true}\n"


# --- a server that records every request and answers from a per-path function --------------------

Answer = Callable[[BaseHTTPRequestHandler], None]


class Recorder:
    """A real HTTP server on `host` that records each request's path before answering it."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[str] = []
        self.routes: dict[str, Answer] = {}
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                recorder.requests.append(self.path)
                answer = recorder.routes.get(self.path)
                try:
                    if answer is None:
                        self.send_error(404)
                    else:
                        answer(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def body(data: bytes, **headers: str) -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        for name, value in {"Content-Length": str(len(data)), **headers}.items():
            handler.send_header(name.replace("_", "-"), value)
        handler.end_headers()
        handler.wfile.write(data)

    return answer


def redirect(location: str) -> Answer:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


def trickle(every_s: float, total: int) -> Answer:
    """A body sent one byte at a time: each read is quick, the whole never ends in time."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(total))
        handler.end_headers()
        for _ in range(total):
            handler.wfile.write(b"x")
            handler.wfile.flush()
            threading.Event().wait(every_s)

    return answer


@pytest.fixture
def local() -> Any:
    server = Recorder("127.0.0.1")
    yield server
    server.close()


@pytest.fixture
def other() -> Any:
    """A second loopback address: the target a redirect must not reach."""
    server = Recorder("127.0.0.2")
    yield server
    server.close()


# --- item URLs and private addresses -------------------------------------------------------------


def test_a_hero_url_redirecting_to_loopback_is_blocked_and_the_target_receives_nothing(
    local: Recorder, other: Recorder
) -> None:
    target = other.url("/secret.png")
    other.routes["/secret.png"] = body(png(1600, 900))
    local.routes["/hero.png"] = redirect(target)
    url = local.url("/hero.png")
    # the first hop's address is let through (it plays a public host); the redirect's is not
    probe = ImageProbe(timeout=2, exempt=frozenset({"127.0.0.1"}))
    items = build_items([("posts.csv row 1", blog_row(1, hero_image_url=url, hero_width="",
                                                      hero_height=""))], BLOG)  # fmt: skip
    rule = AspectRatio("hero_aspect_ratio", "hero_image_url", "warning", AspectParams())
    context = Context(probe=probe)
    rule.prepare(items, context)
    (issue,) = rule.check(items[0], context)

    assert isinstance(context.image_sizes[url], BlockedURL)
    assert issue.severity == "blocked" and issue.field == "hero_image_url"
    assert "127.0.0.2 is a loopback address" in issue.message
    assert f"a redirect led to {target}" in issue.message
    assert "posts.csv row 1, column 'hero_image_url'" in issue.fix and "p-001" in issue.fix
    assert "network.allow_private_hosts: true" in issue.fix
    assert local.requests == ["/hero.png"] and other.requests == []


def test_redirects_are_followed_a_bounded_number_of_times(local: Recorder) -> None:
    local.routes["/loop"] = redirect("/loop")
    local.routes["/moved"] = redirect("/final.png")
    local.routes["/final.png"] = body(png(1600, 900))
    probe = ImageProbe(timeout=2, allow_private_hosts=True)
    sizes = probe.sizes([local.url("/loop"), local.url("/moved")])
    assert sizes[local.url("/moved")] == (1600, 900)
    assert "more than 5 redirects" in str(sizes[local.url("/loop")])
    assert local.requests.count("/loop") == 6


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "[::1]", "[::ffff:127.0.0.1]", "0.0.0.0"]
)
def test_direct_private_addresses_are_refused_before_any_connection(host: str) -> None:
    url = f"http://{host}:9/x.png"
    result = ImageProbe(timeout=1).sizes([url])[url]
    assert isinstance(result, BlockedURL) and "address" in str(result)


def test_host_names_are_resolved_and_every_address_checked(local: Recorder) -> None:
    local.routes["/x.png"] = body(png(16, 9))
    url = local.url("/x.png").replace("127.0.0.1", "localhost")
    result = ImageProbe(timeout=2).sizes([url])[url]
    assert isinstance(result, BlockedURL) and "localhost (" in str(result)
    assert local.requests == []


def write_posts(folder: Path, rows: list[dict[str, Any]]) -> None:
    import csv

    with (folder / "posts.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(BLOG.columns))
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.prefect
def test_dry_run_blocks_a_loopback_hero_image_unless_the_job_allows_private_hosts(
    prefect_api: str, tmp_path: Path, local: Recorder, write_job: Callable[..., Path]
) -> None:
    from flows.dry_run import dry_run

    local.routes["/hero.png"] = body(png(1600, 900))
    url = local.url("/hero.png")
    write_posts(tmp_path, [blog_row(1, hero_image_url=url, hero_width="", hero_height=""),
                           blog_row(2)])  # fmt: skip

    refused = dry_run(load_job(write_job()), json_path=str(tmp_path / "refused.json"))
    assert (refused["total"], refused["blocked"]) == (2, 1)
    assert local.requests == []  # the local server received nothing
    (item,) = [i for i in json.loads((tmp_path / "refused.json").read_text())["items"]
               if i["severity"] == "blocked"]  # fmt: skip
    assert item["id"] == "p-001"
    assert "127.0.0.1 is a loopback address" in item["issues"][0]["message"]
    assert "network.allow_private_hosts" in item["issues"][0]["fix"]
    assert "network.allow_private_hosts" in refused["report"]

    allowed = dry_run(load_job(write_job(extra=ALLOW, name="allowed.yaml")))
    assert (allowed["total"], allowed["blocked"]) == (2, 0)
    assert local.requests == ["/hero.png"]


# --- bounded probes ------------------------------------------------------------------------------


def test_a_gzip_bomb_is_never_inflated_past_the_cap(local: Recorder) -> None:
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # 64 MiB in ~64 KiB
    local.routes["/bomb.png"] = body(bomb, Content_Encoding="gzip", Content_Type="image/png")
    url = local.url("/bomb.png")
    probe = ImageProbe(timeout=5, allow_private_hosts=True)
    tracemalloc.start()
    try:
        result = probe.sizes([url])[url]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(result, ProbeError)
    assert f"the first {probe.max_bytes:,} bytes hold not a PNG" in str(result)
    assert peak < 8 << 20  # decoding the whole body would hold 64 MiB at once


def test_a_gzip_body_holding_an_image_is_decoded(local: Recorder) -> None:
    local.routes["/z.png"] = body(gzip.compress(png(1600, 900)), Content_Encoding="gzip")
    url = local.url("/z.png")
    assert ImageProbe(timeout=2, allow_private_hosts=True).sizes([url])[url] == (1600, 900)


def test_a_probe_has_an_overall_deadline_not_only_a_read_timeout(local: Recorder) -> None:
    local.routes["/slow.png"] = trickle(every_s=0.05, total=10_000)
    url = local.url("/slow.png")
    result = ImageProbe(timeout=1, deadline=0.5, allow_private_hosts=True).sizes([url])[url]
    assert isinstance(result, ProbeError)
    assert "no complete answer within the 0.5 s deadline" in str(result)


# --- an image of 0 pixels ------------------------------------------------------------------------


@pytest.mark.prefect
@pytest.mark.parametrize("width, height", [(1600, 0), (0, 900)])
def test_an_image_reporting_0_pixels_blocks_its_item_and_the_dry_run_completes(
    prefect_api: str,
    tmp_path: Path,
    local: Recorder,
    write_job: Callable[..., Path],
    width: int,
    height: int,
) -> None:
    from flows.dry_run import dry_run

    local.routes["/flat.png"] = body(png(width, height))
    write_posts(tmp_path, [blog_row(1, hero_image_url=local.url("/flat.png"), hero_width="",
                                    hero_height=""), blog_row(2)])  # fmt: skip
    state = dry_run(load_job(write_job(extra=ALLOW)), json_path=str(tmp_path / "r.json"),
                    return_state=True)  # fmt: skip
    assert state.is_completed()
    assert (state.result()["total"], state.result()["blocked"]) == (2, 1)
    (item,) = [i for i in json.loads((tmp_path / "r.json").read_text())["items"]
               if i["severity"] == "blocked"]  # fmt: skip
    assert f"reports a size of {width}x{height} pixels" in item["issues"][0]["message"]
    assert "hero_width and hero_height" in item["issues"][0]["fix"]


def test_a_ratio_with_a_zero_side_is_a_config_error() -> None:
    from batchgate.config import ValidationConfig
    from batchgate.validation import build_rules

    config = ValidationConfig.model_validate({"rules": {"hero_aspect_ratio": {"ratio": "16:0"}}})
    with pytest.raises(ConfigError, match="ratio.*above 0"):
        build_rules(config)


# --- control characters in cells -----------------------------------------------------------------


@pytest.mark.prefect
def test_a_nul_in_a_title_blocks_that_item_with_a_postgresql_ledger(
    prefect_api: str, tmp_path: Path, pg_schema_url: str, write_job: Callable[..., Path]
) -> None:
    from flows.dry_run import dry_run

    rows = [blog_row(1), blog_row(2, title="Hello\x00World"), blog_row(3, summary="red\x1b[31m!")]
    write_posts(tmp_path, rows)
    job = load_job(write_job())
    job = job.model_copy(update={"ledger": LedgerConfig.model_validate({"url": pg_schema_url})})

    state = dry_run(job, json_path=str(tmp_path / "r.json"), return_state=True)
    assert state.is_completed()
    summary = state.result()
    assert (summary["total"], summary["ready"], summary["blocked"]) == (3, 1, 2)
    items = {i["id"]: i for i in json.loads((tmp_path / "r.json").read_text())["items"]}
    nul = items["p-002"]["issues"][0]
    assert nul["field"] == "title"
    assert "posts.csv row 2, column 'title'" in nul["message"] and "U+0000 (NUL)" in nul["message"]
    assert "Remove the control character" in nul["fix"]
    assert "U+001B (ESC)" in items["p-003"]["issues"][0]["message"]

    ledger = open_ledger(job.ledger)
    run = ledger.run(summary["run_id"])
    assert run["status"] == "completed" and run["blocked"] == 2
    stored = {row["item_id"]: row for row in ledger.item_rows(summary["run_id"])}
    assert set(stored) == {"p-001", "p-002", "p-003"}
    assert "\x00" not in json.dumps(stored, default=str) and "\x00" not in run["report"]
    assert "Hello\ufffdWorld" in run["report"]


def test_control_characters_in_lists_and_headers(tmp_path: Path) -> None:
    from batchgate.errors import SourceError
    from blocks.file_source import FileSource

    items = build_items([("row 1", {"id": "p1", "tags": ["ok", "b\x9bad"]})], BLOG)
    assert items[0].type_errors[0][:2] == ("tags", "holds the control character U+009B (CSI) at "
                                                   "character 2")  # fmt: skip
    assert items[0].data["tags"] == ["ok", "b\ufffdad"]
    tab = build_items([("row 1", {"id": "p1", "title": "a\tb\r\nc"})], BLOG)[0]
    assert tab.type_errors == []  # tab, CR and LF are text

    path = tmp_path / "bad.csv"
    path.write_text("id,ti\x01tle,slug,category,hero_image_url\np1,a,b,c,d\n", encoding="utf-8")
    with pytest.raises(SourceError, match="control character U\\+0001"):
        FileSource(path=str(path)).read(BLOG)


# --- hostile job files ---------------------------------------------------------------------------

BOMB = """source: {type: file, path: posts.csv}
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""
HOSTILE = {
    "bomb": (BOMB, "more than 20 aliases"),
    "wide": ("source: {type: file, path: posts.csv}\nbase: &big [" + "0, " * 2000 + "0]\n"
             "copies: [" + ", ".join(["*big"] * 15) + "]\n", "more than 20,000 values"),
    "deep": ("source: " + "[" * 2000 + "]" * 2000 + "\n", "nested deeper than 50 levels"),
    "duplicate": ("source: {type: file, path: posts.csv}\nname: a\nname: b\n",
                  "line 3, column 1: duplicate key 'name' (first at line 2)"),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_job_files_are_refused_with_one_clear_line(tmp_path: Path, kind: str) -> None:
    text, expected = HOSTILE[kind]
    path = tmp_path / f"{kind}.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_job(path)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_the_cli_exits_1_on_an_alias_bomb_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(BOMB, encoding="utf-8")
    (tmp_path / "deep.yaml").write_text(HOSTILE["deep"][0], encoding="utf-8")
    for name in ("bomb.yaml", "deep.yaml"):
        result = subprocess.run([BATCHGATE, "dry-run", "--job", name], cwd=tmp_path,
                                capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr and "not valid YAML" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_few_anchors_and_merge_keys_still_load(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "source: {type: file, path: posts.csv}\n"
        "validation: {preset: blog, allowed_categories: &cats [Data, AI]}\n"
        "destination: {type: sql, url: sqlite:///cms.db, categories: *cats}\n"
        "batch: {<<: {items_per_chunk: 7, retries: 2}, items_per_chunk: 9}\n",
        encoding="utf-8",
    )
    job = load_job(path)
    assert job.destination.categories == ["Data", "AI"]  # type: ignore[union-attr]
    assert (job.batch.items_per_chunk, job.batch.retries) == (9, 2)


# --- item text where it is rendered --------------------------------------------------------------

HOSTILE_TITLE = "x\n## ✅ Review passed"
MARKUP = ("[click](javascript:alert(1)) <script>alert(1)</script> <img src=x onerror=alert(1)> "
          "**bold** | cell ![i](https://evil.example/i.png)")  # fmt: skip
ANSI = "\x1b[2J\x1b[1;1H\x1b]8;;https://evil.example\x07Approved\x1b]8;;\x07\x9b31m"


def render(markdown: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(markdown)


def assert_inert(rendered: str) -> None:
    """No markup that came from item text: no script, image, raw HTML or javascript link."""
    for live in ("<script", "<img", 'href="javascript', "<strong>bold"):
        assert live not in rendered, live


def hostile_sample() -> Any:
    from batchgate.sample import SampleEntry, SampleReport

    report = SampleReport("run-1", "webflow:coll", approve_hint=["batchgate approve FLOW"])
    common = {"size": "short", "words": 10, "reading_time": 1, "images": 1}
    report.entries += [
        SampleEntry(HOSTILE_TITLE, "p`|1", status="succeeded", dest_id="d1",
                    link="https://cms.example/blog/p-1", action="created", **common),
        SampleEntry(MARKUP + ANSI, "p-2", status="succeeded", dest_id="d2",
                    link="javascript:alert(1)", action="created", **common),
        SampleEntry("t", "p-3", status="failed", error="HTTP 400 " + MARKUP + "\n## Done", **common),
    ]  # fmt: skip
    return report


def test_the_approval_form_markdown_shows_item_text_as_text() -> None:
    markdown = hostile_sample().as_markdown()  # the pipeline's SampleReview description
    rendered = render(markdown)
    assert rendered.count("<h2>") == 1 and "<h2>✅" not in rendered.split("</h2>", 1)[1]
    assert "Review passed" not in "".join(re.findall(r"<h\d>.*?</h\d>", rendered))
    assert_inert(rendered)
    assert '<a href="https://cms.example/blog/p-1">' in rendered  # the draft link stays a link
    assert "<code>javascript:alert(1)</code>" in rendered
    assert "<code>p`|1</code>" in rendered
    assert "[click](javascript:alert(1))" in html.unescape(rendered)  # shown, as text
    assert "\x1b" not in markdown and "\x9b" not in markdown


def test_the_terminal_gets_no_escape_sequence_and_no_line_from_item_text() -> None:
    from batchgate.dlq import render_entry
    from batchgate.models import Issue, ItemResult
    from batchgate.report import DryRunReport
    from batchgate.report_full import FullReport

    sample = hostile_sample().as_text()
    issue = Issue("title_required", "title", "blocked", "bad " + ANSI, "fix\n✅ Ready: 99")
    dry = DryRunReport("run-2", "job", "posts.csv", [ItemResult("p1", 0, HOSTILE_TITLE + ANSI,
                                                                "row 1", [issue])])  # fmt: skip
    entry = {"item_id": "p1", "item_name": HOSTILE_TITLE + ANSI, "run_id": "run-3",
             "source_url": "row 1", "error_type": "validation", "message": "x\n## Retried: ok" + ANSI,
             "attempts": 1, "history": [{"attempt": 1, "at": "", "error_type": "validation",
                                         "message": ANSI}], "recommendations": ["r"]}  # fmt: skip
    full = FullReport("run-3", "failed", 1, 0, 1, 0, 0, 0, 1.0, 90, "dest", dlq=[
        {**entry, "recommendations": ["r"]}])  # fmt: skip
    dlq = "\n".join(render_entry(1, entry))
    for text in (sample, dry.as_text(), full.as_text(), dlq):
        assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", text)
        lines = [line.strip() for line in text.splitlines()]
        for forged in ("## ✅ Review passed", "✅ Review passed", "✅ Ready: 99", "## Retried: ok"):
            assert forged not in lines
    assert '"x ## ✅ Review passed"' in sample and "Approved" in dry.as_text()


def test_dry_run_and_full_markdown_keep_item_text_inside_its_cell() -> None:
    from batchgate.models import Issue, ItemResult
    from batchgate.report import DryRunReport
    from batchgate.report_full import FullReport

    issue = Issue("slug_format", "slug", "blocked", f"Slug {MARKUP!r} is bad", "a | b\n# c")
    dry = render(DryRunReport("r", "job", "posts.csv",
                              [ItemResult("p`|1", 0, HOSTILE_TITLE, "row 1", [issue])]).as_markdown())  # fmt: skip
    full = render(FullReport("r", "failed", 1, 0, 1, 0, 0, 0, 1.0, 90, "dest", dlq=[
        {"item_id": "p|1", "item_name": "t", "error_type": "validation", "status_code": 400,
         "attempts": 1, "message": MARKUP, "recommendations": ["r"]}]).as_markdown())  # fmt: skip
    for rendered, columns in ((dry, 4), (full, 5)):
        assert_inert(rendered)
        rows = re.findall(r"<tr>(.*?)</tr>", rendered, re.S)
        item_rows = [r for r in rows if "p`|1" in html.unescape(r) or "p|1" in html.unescape(r)]
        assert item_rows and all(r.count("<td") == columns for r in item_rows)
        assert "<h1>c</h1>" not in rendered


def test_csv_export_neutralises_formulas(tmp_path: Path) -> None:
    import csv

    import pandas as pd

    from batchgate.dlq import EXPORT_COLUMNS, export_rows

    entry = {"run_id": "r1", "item_id": "@SUM(A1)", "item_name": '=HYPERLINK("http://x","y")',
             "source_url": "+1 row 3", "error_type": "validation", "status_code": 400,
             "message": "-2+3", "attempts": 1, "history": [], "recommendations": ["fix"],
             "state": "open", "note": "\tcmd|' /C calc'!A0", "created_at": "2025-01-01"}  # fmt: skip
    out = tmp_path / "dlq.csv"
    pd.DataFrame(export_rows([entry], []), columns=EXPORT_COLUMNS).to_csv(out, index=False)
    with out.open(newline="", encoding="utf-8") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["item_name"] == '\'=HYPERLINK("http://x","y")'
    assert row["item_id"] == "'@SUM(A1)" and row["source_url"] == "'+1 row 3"
    assert row["message"] == "'-2+3" and row["note"].startswith("'\t")
    assert row["run_id"] == "r1" and row["status_code"] == "400"  # other cells unchanged


# --- Notion change detection ---------------------------------------------------------------------


def notion_page(link: str, cover: dict[str, Any], image: dict[str, Any]) -> tuple[dict, list]:
    from tests.fakes.notion_server import block, text

    page = {"id": "p1", "properties": {
        "Name": {"type": "title", "title": [text("A post")]},
        "Cover image": {"type": "files", "files": [{"name": "cover", **cover}]},
    }}  # fmt: skip
    blocks = [block("paragraph", [text("see this", link=link)]),
              block("image", [], **image)]  # fmt: skip
    return page, blocks


def hosted(url: str, signature: str, date: str) -> dict[str, Any]:
    query = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Content-Sha256=UNSIGNED-PAYLOAD"
             f"&X-Amz-Credential=ASIA%2F20250101%2Fus-west-2%2Fs3%2Faws4_request&X-Amz-Date={date}"
             f"&X-Amz-Expires=3600&X-Amz-Security-Token=IQo{signature}&X-Amz-Signature={signature}"
             "&X-Amz-SignedHeaders=host&x-id=GetObject")  # fmt: skip
    return {"type": "file", "file": {"url": f"{url}?{query}", "expiry_time": "2030-01-01T00:00Z"}}


def external(url: str) -> dict[str, Any]:
    return {"type": "external", "external": {"url": url}}


def key_of(page: dict, blocks: list) -> str:
    from batchgate.notion import page_row

    return page_row(page, blocks, {"title": "Name", "hero_image_url": "Cover image"})["content_key"]


S3 = "https://prod-files-secure.s3.us-west-2.amazonaws.com/ws/f"


def test_notion_change_detection_strips_only_the_signatures_of_hosted_files() -> None:
    link = "https://example.com/post?v=AAAA"
    first = key_of(*notion_page(link, hosted(f"{S3}/cover.png", "aa11", "20250101T000000Z"),
                                hosted(f"{S3}/body.png", "bb22", "20250101T000000Z")))  # fmt: skip
    # the same page read an hour later: every hosted file signed anew, nothing edited
    resigned = key_of(*notion_page(link, hosted(f"{S3}/cover.png", "cc33", "20250101T010000Z"),
                                   hosted(f"{S3}/body.png", "dd44", "20250101T010000Z")))  # fmt: skip
    assert resigned == first

    def edited(**change: Any) -> str:
        parts = {"link": link, "cover": hosted(f"{S3}/cover.png", "aa11", "20250101T000000Z"),
                 "image": hosted(f"{S3}/body.png", "bb22", "20250101T000000Z"), **change}  # fmt: skip
        return key_of(*notion_page(parts["link"], parts["cover"], parts["image"]))

    assert edited(link="https://example.com/post?v=BBBB") != first  # a link's query edited
    assert edited(cover=external("https://img.example.com/c.png?v=AAAA")) != edited(
        cover=external("https://img.example.com/c.png?v=BBBB")
    )  # an external cover's query is content, not a signature
    assert edited(image=external(f"{S3}/body.png?X-Amz-Signature=aa")) != edited(
        image=external(f"{S3}/body.png?X-Amz-Signature=bb")
    )  # only file objects of type "file" (Notion-hosted) are signed by Notion
    other = hosted(f"{S3}/body.png", "bb22", "20250101T000000Z")
    other["file"]["url"] = other["file"]["url"].replace("x-id=GetObject", "x-id=Other")
    assert edited(image=other) != first  # an unsigned parameter of a hosted URL still counts


def test_a_notion_link_edited_from_v_aaaa_to_v_bbbb_is_seen_through_the_api() -> None:
    from batchgate.config import NOTION_PROPERTIES
    from batchgate.notion import NotionReader, page_row
    from tests.fakes.notion_server import NotionServer, NotionState

    with NotionServer(NotionState(rate_per_s=1000, burst=1000)) as server:
        (page_id,) = server.add_pages(1, hosted=True)
        notion = NotionReader(server.base_url, "notion-test-token", rate_per_s=500)

        def key() -> str:
            return page_row(notion.page(page_id), notion.blocks(page_id),
                            dict(NOTION_PROPERTIES))["content_key"]  # fmt: skip

        before = key()
        assert key() == before  # re-signed URLs alone change nothing
        server.state.edit(page_id, **{"Cover image": {"type": "files", "files": [
            {"name": "c", **external("https://img.example.com/c.png?v=AAAA")}]}})  # fmt: skip
        with_aaaa = key()
        server.state.edit(page_id, **{"Cover image": {"type": "files", "files": [
            {"name": "c", **external("https://img.example.com/c.png?v=BBBB")}]}})  # fmt: skip
        assert with_aaaa != before and key() != with_aaaa


@pytest.mark.prefect
def test_a_sample_flow_publishes_its_report_with_item_text_escaped(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.sample import sample
    from tests.fakes.webflow_server import WebflowServer
    from tests.test_full_flow import webflow_job

    monkeypatch.setenv("WEBFLOW_TOKEN", "test-token")
    write_csv([blog_row(1, title=HOSTILE_TITLE), blog_row(2, title=MARKUP), blog_row(3)])
    with WebflowServer() as server:
        summary = sample(load_job(webflow_job(tmp_path, server)))
    assert summary["succeeded"] == 3
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sample-report"]))
        )
    (artifact,) = [a for a in artifacts if summary["run_id"] in (a.description or "")]
    assert artifact.data == summary["markdown"]  # what the approval form shows
    rendered = render(str(artifact.data))
    assert rendered.count("<h2>") == 1 and "Review passed</h2>" not in rendered
    assert_inert(rendered)
    assert "x ## ✅ Review passed" in html.unescape(rendered)
    assert "\n✅ Review passed" not in summary["report"]
