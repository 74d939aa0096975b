"""Webflow's publish model, as documented since 2025-07-07, and what batchgate does with it.

The fake keeps a live copy of each item apart from the staged one (tests/fakes/webflow_server.py
cites the sources); these tests check the fake against those documents, then the destination:
drafts never queue, a never-published collection stops a publishing job before any write, a
sample over a live item leaves the live site alone until approval, a rollback of a published
run leaves the live site as it was, a clashing slug is a collision whether Webflow refuses or
suffixes it, and the pacer follows X-RateLimit-Limit per token.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from batchgate.config import load_job
from batchgate.errors import AlreadyExists, FatalError
from blocks.webflow import WebflowDestination
from tests.conftest import blog_row
from tests.fakes.webflow_server import WebflowServer
from tests.test_full_flow import webflow_job

CLASHES = ["refuse", "suffix"]  # the open question: does a multi-item create refuse or suffix?


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBFLOW_TOKEN", "test-token")


def call(server: WebflowServer, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request to the fake as any client would send it."""
    headers = {"Authorization": f"Bearer {server.state.token}"}
    return httpx.request(method, server.base_url + path, headers=headers, **kwargs)


def items_path(server: WebflowServer) -> str:
    return f"/collections/{server.state.collection_id}/items"


def live_post(server: WebflowServer, slug: str, name: str) -> str:
    """An item already on the live site before batchgate runs (created live)."""
    answer = call(server, "POST", items_path(server) + "/live",
                  json={"isDraft": False, "fieldData": {"name": name, "slug": slug}})  # fmt: skip
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def destination(server: WebflowServer, **extra: Any) -> WebflowDestination:
    settings: dict[str, Any] = {"rate_per_minute": 60000, "items_per_request": 100, **extra}
    return WebflowDestination(base_url=server.base_url, collection_id=server.state.collection_id,
                              token=SecretStr(server.state.token), **settings)  # fmt: skip


# --- the fake follows the documents ----------------------------------------------------------------


def test_the_live_copy_changes_only_by_publish_and_goes_only_by_unpublish() -> None:
    with WebflowServer() as server:
        item = live_post(server, "hello", "Hello")
        path = f"{items_path(server)}/{item}"
        # isDraft true on a live item: still live, the change held as a draft
        call(server, "PATCH", path, json={"isDraft": True, "fieldData": {"name": "Draft edit"}})
        assert server.state.live_site() == {"hello": {"name": "Hello", "slug": "hello"}}
        staged = call(server, "GET", path).json()
        assert staged["isDraft"] is True and staged["lastPublished"] is not None
        # isDraft false with unpublished changes: queued, live at the next site publish
        call(server, "PATCH", path, json={"isDraft": False, "fieldData": {"name": "Queued"}})
        assert server.state.live_site()["hello"]["name"] == "Hello"
        assert (
            call(server, "POST", f"/sites/{server.state.site_id}/publish", json={}).status_code
            == 202
        )
        assert server.state.live_site()["hello"]["name"] == "Queued"
        # a staged delete leaves the live copy; only DELETE .../items/live takes it down
        other = live_post(server, "other", "Other")
        call(server, "DELETE", f"{items_path(server)}/{other}")
        assert "other" in server.state.live_site()
        call(server, "DELETE", items_path(server) + "/live", json={"items": [{"id": item}]})
        assert "hello" not in server.state.live_site() and server.items[item]["isDraft"] is True


def test_a_site_publish_is_allowed_once_a_minute() -> None:
    with WebflowServer() as server:
        first = call(server, "POST", f"/sites/{server.state.site_id}/publish", json={})
        again = call(server, "POST", f"/sites/{server.state.site_id}/publish", json={})
    assert first.status_code == 202
    assert again.status_code == 429 and int(again.headers["Retry-After"]) > 50


def test_items_of_a_never_published_collection_cannot_be_published_until_a_site_publish() -> None:
    with WebflowServer(collection_published=False) as server:
        created = call(server, "POST", items_path(server),
                       json={"isDraft": False, "fieldData": {"name": "A", "slug": "a"}}).json()  # fmt: skip
        refused = call(server, "POST", items_path(server) + "/publish",
                       json={"itemIds": [created["id"]]})  # fmt: skip
        assert refused.status_code == 409 and not server.state.live_site()
        call(server, "POST", f"/sites/{server.state.site_id}/publish", json={})
        assert "a" in server.state.live_site()  # queued (isDraft false): the site publish took it


def test_rich_text_loses_code_blocks() -> None:
    body = (
        '<p>Run <code>ls</code>:</p><pre><code class="language-sh">ls -la\n</code></pre><p>done</p>'
    )
    with WebflowServer() as server:
        created = call(server, "POST", items_path(server), json={
            "isDraft": True, "fieldData": {"name": "A", "slug": "a", "post-body": body}}).json()  # fmt: skip
    assert created["fieldData"]["post-body"] == "<p>Run <code>ls</code>:</p><pre></pre><p>done</p>"


@pytest.mark.parametrize("as_strings", [False, True])
def test_a_duplicate_slug_is_named_by_param_slug(as_strings: bool) -> None:
    with WebflowServer(string_details=as_strings) as server:
        call(server, "POST", items_path(server), json={"fieldData": {"name": "A", "slug": "a"}})
        refused = call(server, "POST", items_path(server), json={
            "items": [{"fieldData": {"name": "B", "slug": "b"}}, {"fieldData": {"name": "A", "slug": "a"}}]})  # fmt: skip
    assert refused.status_code == 400 and refused.json()["code"] == "validation_error"
    detail = refused.json()["details"][0]
    if as_strings:
        assert detail == "slug: Unique value is already in database: 'a'"
    else:
        assert detail == {
            "param": "slug",
            "description": "Unique value is already in database: 'a'",
        }


def test_the_suffixing_fake_appends_a_random_suffix_to_a_clashing_slug_in_a_multi_item_create() -> (
    None
):
    with WebflowServer(slug_clash="suffix") as server:
        call(server, "POST", items_path(server), json={"fieldData": {"name": "A", "slug": "a"}})
        answer = call(
            server,
            "POST",
            items_path(server),
            json={"items": [{"fieldData": {"name": "A", "slug": "a"}}]},
        )
        single = call(
            server, "POST", items_path(server), json={"fieldData": {"name": "A", "slug": "a"}}
        )
        assert answer.status_code == 202 and single.status_code == 400  # one item: refused
        (item,) = answer.json()["items"]
        assert item["fieldData"]["slug"].startswith("a-") and len(item["fieldData"]["slug"]) > 2
        assert server.state.creates == Counter({"a": 3})  # every create of 'a' the fake judged


@pytest.mark.parametrize("plan, limit", [("cms", 120), ("basic", 60)])
def test_the_rate_limit_header_says_the_plan(plan: str, limit: int) -> None:
    with WebflowServer(plan=plan) as server:
        answer = call(server, "GET", f"/collections/{server.state.collection_id}")
    assert answer.headers["X-RateLimit-Limit"] == str(limit)


# --- the destination ----------------------------------------------------------------------------------


def test_a_draft_write_over_a_live_item_sends_is_draft_true_and_the_live_copy_waits_for_approval() -> (
    None
):
    with WebflowServer() as server:
        live_id = live_post(server, "post-1", "Live title")
        dest = destination(server)
        current = dest.snapshot_many([live_id])[live_id]
        (result,) = dest.upsert_many(
            [({"title": "Sample title", "slug": "post-1"}, live_id, current)], draft=True
        )
        assert result.action == "updated"  # type: ignore[union-attr]
        assert server.items[live_id]["isDraft"] is True  # held as a draft: never queued
        call(
            server, "POST", f"/sites/{server.state.site_id}/publish", json={}
        )  # someone publishes the site
        assert server.state.live_site()["post-1"]["name"] == "Live title"
        assert dest.publish([live_id]) == {}  # approval: the explicit publish
        assert server.state.live_site()["post-1"]["name"] == "Sample title"
        dest.close()


def test_a_publishing_job_stops_before_any_write_on_a_never_published_collection() -> None:
    with WebflowServer(collection_published=False) as server:
        with pytest.raises(FatalError, match="never been published.*Fix: publish the site"):
            destination(server, publish_live=True).check()
        assert destination(server).check() is not None  # drafts need no live collection
        writes = [r for r in server.state.requests if r[1] != "GET"]
    assert writes == []


@pytest.mark.parametrize("as_strings", [False, True])
@pytest.mark.parametrize("clash", CLASHES)
def test_a_clashing_slug_in_a_group_fails_that_item_alone_whatever_webflow_does(
    clash: str, as_strings: bool
) -> None:
    with WebflowServer(slug_clash=clash, string_details=as_strings) as server:
        call(
            server,
            "POST",
            items_path(server),
            json={"fieldData": {"name": "Theirs", "slug": "post-2"}},
        )
        dest = destination(server)
        records = [({"title": f"Post {n}", "slug": f"post-{n}"}, None, None) for n in (1, 2, 3)]
        results = dest.upsert_many(records, draft=True)  # type: ignore[arg-type]
        held = Counter(server.state.slugs())
        posts = [r for r in server.state.requests if r[1] == "POST"]
        dest.close()
    assert [type(r).__name__ for r in results] == ["WriteResult", "AlreadyExists", "WriteResult"]
    assert isinstance(results[1], AlreadyExists) and "post-2" in results[1].message
    assert held == Counter({"post-1": 1, "post-2": 1, "post-3": 1})  # a suffixed stray is deleted
    assert len(posts) <= 3  # the clash is named by its slug: no halving of the group


def test_a_refused_image_fails_its_item() -> None:
    """skipInvalidFiles=false is sent; an answer without the image it was sent fails the item."""
    with WebflowServer() as server:
        dest = destination(server, items_per_request=1, field_map={"title": "name", "slug": "slug",
                                                                  "hero_image_url": "main-image"})  # fmt: skip
        server.state.faults.skip_image_slugs = {"post-2"}
        records = [({"title": f"Post {n}", "slug": f"post-{n}", "hero_image_url": f"https://img/{n}.jpg"},
                    None, None) for n in (1, 2)]  # fmt: skip
        results = dest.upsert_many(records, draft=True)  # type: ignore[arg-type]
        sent = [r[2] for r in server.state.requests if r[1] == "POST"]
        dest.close()
    assert all("skipInvalidFiles=false" in path for path in sent)
    assert type(results[0]).__name__ == "WriteResult"
    assert type(results[1]).__name__ == "PermanentError" and "main-image" in results[1].message  # type: ignore[union-attr]


def test_the_pacer_is_the_tokens_and_its_rate_the_servers() -> None:
    with WebflowServer(plan="cms") as server:
        one = WebflowDestination(
            base_url=server.base_url, collection_id="a" * 24, token=SecretStr("test-token")
        )
        other = WebflowDestination(base_url=server.base_url, collection_id=server.state.collection_id,
                                   token=SecretStr("test-token"))  # fmt: skip
        assert one.pacer is other.pacer and "test-token" not in one.pacer_key
        other.check()  # the first answer states the plan's limit
        assert other.rate_per_minute_in_use == 120 and one.rate_per_minute_in_use == 120
        assert abs(other.pacer.base_interval - 60 / (120 * 0.99)) < 1e-6
        explicit = destination(server, rate_per_minute=30)
        explicit.check()
        assert explicit.rate_per_minute_in_use == 30  # the job's own limit is kept
        for dest in (one, other, explicit):
            dest.close()


# --- runs against the live site --------------------------------------------------------------------


@pytest.mark.prefect
@pytest.mark.parametrize("clash", CLASHES)
def test_rollback_of_a_published_run_leaves_the_live_site_as_it_was(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path], clash: str
) -> None:
    from flows.full import full
    from flows.rollback import rollback

    with WebflowServer(slug_clash=clash) as server:
        live_post(server, "elsewhere", "Not batchgate's")
        write_csv([blog_row(n) for n in (1, 2)])
        job = load_job(webflow_job(tmp_path, server, publish=True, per_request=100))
        assert full(job)["succeeded"] == 2  # an earlier run: posts 1 and 2 live
        before = server.state.live_site()
        write_csv([blog_row(1, title="Post one, revised"), blog_row(2), blog_row(3), blog_row(4)])
        summary = full(job)  # updates the live post 1, creates and publishes 3 and 4
        assert summary["succeeded"] == 4 and summary["unchanged"] == 1  # post 2 unchanged
        assert len(server.state.live_site()) == 5
        assert server.state.live_site()["post-number-1"]["name"] == "Post one, revised"
        undone = rollback(summary["run_id"], ledger=job.ledger)
        after = server.state.live_site()
        held = sorted(server.state.slugs())
    assert after == before  # post 1's previous live version is back, 3 and 4 are off the site
    assert held == ["elsewhere", "post-number-1", "post-number-2"]
    assert (
        "Live site: 1 of these 3 items was live before the run, 3 when the rollback started, 1 now"
        in undone["report"]
    ), undone["report"]


@pytest.mark.prefect
def test_a_sample_over_a_live_item_leaves_it_live_unchanged_until_approval_and_after_a_rollback(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full
    from flows.rollback import rollback
    from flows.sample import sample

    with WebflowServer() as server:
        write_csv([blog_row(n) for n in range(1, 5)])
        job = load_job(webflow_job(tmp_path, server, publish=True))
        assert full(job)["succeeded"] == 4  # all four live
        write_csv([blog_row(n, title=f"Post {n}, revised") for n in range(1, 5)])
        sample(job, sample_ids=["p-002"])
        staged = {i["fieldData"]["slug"]: i for i in server.items.values()}["post-number-2"]
        assert staged["fieldData"]["name"] == "Post 2, revised" and staged["isDraft"] is True
        call(server, "POST", f"/sites/{server.state.site_id}/publish", json={})  # anyone's publish
        assert server.state.live_site()["post-number-2"]["name"] == "Post number 2"
        before = server.state.live_site()
        summary = full(job)  # approved: the full run publishes
        live = server.state.live_site()
        creates = server.state.creates
        # the full run rolled back: the live site as before it, post 2's sample a draft again
        undone = rollback(summary["run_id"], ledger=job.ledger)
        after = server.state.live_site()
        staged = {i["fieldData"]["slug"]: i for i in server.items.values()}["post-number-2"]
    assert summary["succeeded"] == 4
    assert {s: f["name"] for s, f in live.items()} == {
        f"post-number-{n}": f"Post {n}, revised" for n in range(1, 5)
    }
    assert set(creates.values()) == {1}  # each item created once, then updated in place
    assert after == before, undone["report"]
    assert staged["fieldData"]["name"] == "Post 2, revised" and staged["isDraft"] is True
    assert "Live site: 4 of these 4 items were live before the run" in undone["report"]
