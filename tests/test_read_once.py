"""Read once (issue 12, point 3): a pipeline reads each Notion page's content once. Its sample and
full phases write the plan the dry-run froze; a page is read again before its write only when its
signed file URLs are about to expire; a sync reads only the pages the query reports as edited."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from batchgate.config import LedgerConfig, load_job
from blocks.ledger import open_ledger
from tests.fakes.notion_server import NotionServer, NotionState, text
from tests.fakes.webflow_server import WebflowServer
from tests.test_notion_migration import migration_job, slug_of
from tests.test_sample_pipeline import answer_when_paused

pytestmark = pytest.mark.prefect
# pages with hosted covers (valid 1 h), hosted covers expiring in 5 minutes, external covers
HOSTED, EXPIRING, EXTERNAL = 60, 6, 14
PAGES = HOSTED + EXPIRING + EXTERNAL
MAX_RATIO = 1.15  # the figure: pipeline requests / one dry-run read
ROUTES = {"children": r"/v1/blocks/([^/?]+)/children", "page": r"/v1/pages/([^/?]+)"}


@pytest.fixture(autouse=True)
def _tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTION_TOKEN", "notion-test-token")
    monkeypatch.setenv("WEBFLOW_TOKEN", "test-token")


class Reads:
    """The Notion API requests the fake recorded, attributed to the page whose content they read."""

    def __init__(self, notion: NotionServer) -> None:
        self.notion = notion
        self.owner: dict[str, str] = {}  # block id (a page's too) -> page id
        for page_id in notion.state.pages:
            self._own(page_id, page_id)

    def _own(self, block_id: str, page_id: str) -> None:
        self.owner[block_id] = page_id
        for child in self.notion.state.children.get(block_id, []):
            self._own(child["id"], page_id)

    def mark(self) -> int:
        return len(self.notion.state.requests)

    def since(self, mark: int) -> list[tuple[str, str]]:
        """(method, path) of every Notion API request after `mark` (the image host's left out)."""
        return [(m, p) for _, m, p, _ in self.notion.state.requests[mark:] if p.startswith("/v1/")]

    def per_page(self, requests: list[tuple[str, str]], route: str) -> Counter[str]:
        """How many `route` requests ("children": block children, "page": a page) read each page."""
        pattern = ROUTES[route]
        counts: Counter[str] = Counter()
        for _, path in requests:
            found = re.match(pattern, path)
            if found:
                counts[self.owner[str(uuid.UUID(found.group(1)))]] += 1
        return counts

    def first_reads(self, requests: list[tuple[str, str]]) -> Counter[str]:
        """Per page: how many times its top-level children were read from the start."""
        return Counter(
            self.owner[str(uuid.UUID(m.group(1)))]
            for _, path in requests
            if (m := re.match(r"/v1/blocks/([^/?]+)/children(\?(?!.*start_cursor)|$)", path))
            and str(uuid.UUID(m.group(1))) in self.notion.state.pages
        )


def workspace(notion: NotionServer) -> tuple[list[str], list[str]]:
    """The pages, and those whose hosted files expire in 5 minutes (inside the 10-minute margin)."""
    pages = notion.add_pages(HOSTED, hosted=True)
    expiring = notion.add_pages(EXPIRING, start=HOSTED + 1, hosted=True, seed=5,
                                expires_in=timedelta(minutes=5))  # fmt: skip
    pages += expiring + notion.add_pages(EXTERNAL, start=HOSTED + EXPIRING + 1, seed=7)
    return pages, expiring


def test_a_pipeline_reads_each_page_once_and_a_sync_only_the_edited_ones(
    tmp_path: Path, prefect_api: str
) -> None:
    from flows.dry_run import dry_run
    from flows.pipeline import pipeline
    from flows.sync import sync

    with NotionServer(NotionState(rate_per_s=400, burst=40)) as notion, WebflowServer() as webflow:
        pages, expiring = workspace(notion)
        job = load_job(migration_job(tmp_path, notion, webflow))
        reads = Reads(notion)

        # one dry-run read of the workspace, alone, on its own ledger
        mark = reads.mark()
        alone = job.model_copy(update={"ledger": LedgerConfig(path=str(tmp_path / "alone.db"))})
        assert dry_run(alone)["total"] == PAGES
        one_read = reads.since(mark)
        assert reads.first_reads(one_read) == Counter(pages)  # every page's body read once

        # the pipeline, approved through the API, on a fresh ledger
        ledger = open_ledger(job.ledger)
        reviewer = answer_when_paused(ledger, approve=True, notes="read once")
        mark = reads.mark()
        state = pipeline(job, approval_poll_s=1, return_state=True)
        reviewer.join(60)
        assert not reviewer.is_alive(), "the reviewer never finished"
        assert state.is_completed(), state.message
        piped = reads.since(mark)

        (run,) = [r for r in ledger.runs() if r["mode"] == "pipeline"]
        assert run["outcome"] == "complete"
        children = {r["mode"]: r for r in ledger.runs_of(run["run_id"])}
        assert set(children) == {"dry-run", "sample", "full"}
        assert children["sample"]["succeeded"] == 3 and children["full"]["failed"] == 0
        # every page written once: one Webflow item per page, none created twice
        items = list(webflow.items.values())
        slugs = Counter(i["fieldData"]["slug"] for i in items)
        assert len(items) == PAGES and set(slugs.values()) == {1}
        assert slugs.keys() == {slug_of(notion, p) for p in pages}

        ratio = len(piped) / len(one_read)
        print(f"\nNotion requests: one dry-run read {len(one_read)}, the pipeline {len(piped)} "
              f"({ratio:.3f}x)")  # fmt: skip
        assert ratio <= MAX_RATIO, (len(piped), len(one_read))
        # the content of every page was read from the start once, by the dry-run; only the pages
        # whose file URLs expire within 10 minutes were read again (page and body) before each
        # write: the full run's, and the sample's for those it drafted
        sampled = {r["item_id"] for r in ledger.written_items(children["sample"]["run_id"])}
        rereads = Counter(expiring) + Counter(set(expiring) & sampled)
        first = reads.first_reads(piped)
        assert first == Counter(pages) + rereads, first
        assert reads.per_page(piped, "page") == rereads
        per_page = reads.per_page(one_read, "children")
        again = reads.per_page(piped, "children")
        assert again == per_page + Counter({p: per_page[p] * n for p, n in rereads.items()})
        # nothing else: the pipeline's requests are one read plus those re-reads (page + body)
        assert len(piped) == len(one_read) + sum((per_page[p] + 1) * n for p, n in rereads.items())

        # a sync after the pipeline reads only what was edited since the pipeline's dry-run
        # started (nothing here): the database query, no page; after 3 edits, the next reads
        # only the pages the query reports as edited
        mark = reads.mark()
        first_sync = sync(job)
        assert first_sync["outcome"] == "complete" and first_sync["total"] == 0, first_sync
        assert not reads.first_reads(reads.since(mark)) and not reads.per_page(
            reads.since(mark), "page"
        )
        edited = pages[10:13]
        for page_id in edited:
            notion.state.edit(page_id, Name={"type": "title", "title": [text("Edited title")]})
        mark = reads.mark()
        second = sync(job)
        synced = reads.since(mark)
        assert second["outcome"] == "complete" and second["total"] == 3
        assert set(reads.per_page(synced, "children")) == set(edited)
        assert reads.first_reads(synced) == Counter(edited)
        assert not reads.per_page(synced, "page")  # 1 h URLs: no re-read before the write
        others = [p for m, p in synced if "/children" not in p]
        assert len(others) == 3 and all(p.startswith(("/v1/databases/", "/v1/data_sources/"))
                                        for p in others)  # fmt: skip
        renamed = [i for i in webflow.items.values() if i["fieldData"]["name"] == "Edited title"]
        assert len(renamed) == 3 and len(webflow.items) == PAGES
