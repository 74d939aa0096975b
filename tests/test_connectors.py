"""Connectors of the user's own: the bases' defaults follow the declared capabilities, a Prefect
Block may derive from a base, every way a connector can be wrong is one ConfigError line, an
installed entry point is found by its name, a secret option is never recorded, and a saved
block of such a connector works with `type: block`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.blocks.core import Block
from pydantic import BaseModel, Field, SecretStr

from batchgate import registry
from batchgate.config import PluginConfig, load_job, parse_job
from batchgate.connectors import (
    NO_SNAPSHOT,
    UNKNOWN_VERSION,
    Capabilities,
    DestinationBase,
    SourceBase,
    capabilities_of,
    describe,
    missing_core,
)
from batchgate.destinations import WriteResult
from batchgate.errors import ConfigError, PermanentError, WriteError
from batchgate.records import RecordSpec
from batchgate.rollback import _refused, job_of_run
from batchgate.secrets import secret_values
from batchgate.testing import DestinationConformance, SourceConformance
from blocks.webflow import WebflowDestination
from tests.conftest import ROOT

HERE = "tests.test_connectors"


class Memory(DestinationBase):
    """A destination in memory: the required core only."""

    capabilities = Capabilities(group_size=10, idempotent_upsert=True)

    def __init__(self, name: str = "mem", token: str | None = None) -> None:
        self.name, self.token = name, token
        self.items: dict[str, dict[str, Any]] = {}

    @property
    def key(self) -> str:
        return f"memory:{self.name}"

    def upsert_many(self, entries: list[Any], draft: bool) -> list[WriteResult | WriteError]:
        out: list[WriteResult | WriteError] = []
        for record, _, _ in entries:
            key = self.record_key(record)
            if record.get("bad"):
                out.append(PermanentError(f"{key} is bad", error_type="validation"))
                continue
            out.append(WriteResult(key, "updated" if key in self.items else "created"))
            self.items[key] = dict(record)
        return out

    def find_many(self, keys: list[str]) -> dict[str, str]:
        return {k: k for k in keys if k in self.items}

    def delete_many(self, dest_ids: list[str]) -> dict[str, WriteError]:
        for dest_id in dest_ids:
            self.items.pop(dest_id, None)
        return {}


class Numbers(SourceBase):
    """A source of `count` numbered items."""

    def __init__(self, count: int = 3) -> None:
        self.count = count

    @property
    def path(self) -> str:
        return f"numbers:{self.count}"

    def iter_chunks(self, schema: Any, since: Any = None, chunk_size: int = 5000) -> Iterator[Any]:
        rows = ((f"number {n}", {"id": f"n-{n}", "n": str(n)}) for n in range(self.count))
        yield from self.batches(rows, schema, chunk_size)


class Strict(Memory):
    """Options checked by pydantic, as many connectors will."""

    class Options(BaseModel):
        name: str
        api_key: str = Field(min_length=20)

    @classmethod
    def from_options(cls, **options: Any) -> Strict:
        checked = cls.Options(**options)
        return cls(checked.name, checked.api_key)


class Boasting(Memory):
    capabilities = Capabilities(snapshots=True, versions=True)


class Coreless(DestinationBase):
    key = "coreless"

    def upsert_many(self, entries: list[Any], draft: bool) -> list[Any]:
        return []


class Nameless(DestinationBase):
    upsert_many, find_many, delete_many = Memory.upsert_many, Memory.find_many, Memory.delete_many


class SavedMemory(DestinationBase, Block):
    """A connector that is also a Prefect block: saved once, named by `type: block`."""

    _block_type_slug = "batchgate-test-saved-memory"
    name: str = Field(default="saved", description="Which memory.")
    token: SecretStr = Field(default=SecretStr("saved-token-123"), description="A secret.")
    group: int = Field(default=5, description="Items a write carries.")

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(group_size=self.group)

    @property
    def key(self) -> str:
        return f"saved-memory:{self.name}"

    def upsert_many(self, entries: list[Any], draft: bool) -> list[Any]:
        return [WriteResult(self.record_key(r), "created") for r, _, _ in entries]

    def find_many(self, keys: list[str]) -> dict[str, str]:
        return {}

    def delete_many(self, dest_ids: list[str]) -> dict[str, WriteError]:
        return {}


def plugin(section: str = "destination", **config: Any) -> Any:
    job = parse_job({"source": {"type": "file", "path": "x.csv"}, section: config})
    return getattr(job, section)


# --- the bases ------------------------------------------------------------------------------------


def test_every_method_the_engine_calls_has_a_default_from_the_capabilities() -> None:
    memory = Memory()
    memory.bind(RecordSpec("sku"))
    assert memory.record_spec == RecordSpec("sku")
    assert (memory.group_size, memory.rate_per_s, memory.max_writers) == (10, None, None)
    assert (memory.needs_publish, memory.idempotent, memory.pacer) == (False, True, None)
    created = memory.upsert({"sku": "a", "price": 1}, None, draft=True)
    assert created.action == "created" and memory.find({"sku": "a"}) == "a"
    with pytest.raises(PermanentError, match="b is bad"):
        memory.upsert({"sku": "b", "bad": True}, None, draft=True)
    # what it cannot do, it says it cannot: never None ("gone") nor a made-up version
    assert memory.snapshot_many(["a"]) == {"a": NO_SNAPSHOT} and memory.snapshot("a") == NO_SNAPSHOT
    assert memory.versions(["a"]) == {"a": UNKNOWN_VERSION}
    assert isinstance(memory.restore_many([("a", {})])["a"], WriteError)
    assert memory.publish(["a"]) == {} and memory.link("a", {}) == "memory:mem/a"
    memory.delete("a")
    assert memory.find_many(["a"]) == {}


def test_the_dry_run_line_names_the_guarantees_a_destination_gives() -> None:
    assert describe(Memory.capabilities) == (
        "Guarantees of this destination: a rollback deletes created items but refuses to restore "
        "updated ones (no snapshots, no versions, no restore); a rollback cannot tell whether a "
        "created item was changed outside batchgate since (no versions); an upsert by key never "
        "duplicates an item."
    )
    full = Capabilities(snapshots=True, versions=True, restore=True, publish=True)
    assert "a rollback restores updated items and leaves alone any item changed since" in describe(
        full
    )
    assert "items count as published only once the destination confirms it" in describe(full)


def test_rollback_refuses_an_update_it_cannot_undo_safely_and_deletes_a_creation() -> None:
    updated = {"action": "updated", "previous": NO_SNAPSHOT}
    assert _refused({"action": "created", "previous": None}, Memory.capabilities) is None
    assert "declares no versions, no snapshots, no restore" in _refused(
        updated, Memory.capabilities
    )
    full = Capabilities(snapshots=True, versions=True, restore=True)
    assert _refused({**updated, "previous": {"name": "x"}}, full) is None
    assert "no snapshots" in _refused(updated, full)  # written while it could not read items


def test_a_rate_paces_every_writer_of_the_process_through_one_pacer() -> None:
    class Paced(Memory):
        capabilities = Capabilities(rate_per_s=50.0)

    first, second = Paced("x"), Paced("x")
    assert first.pacer is second.pacer and first.pacer is not None
    first.pace()


def test_a_prefect_block_derives_from_the_base_and_keeps_the_spec_off_its_fields() -> None:
    block = SavedMemory(group=7)
    block.bind(RecordSpec("sku"))
    assert block.record_spec == RecordSpec("sku") and block.group_size == 7
    assert set(SavedMemory.model_fields) == {"name", "token", "group"}
    assert "record_spec" not in block.model_dump() and missing_core(SavedMemory, block) == []
    assert capabilities_of(block) == Capabilities(group_size=7)


def test_the_shipped_webflow_destination_declares_its_capabilities() -> None:
    webflow = WebflowDestination(
        collection_id="c",
        token=SecretStr("t"),
        rate_per_minute=120,
        publish_live=True,
        items_per_request=50,
    )
    assert isinstance(webflow, DestinationBase)
    assert webflow.capabilities == Capabilities(
        publish=True,
        live=True,
        snapshots=True,
        versions=True,
        restore=True,
        rate_per_s=2.0,
        group_size=50,
        idempotent_upsert=False,
        drafts=True,
    )


# --- the registry: found, built, or refused in one line -------------------------------------------


def test_a_class_path_builds_the_connector_with_its_options() -> None:
    memory = registry.build(
        "destination",
        plugin(type="python", **{"class": f"{HERE}:Memory"}, options={"name": "shop"}),
    )
    assert isinstance(memory, Memory) and memory.key == "memory:shop"
    numbers = registry.build(
        "source", plugin("source", type="python", **{"class": f"{HERE}:Numbers"})
    )
    assert numbers.path == "numbers:3"


@pytest.mark.parametrize(
    ("cls", "options", "expected"),
    [
        (
            "Memory",
            {"nme": "x"},
            "destination.options are refused by tests.test_connectors:Memory: "
            "TypeError: Memory.__init__() got an unexpected keyword argument 'nme'. Fix: give "
            "destination.options the keyword arguments tests.test_connectors:Memory takes.",
        ),
        (
            "Strict",
            {"name": "x", "api_key": "short-key"},
            "refused by tests.test_connectors:Strict:"
            " api_key: String should have at least 20 characters.",
        ),
        (
            "Boasting",
            {},
            "declares capabilities it does not implement: snapshots (define "
            "snapshot_many), versions (define versions).",
        ),
        ("Coreless", {}, "does not define find_many, delete_many, the required core"),
        ("Nameless", {}, "does not define key, the required core of a DestinationBase"),
        (
            "Numbers",
            {},
            "is a class not derived from DestinationBase, not a DestinationBase "
            "subclass. Fix: derive the connector from batchgate.connectors.DestinationBase.",
        ),
    ],
)
def test_a_connector_that_cannot_be_built_is_one_line_naming_it_and_the_fix(
    cls: str, options: dict[str, Any], expected: str
) -> None:
    config = plugin(type="python", **{"class": f"{HERE}:{cls}"}, options=options)
    with pytest.raises(ConfigError) as refused:
        registry.build("destination", config)
    message = str(refused.value)
    assert expected in message and "\n" not in message and "Fix:" in message
    assert "short-key" not in message  # a refused secret is never echoed


@pytest.fixture
def installed_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package that registers this module's connectors, as `pip install` would."""
    dist = tmp_path / "site" / "memory_connectors-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: memory-connectors\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[batchgate.destinations]\nmemory = {HERE}:Memory\nbroken = {HERE}:NoSuchThing\n\n"
        f"[batchgate.sources]\nnumbers = {HERE}:Numbers\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))


def test_an_installed_entry_point_is_found_by_its_name(installed_here: None) -> None:
    memory = registry.build("destination", plugin(type="memory", options={"name": "ep"}))
    assert isinstance(memory, Memory) and memory.key == "memory:ep"
    assert isinstance(registry.build("source", plugin("source", type="numbers")), Numbers)
    assert "memory" in registry.installed("destination")
    with pytest.raises(
        ConfigError,
        match=r"^destination.type 'broken': loading .* failed: "
        r"AttributeError: .*Fix: reinstall that package",
    ):
        registry.build("destination", plugin(type="broken"))
    with pytest.raises(ConfigError, match=r"'memry'; allowed: .*'memory'.*Did you mean 'memory'"):
        plugin(type="memry")


# --- secrets in options ---------------------------------------------------------------------------


def test_a_secret_option_is_recorded_as_its_variable_and_read_back_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEM_TOKEN", "tok-0123456789")
    (tmp_path / "job.yaml").write_text(
        "source: {type: file, path: x.csv}\n"
        f"destination: {{type: python, class: '{HERE}:Memory', options: {{name: a, "
        "token: '${MEM_TOKEN}'}}\n"
    )
    job = load_job(tmp_path / "job.yaml")
    recorded = job.model_dump_json()
    assert "tok-0123456789" not in recorded and "${MEM_TOKEN}" in recorded
    assert "tok-0123456789" in secret_values(job)  # masked in every DLQ view and error
    memory = registry.build("destination", job.destination)
    assert memory.token == "tok-0123456789" and "tok-0123456789" not in memory.key
    again = job_of_run({"run_id": "r1", "mode": "full", "job_json": recorded})
    assert registry.build("destination", again.destination).token == "tok-0123456789"
    # a job from a flow run's parameters, as a worker gets it: the ${VAR} read there
    from_parameters = parse_job(json.loads(recorded))
    assert registry.build("destination", from_parameters.destination).token == "tok-0123456789"


def test_a_literal_secret_option_is_masked_and_cannot_be_rebuilt_from_the_record() -> None:
    config = plugin(
        type="python",
        **{"class": f"{HERE}:Memory"},
        options={"name": "a", "token": "literal-secret-1"},
    )
    dumped = json.dumps(PluginConfig.model_dump(config, mode="json"))
    assert "literal-secret-1" not in dumped and "**********" in dumped
    with pytest.raises(ConfigError, match="destination.options.token was recorded masked"):
        registry.build("destination", plugin(**json.loads(dumped)))


# --- the conformance suite, run on the in-memory connector and source --------------------------------


class TestMemoryConformance(DestinationConformance):
    @pytest.fixture
    def destination(self) -> Memory:
        return Memory()

    def refused_record(self, n: int, tag: str = "") -> dict[str, Any]:
        return {**self.record(n, 0, tag), "bad": True}


class TestNumbersConformance(SourceConformance):
    @pytest.fixture
    def source(self) -> Numbers:
        return Numbers(5)


# --- saved blocks of such connectors ----------------------------------------------------------------


@pytest.mark.prefect
def test_a_saved_block_of_an_own_connector_works_with_type_block(
    prefect_api: str, tmp_path: Path
) -> None:
    from blocks.factory import destination_for

    SavedMemory(name="shop", group=3).save("shop", overwrite=True)
    job = parse_job(
        {
            "source": {"type": "file", "path": "x.csv"},
            "destination": {"type": "block", "name": "batchgate-test-saved-memory/shop"},
        }
    )
    loaded = destination_for(job)
    assert isinstance(loaded, SavedMemory) and loaded.key == "saved-memory:shop"
    assert loaded.group_size == 3

    # a process that cannot import the block's class gets one line, not Prefect's traceback
    (tmp_path / "job.yaml").write_text(
        f"source: {{type: file, path: {ROOT / 'examples/products/products.csv'}}}\n"
        "fields: {sku: string, name: string}\nid_field: sku\n"
        "destination: {type: block, name: batchgate-test-saved-memory/shop}\n"
        f"ledger: {{path: {tmp_path / 'ledger.db'}}}\n"
    )
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("batchgate")),
            "dry-run",
            "--job",
            str(tmp_path / "job.yaml"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "its block class cannot be imported on this machine" in result.stderr
    assert "Fix: install the package that defines it" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.prefect
def test_a_source_of_ones_own_feeds_a_dry_run(prefect_api: str, tmp_path: Path) -> None:
    from flows.dry_run import dry_run

    job = parse_job(
        {
            "source": {"type": "python", "class": f"{HERE}:Numbers", "options": {"count": 7}},
            "fields": {"id": "string", "n": "integer"},
            "validation": {"add": [{"rule": "min", "field": "n", "value": 1}]},
            "ledger": {"path": str(tmp_path / "ledger.db")},
        }
    )
    checked = dry_run(job)
    assert (checked["total"], checked["ready"], checked["blocked"]) == (7, 6, 1)  # n = 0 is blocked
    assert "Source: numbers:7" in checked["report"]
