"""Webflow group writes: up to 100 items per request, one bad item fails alone, nothing twice."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from batchgate.config import load_job
from batchgate.writer import RetryPolicy, RunContext, WorkItem, write_with_retries
from blocks.webflow import WebflowDestination
from tests.conftest import blog_row
from tests.fakes.webflow_server import Faults, WebflowServer


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBFLOW_TOKEN", "test-token")


def job_file(
    tmp_path: Path, server: WebflowServer, per_request: int = 100, batch: str = "", chunk: int = 0
) -> Path:
    """A Webflow job; its chunk fits the destination (one group) unless `chunk` is given."""
    per_chunk = f"items_per_chunk: {chunk}, " if chunk else ""
    path = tmp_path / "wf.yaml"
    path.write_text(
        "source: {type: file, path: posts.csv}\n"
        f"destination: {{type: webflow, base_url: '{server.base_url}', collection_id: "
        f"{server.state.collection_id}, token: '${{WEBFLOW_TOKEN}}', rate_per_minute: 60000, "
        f"items_per_request: {per_request}}}\n"
        "validation: {preset: blog, allowed_categories: [Engineering, Data, Cloud, Security, AI]}\n"
        f"batch: {{{per_chunk}backoff_base_s: 0.05, attempt_timeout_s: 2.0{batch}}}\n"
        f"ledger: {{path: {tmp_path / 'ledger.db'}}}\n"
    )
    return path


def requests(server: WebflowServer, method: str, tail: str = "/items") -> list[tuple]:
    """The requests of this method whose path (without its query) ends in `tail`."""
    return [r for r in server.state.requests
            if r[1] == method and r[2].split("?")[0].endswith(tail)]  # fmt: skip


def item_gets(server: WebflowServer) -> list[tuple]:
    """GETs of one item by id: what group mode never sends."""
    cid = server.state.collection_id
    return [r for r in server.state.requests if r[1] == "GET"
            and r[2].split("?")[0].startswith(f"/v2/collections/{cid}/items/")]  # fmt: skip


def once_each(server: WebflowServer, expected: int) -> None:
    """Every item held once, and created by one create: the fake's request log counts every
    create of a slug it judged, so a second create fails here whether the fake refuses it
    (the default) or suffixes it (BATCHGATE_FAKE_SLUG_CLASH=suffix)."""
    slugs = Counter(server.state.slugs())
    assert len(slugs) == expected and max(slugs.values()) == 1, slugs.most_common(3)
    creates = server.state.creates
    assert max(creates.values(), default=0) == 1, creates.most_common(3)


# --- the full flow -----------------------------------------------------------------------------


@pytest.mark.prefect
def test_250_items_are_created_in_groups_of_100_then_updated_with_no_get_per_item(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full

    rows = [blog_row(n) for n in range(1, 251)]
    write_csv(rows)
    with WebflowServer() as server:
        summary = full(load_job(job_file(tmp_path, server)))
        assert (summary["succeeded"], summary["failed"]) == (250, 0)
        once_each(server, 250)
        assert len(requests(server, "POST")) <= math.ceil(250 / 100)
        assert not item_gets(server)
        server.state.requests.clear()
        write_csv([{**r, "summary": "Changed."} for r in rows])
        summary = full(load_job(job_file(tmp_path, server)))
        assert (summary["succeeded"], summary["failed"]) == (250, 0)
        assert len(requests(server, "PATCH")) <= math.ceil(250 / 100)
        assert not item_gets(server) and not requests(server, "POST")
        lists = requests(server, "GET")
        assert len(lists) <= 2 * math.ceil(250 / 100) + 3  # one shared listing and its updates
        once_each(server, 250)
        assert {i["fieldData"].get("post-summary") for i in server.items.values()} == {"Changed."}


@pytest.mark.prefect
def test_one_item_a_group_refuses_with_400_fails_alone_and_the_rest_is_written(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full

    write_csv([blog_row(n) for n in range(1, 21)])
    with WebflowServer(faults=Faults(bad_request_slugs={"post-number-7"})) as server:
        summary = full(load_job(job_file(tmp_path, server, batch=", success_threshold: low")))
        assert (summary["succeeded"], summary["failed"]) == (19, 1)
        (dead,) = summary["dlq"]
        assert dead["item_id"] == "p-007" and dead["error_type"] == "validation"
        assert "fieldData.name: Field is invalid" in dead["message"] and dead["attempts"] == 1
        assert "items[" not in dead["message"]  # the group's index means nothing to a reader
        once_each(server, 19)
        assert len(requests(server, "POST")) == 2  # the group, then the group without it


@pytest.mark.prefect
def test_a_5xx_retries_the_group_and_writes_every_item_once(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full

    write_csv([blog_row(n) for n in range(1, 31)])
    faults = Faults(error_slugs={"post-number-3"}, error_times=1)
    with WebflowServer(faults=faults) as server:
        summary = full(load_job(job_file(tmp_path, server)))
        assert (summary["succeeded"], summary["failed"]) == (30, 0)
        once_each(server, 30)
        posts = requests(server, "POST")
        assert [r[3] for r in posts] == [500, 202]  # the whole group, twice
        assert len(requests(server, "GET")) <= 3 and not item_gets(server)  # no find per item


@pytest.mark.prefect
def test_an_item_that_makes_its_group_fail_with_5xx_never_takes_the_good_ones_to_the_dlq(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full

    write_csv([blog_row(n) for n in range(1, 41)])
    faults = Faults(error_slugs={"post-number-13"})  # every request carrying it answers 500
    with WebflowServer(faults=faults) as server:
        job = job_file(tmp_path, server, batch=", retries: 1, success_threshold: low")
        summary = full(load_job(job))
        assert (summary["succeeded"], summary["failed"]) == (39, 1)
        (dead,) = summary["dlq"]
        assert dead["item_id"] == "p-013" and dead["error_type"] == "api-error"
        once_each(server, 39)
        posts = requests(server, "POST")
        # 2 attempts at the group of 40, then halves down to the one item: about 2 log2(40)
        assert len(posts) <= 2 + 2 * math.ceil(math.log2(40)), len(posts)


@pytest.mark.prefect
def test_items_per_request_1_writes_one_item_per_request_as_before(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full

    rows = [blog_row(n) for n in range(1, 13)]
    write_csv(rows)
    with WebflowServer() as server:
        summary = full(load_job(job_file(tmp_path, server, per_request=1)))
        assert summary["succeeded"] == 12
        assert len(requests(server, "POST")) == 12 and not requests(server, "PATCH")
        server.state.requests.clear()
        write_csv([{**r, "summary": "Changed."} for r in rows])
        summary = full(load_job(job_file(tmp_path, server, per_request=1)))
        assert summary["succeeded"] == 12
        assert len(item_gets(server)) == 12  # the write-ahead snapshot, one GET per item
        patches = [r for r in server.state.requests if r[1] == "PATCH"]
        assert len(patches) == 12 and not requests(server, "PATCH")  # PATCH .../items/{id}
        once_each(server, 12)


# --- the destination and the writer, faults placed exactly ---------------------------------------


class MemoryLedger:
    def __init__(self) -> None:
        self.attempts: list[tuple] = []

    def record_attempt(self, *args) -> None:  # noqa: ANN002
        self.attempts.append(args)

    def mark_intents(self, key, run_id, entries):  # noqa: ANN001, ANN201
        return {item_id: ahead for item_id, _, ahead in entries}


def works(count: int) -> list[WorkItem]:
    return [WorkItem(n, f"p-{n:03d}", f"Post {n}", None,
                     {"title": f"Post {n}", "slug": f"post-{n}", "category": "Data"}, f"h{n}")
            for n in range(1, count + 1)]  # fmt: skip


def destination(server: WebflowServer, **extra: object) -> WebflowDestination:
    settings = {"rate_per_minute": 60000, "items_per_request": 100, "timeout_s": 0.5,
                "write_timeout_s": 0.5, **extra}  # fmt: skip
    return WebflowDestination(
        base_url=server.base_url,
        collection_id=server.state.collection_id,
        token="test-token",
        **settings,
    )  # type: ignore[arg-type]


@pytest.mark.parametrize("fault", [Faults(drop_rate=1.0), Faults(slow_rate=1.0, slow_seconds=1.5)])
def test_a_group_whose_answer_was_lost_after_the_write_is_reconciled_never_duplicated(
    fault: Faults,
) -> None:
    with WebflowServer(faults=fault) as server:
        # 50 items that were there before: the check lists only what changed since
        server.state.faults = Faults()
        dest = destination(server)
        dest.prepare()
        before = RunContext("old", dest, MemoryLedger(), draft=True)  # type: ignore[arg-type]
        write_with_retries(works(250)[200:], before, RetryPolicy(0, 0.01, 0.0))
        server.state.faults = fault
        server.state.requests.clear()
        ctx = RunContext("run", dest, MemoryLedger(), draft=True)  # type: ignore[arg-type]

        def pause(seconds: float) -> None:  # the server answers again after the first attempt
            server.state.faults = Faults()

        outcomes = write_with_retries(works(80), ctx, RetryPolicy(2, 0.01, 0.0), sleep=pause)
        assert [o.status for o in outcomes] == ["succeeded"] * 80
        assert all(o.action == "created" and o.attempts == 2 for o in outcomes)
        once_each(server, 130)
        assert len(requests(server, "POST")) <= 1  # a dropped answer is not recorded
        assert len(requests(server, "GET")) <= 2 and not item_gets(server)  # a few list requests
        # the retry found the items that had landed and wrote over them, with their own ids
        assert len(requests(server, "PATCH")) == 1
        assert {o.dest_id for o in outcomes} <= set(server.items)


def test_a_429_retries_the_group_with_no_lookup() -> None:
    with WebflowServer(rate_limit=2, window_s=0.3) as server:
        dest = destination(server, rate_per_minute=10**9)
        dest.prepare()  # the window's first request
        server.state.requests.clear()
        ctx = RunContext("run", dest, MemoryLedger(), draft=True)  # type: ignore[arg-type]
        server.state.take_quota()  # the second: the group's write meets a 429
        outcomes = write_with_retries(works(40), ctx, RetryPolicy(3, 0.01, 0.0))
        assert [o.status for o in outcomes] == ["succeeded"] * 40
        assert [r[3] for r in requests(server, "POST")][0] == 429
        assert not requests(server, "GET")  # refused before anything was applied: no look-up
        once_each(server, 40)


def test_an_update_naming_an_id_the_server_no_longer_has_fails_alone() -> None:
    with WebflowServer() as server:
        dest = destination(server)
        ctx = RunContext("run", dest, MemoryLedger(), draft=True)  # type: ignore[arg-type]
        created = write_with_retries(works(10), ctx, RetryPolicy(0, 0.01, 0.0))
        ids = [o.dest_id for o in created]
        gone = ids[3]
        del server.state.items[gone]  # deleted in Webflow after this run read it
        server.state.requests.clear()
        from batchgate.transform import blog_record

        entries = [(blog_record(w.item_id, {**w.data, "title": "New"}), i, None)
                   for w, i in zip(works(10), ids, strict=True)]  # fmt: skip
        results = dest.upsert_many(entries, draft=True)
        failed = [r for r in results if isinstance(r, Exception)]
        assert len(failed) == 1 and results[3] is failed[0]
        assert "no longer in collection" in str(failed[0]) and failed[0].status_code == 404
        assert all(r.action == "updated" for k, r in enumerate(results) if k != 3)  # type: ignore[union-attr]
        assert {server.items[i]["fieldData"]["name"] for i in ids if i != gone} == {"New"}
        assert not item_gets(server)


def test_a_400_in_an_update_group_fails_only_the_item_it_names() -> None:
    with WebflowServer() as server:
        dest = destination(server)
        ctx = RunContext("run", dest, MemoryLedger(), draft=True)  # type: ignore[arg-type]
        created = write_with_retries(works(6), ctx, RetryPolicy(0, 0.01, 0.0))
        server.state.faults = Faults(bad_request_slugs={"post-2", "post-5"})
        from batchgate.transform import blog_record

        entries = [(blog_record(w.item_id, w.data), o.dest_id, None)
                   for w, o in zip(works(6), created, strict=True)]  # fmt: skip
        results = dest.upsert_many(entries, draft=True)
        errors = {k for k, r in enumerate(results) if isinstance(r, Exception)}
        assert errors == {1, 4}
        assert results[1].error_type == "validation"  # type: ignore[union-attr]
        assert len(requests(server, "PATCH")) == 3  # refused for post-2, then post-5, then written


@pytest.mark.prefect
def test_a_rollback_deletes_and_restores_in_groups_of_100(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from flows.full import full
    from flows.rollback import rollback

    rows = [blog_row(n) for n in range(1, 151)]
    write_csv(rows)
    with WebflowServer() as server:
        job = load_job(job_file(tmp_path, server))
        created = full(job)
        write_csv([{**r, "summary": "Changed."} if n < 120 else r for n, r in enumerate(rows)])
        updated = full(load_job(job_file(tmp_path, server)))
        assert (created["succeeded"], updated["succeeded"]) == (150, 150)
        gone = next(iter(server.items))  # deleted outside batchgate: its restore is a conflict
        del server.items[gone]
        server.state.requests.clear()
        undone = rollback(updated["run_id"], ledger=job.ledger)
        outcomes = Counter(o["outcome"] for o in undone["outcomes"])
        assert (outcomes["restored"], outcomes["conflict"]) == (119, 1), outcomes
        patches = requests(server, "PATCH")
        assert len(patches) <= 2 and not item_gets(server)  # two groups, no GET per item
        assert all(i["fieldData"].get("post-summary") != "Changed." for i in server.items.values())
        server.state.requests.clear()
        undone = rollback(created["run_id"], ledger=job.ledger)
        outcomes = Counter(o["outcome"] for o in undone["outcomes"])
        assert (outcomes["deleted"], outcomes["conflict"]) == (149, 1) and not server.items
        deletes = requests(server, "DELETE")
        assert len(deletes) <= 2 and not item_gets(server), deletes


@pytest.mark.prefect
def test_sigkill_while_a_create_group_awaits_its_answer_then_a_rerun_writes_each_item_once(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    import signal
    import time

    from tests.test_guarantees import run, start

    write_csv([blog_row(n) for n in range(1, 61)])
    # the server applies each group, then takes 60 s to answer it: the writer is killed meanwhile
    with WebflowServer(faults=Faults(slow_rate=1.0, slow_seconds=60)) as server:
        job = job_file(tmp_path, server)
        writer = start(prefect_api, tmp_path, "full", "--job", str(job))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not server.items:
            time.sleep(0.05)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        landed = len(server.items)
        assert landed >= 1  # written at the destination, never answered nor recorded
        server.state.faults = Faults()
        server.state.requests.clear()
        code, out = run(prefect_api, tmp_path, "full", "--job", str(job))
        assert code == 0, out[-2000:]
        once_each(server, 60)
        by_slug = [r for r in requests(server, "GET") if "slug=" in r[2]]
        assert not by_slug and not item_gets(server)  # the listing found them, not a GET each
        assert len(requests(server, "GET")) <= 4  # one listing of 60 items, and its refresh


@pytest.mark.prefect
def test_two_grouped_runs_started_together_write_every_item_once(
    prefect_api: str, tmp_path: Path, write_csv: Callable[..., Path]
) -> None:
    from tests.test_guarantees import finish, start

    write_csv([blog_row(n) for n in range(1, 151)])
    with WebflowServer(faults=Faults(latency=(0.3, 0.5))) as server:
        job = job_file(tmp_path, server)
        first, second = (start(prefect_api, tmp_path, "full", "--job", str(job)) for _ in "ab")
        (code_a, out_a), (code_b, out_b) = finish(first), finish(second)
        assert (code_a, code_b) == (0, 0), out_a[-1500:] + out_b[-1500:]
        once_each(server, 150)
        assert len(requests(server, "POST")) == 2  # 100 + 50, by one run; the other wrote nothing
    assert "150 unchanged since an earlier run" in (out_a + out_b)


@pytest.mark.parametrize(
    ("poisoned", "down"), [(set(), True), ({"post-3", "post-70"}, False)]
)  # fmt: skip
def test_a_destination_that_is_down_is_not_split_item_by_item_but_two_poisons_are_found(
    poisoned: set[str], down: bool
) -> None:
    faults = Faults(error_rate=1.0) if down else Faults(error_slugs=poisoned)
    with WebflowServer() as server:
        dest = destination(server, items_per_request=100)
        dest.prepare()
        server.state.faults = faults
        server.state.requests.clear()
        ctx = RunContext("run", dest, MemoryLedger(), draft=True)  # type: ignore[arg-type]
        outcomes = write_with_retries(
            works(100), ctx, RetryPolicy(2, 0.0, 0.0), sleep=lambda s: None
        )
        posts = requests(server, "POST")
        failed = {o.item_id for o in outcomes if o.status == "failed"}
    if down:
        # 3 attempts at the group, its two halves, one item of each: then it stops
        assert len(failed) == 100 and len(posts) <= 7, len(posts)
    else:
        assert failed == {"p-003", "p-070"} and len(server.items) == 98
        assert len(posts) <= 3 + 2 * 2 * 7, len(posts)  # about 2 log2(100) per poisoned item


def test_a_few_updates_in_a_big_collection_read_their_items_by_id_not_the_whole_listing() -> None:
    with WebflowServer() as server:
        first = destination(server)
        first.prepare()
        created = write_with_retries(works(300), RunContext("a", first, MemoryLedger(), True),  # type: ignore[arg-type]
                                     RetryPolicy(0, 0.01, 0.0))  # fmt: skip
        ids = {o.seq: o.dest_id for o in created}
        later = destination(server)  # a later run (a sync of 3 edited posts)
        later.prepare()
        server.state.requests.clear()
        edited = works(3)
        for work in edited:
            work.dest_id, work.data = ids[work.seq], {**work.data, "title": "Edited"}
        outcomes = write_with_retries(edited, RunContext("b", later, MemoryLedger(), True),  # type: ignore[arg-type]
                                      RetryPolicy(0, 0.01, 0.0))  # fmt: skip
        assert [o.action for o in outcomes] == ["updated"] * 3
        lists = [r for r in requests(server, "GET")]
        assert not lists and len(item_gets(server)) == 3  # 3 GETs, not 3 pages of listing
        assert len(requests(server, "PATCH")) == 1
        once_each(server, 300)


@pytest.mark.parametrize("per_request", [1, 100])
def test_a_create_that_lands_after_its_lookup_is_found_again_not_failed_as_a_duplicate(
    per_request: int,
) -> None:
    """The answer to a create is lost, and the server's listings show new items only a moment
    later: the retry's look-up misses the item, its create is refused as a duplicate slug, and
    that refusal means 'look again', not a validation failure (seen in CI under load)."""
    import time

    with WebflowServer(faults=Faults(drop_rate=1.0)) as server:
        dest = destination(server, items_per_request=per_request)
        ctx = RunContext("run", dest, MemoryLedger(), draft=True)  # type: ignore[arg-type]

        def pause(seconds: float) -> None:
            if server.state.faults.drop_rate:  # after the lost answer: listings lag 1 s
                server.state.faults = Faults(listing_lag_s=1.0)
            else:  # after the refused duplicate: the listing has caught up
                time.sleep(1.2)

        outcomes = write_with_retries(works(3), ctx, RetryPolicy(3, 0.01, 0.0), sleep=pause)
        assert [o.status for o in outcomes] == ["succeeded"] * 3, [o.message for o in outcomes]
        assert all(o.action == "created" for o in outcomes)
        slugs = Counter(server.state.slugs())  # each held once; a second create was sent (below)
        assert len(slugs) == 3 and max(slugs.values()) == 1, slugs.most_common(3)
        refused = [r for r in requests(server, "POST") if r[3] == 400]
        assert refused or server.state.slug_clash == "suffix"  # the duplicate was met
        assert max(server.state.creates.values()) == 2  # ... and looked up again
