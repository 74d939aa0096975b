"""Reference and MultiReference fields (issue 20, deliverable 4): a category and tags by name or
slug become item ids of the referenced collections, read once; an unknown name is blocked in the
dry-run with its fix, or created first under destination.create_missing_references."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from batchgate.config import load_job
from batchgate.errors import PermanentError
from batchgate.transform import blog_record
from blocks.webflow import WebflowDestination
from tests.conftest import blog_row
from tests.fakes.webflow_refs import blog_template
from tests.fakes.webflow_server import WebflowServer


def template_server(**kwargs: Any) -> WebflowServer:
    fields, collections = blog_template()
    return WebflowServer(fields=fields, ref_collections=collections, **kwargs)


def webflow(server: WebflowServer, **kwargs: Any) -> WebflowDestination:
    field_map = {"title": "name", "slug": "slug", "body_html": "post-body", "category": "category",
                 "tags": "tags", "featured": "featured"}  # fmt: skip
    return WebflowDestination(base_url=server.base_url, collection_id=server.state.collection_id,
                              token=SecretStr("test-token"), rate_per_minute=60_000,
                              **{"field_map": field_map, **kwargs})  # fmt: skip


def record(n: int, **overrides: Any) -> dict[str, Any]:
    row = blog_row(n)
    row.update(featured=False, hero_width=1600, hero_height=900)
    out = blog_record(row["id"], row)
    out.update({"tags": [], **overrides})
    return out


def collections(server: WebflowServer) -> tuple[Any, Any]:
    cats, tags = server.state.ref_collections.values()
    return cats, tags


def lists_of(server: WebflowServer, collection_id: str) -> int:
    return len([r for r in server.state.requests
                if r[1] == "GET" and r[2].split("?")[0] == f"/v2/collections/{collection_id}/items"])  # fmt: skip


def test_a_reference_category_and_tags_by_name_or_slug_become_item_ids() -> None:
    with template_server() as server:
        cats, tags = collections(server)
        dest = webflow(server)
        entries = [(record(1, category="Data", tags=["python", "SQL"]), None, None),
                   (record(2, category="cloud", tags="notion, webflow"), None, None)]  # fmt: skip
        results = dest.upsert_many(entries, draft=True)
        assert not [r for r in results if isinstance(r, Exception)]
        by_slug = {i["fieldData"]["slug"]: i["fieldData"] for i in server.items.values()}
        first, second = by_slug[record(1)["slug"]], by_slug[record(2)["slug"]]
        assert first["category"] == cats.by_name("Data")["id"]  # by name
        assert second["category"] == cats.by_name("Cloud")["id"]  # by slug
        assert first["tags"] == [tags.by_name("python")["id"], tags.by_name("sql")["id"]]
        assert second["tags"] == [tags.by_name("notion")["id"], tags.by_name("webflow")["id"]]
        dest.upsert(record(3, category="AI"), None, draft=True)
        assert lists_of(server, cats.id) == 1 and lists_of(server, tags.id) == 1  # read once


def test_the_fake_refuses_a_name_where_a_reference_needs_an_item_id() -> None:
    with template_server() as server:
        dest = webflow(server)
        body = {"isDraft": True, "fieldData": {"name": "x", "slug": "x", "category": "Data"}}
        with pytest.raises(PermanentError, match="Referenced item not found"):
            dest._request("POST", f"/collections/{server.state.collection_id}/items", json=body)


def test_an_unknown_name_is_blocked_in_the_dry_run_with_the_fix() -> None:
    with template_server() as server:
        cats, _ = collections(server)
        dest = webflow(server)
        check = dest.check()
        assert check.categories is None  # not Option names: the check below says it per name
        assert check.record_problems is not None
        ((field, message, fix),) = check.record_problems(record(1, category="DevOps",
                                                                tags=["python"]))  # fmt: skip
        assert field == "category" and "'DevOps' not found in Categories collection" in message
        assert "Create 'DevOps' in Categories collection" in fix
        assert "create_missing_references: true" in fix and "Engineering" in fix
        tag_problems = check.record_problems(record(2, category="Data", tags=["rust", "python"]))
        assert [(f, "'rust'" in m) for f, m, _ in tag_problems] == [("tags", True)]
        with pytest.raises(PermanentError, match="'DevOps' is not an item of Categories"):
            dest.upsert(record(1, category="DevOps"), None, draft=True)
        assert not server.items and cats.by_name("DevOps") is None


def test_create_missing_references_creates_them_once_before_the_items_that_need_them() -> None:
    with template_server() as server:
        cats, tags = collections(server)
        dest = webflow(server, create_missing_references=True)
        check = dest.check()
        assert check.record_problems is not None
        assert check.record_problems(record(1, category="DevOps", tags=["rust"])) == []
        assert any("'DevOps' will be created in Categories collection" in n for n in check.notes)
        assert cats.by_name("DevOps") is None  # the dry-run creates nothing
        entries = [(record(n, category="DevOps", tags=["rust", "python"]), None, None)
                   for n in (1, 2)]  # fmt: skip
        results = dest.upsert_many(entries, draft=True)
        assert not [r for r in results if isinstance(r, Exception)]
        devops, rust = cats.by_name("DevOps"), tags.by_name("rust")
        assert devops is not None and rust is not None
        assert {i["fieldData"]["category"] for i in server.items.values()} == {devops["id"]}
        creates = [r for r in server.state.requests
                   if r[1] == "POST" and r[2].startswith(f"/v2/collections/{cats.id}/items")]  # fmt: skip
        assert len(creates) == 1
        assert sorted(dest.references_created) == [
            f"'DevOps' in Categories collection ({cats.id})",
            f"'rust' in Tags collection ({tags.id})",
        ]


def refs_job(tmp_path: Path, server: WebflowServer, extra: str = "") -> Path:
    path = tmp_path / "wf.yaml"
    path.write_text(
        "source: {type: file, path: posts.csv}\n"
        "destination:\n"
        "  type: webflow\n"
        f"  base_url: {server.base_url}\n"
        f"  collection_id: {server.state.collection_id}\n"
        "  token: test-token\n"
        "  rate_per_minute: 60000\n"
        "  items_per_request: 10\n"
        f"{extra}"
        "validation: {preset: blog}\n"
        "batch: {backoff_base_s: 0.05, attempt_timeout_s: 2.0, pause_seconds: 0.1}\n"
        f"ledger: {{path: {tmp_path / 'ledger.db'}}}\n"
    )
    return path


@pytest.mark.prefect
def test_a_job_with_an_unknown_category_is_blocked_then_created_with_the_setting(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    """The dry-run blocks the post whose category the Categories collection lacks, naming the fix;
    with create_missing_references the dry-run says it will be created and creates nothing, the
    full run creates it once and the report says so."""
    from flows.dry_run import dry_run
    from flows.full import full

    write_csv([blog_row(1, category="Data"), blog_row(2, category="DevOps"),
               blog_row(3, category="DevOps")])  # fmt: skip
    with template_server() as server:
        cats, _ = collections(server)
        report = dry_run(load_job(refs_job(tmp_path, server)))
        assert (report["total"], report["blocked"]) == (3, 2)
        assert "'DevOps' not found in Categories collection" in report["report"]
        assert "create_missing_references: true" in report["report"]
        job = load_job(refs_job(tmp_path, server, "  create_missing_references: true\n"))
        report = dry_run(job)
        assert (report["total"], report["blocked"]) == (3, 0)
        assert "'DevOps' will be created in Categories collection" in report["report"]
        assert cats.by_name("DevOps") is None
        done = full(job)
        assert (done["status"], done["succeeded"]) == ("complete", 3)
        devops = cats.by_name("DevOps")
        assert devops is not None
        assert sorted(i["fieldData"]["category"] for i in server.items.values()) == sorted(
            [cats.by_name("Data")["id"], devops["id"], devops["id"]]
        )
        assert any("'DevOps' in Categories collection" in n for n in done["notes"])
        assert "Created in referenced collections" in done["report"]


def test_option_categories_still_map_to_option_ids() -> None:
    with WebflowServer() as server:
        dest = webflow(server, field_map={"title": "name", "slug": "slug", "category": "category"})
        result = dest.upsert(record(1, category="AI"), None, draft=True)
        assert server.items[result.dest_id]["fieldData"]["category"] == "opt-ai"
        assert dest.check().categories == ["Engineering", "Data", "Cloud", "Security", "AI"]


def test_a_name_another_process_created_meanwhile_is_found_not_failed() -> None:
    """Two shards meet the same missing category: the second create is refused as a duplicate
    slug, and the item takes the item the first one made."""
    with template_server() as server:
        cats, _ = collections(server)
        dest = webflow(server, create_missing_references=True)
        dest.check()  # the listing is read: no DevOps yet
        dest._references().index(cats.id)
        cats.add("DevOps", "devops")  # another shard's create
        result = dest.upsert(record(1, category="DevOps"), None, draft=True)
        assert server.items[result.dest_id]["fieldData"]["category"] == cats.by_name("DevOps")["id"]
        assert len([i for i in cats.items.values() if i["fieldData"]["slug"] == "devops"]) == 1
