"""batchgate.testing's conformance suite over every shipped destination and the example's REST
connector: SQLite, PostgreSQL, Webflow (the fake API on 127.0.0.1) and the products API."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import SecretStr

from batchgate.config import SqlDestinationConfig
from batchgate.records import RecordSpec
from batchgate.testing import DestinationConformance, SourceConformance
from batchgate.transform import blog_record
from blocks.file_source import FileSource
from blocks.sql_destination import SqlDestination
from blocks.webflow import WebflowDestination
from tests.conftest import ROOT, blog_row
from tests.fakes.webflow_server import WebflowServer

EXAMPLE = ROOT / "examples" / "rest-destination"


class TestSqlite(DestinationConformance):
    @pytest.fixture
    def destination(self, tmp_path: Path) -> Any:
        config = SqlDestinationConfig(type="sql", url=f"sqlite:///{tmp_path / 'cms.db'}")
        return SqlDestination.from_config(config)


@pytest.mark.postgres
class TestPostgres(DestinationConformance):
    @pytest.fixture
    def destination(self, pg_schema_url: str) -> Any:
        return SqlDestination.from_config(SqlDestinationConfig(type="sql", url=pg_schema_url))


class TestWebflow(DestinationConformance):
    """Blog records (Webflow finds an item by its slug); one with a category the collection
    lacks is refused alone."""

    spec: ClassVar[RecordSpec] = RecordSpec("source_id", {}, "title", True)  # blog_record decides

    @pytest.fixture
    def destination(self) -> Iterator[Any]:
        with WebflowServer() as server:
            yield WebflowDestination(
                base_url=server.base_url,
                token=SecretStr("test-token"),
                collection_id=server.state.collection_id,
                rate_per_minute=60_000,
                publish_live=True,
            )

    def record(self, n: int, revision: int = 0, tag: str = "") -> dict[str, Any]:
        row = blog_row(
            n,
            id=f"bg-{tag}-{n:03d}",
            slug=f"bg-{tag}-{n:03d}",
            title=f"Post {n} revision {revision}",
            summary=f"Revision {revision}.",
        )
        row.update(tags=["a"], featured=False, hero_width=1600, hero_height=900)
        return blog_record(row["id"], row)

    def refused_record(self, n: int, tag: str = "") -> dict[str, Any]:
        return {**self.record(n, 0, tag), "category": "No such category"}


def example_server() -> Any:
    """The example's server.py as a module; its connector package importable, installed or not."""
    if str(EXAMPLE) not in sys.path:
        sys.path.append(str(EXAMPLE))
    name = "rest_products_server"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLE / "server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


class TestRestProducts(DestinationConformance):
    """The example connector against the example API; a negative stock is refused (422)."""

    @pytest.fixture
    def destination(self) -> Iterator[Any]:
        api, _ = example_server().serve(0)
        from batchgate_rest_products import Products

        yield Products(f"http://127.0.0.1:{api.server_address[1]}", token=None)
        api.shutdown()
        api.server_close()

    def record(self, n: int, revision: int = 0, tag: str = "") -> dict[str, Any]:
        return {
            "sku": f"bg-{tag}-{n:03d}",
            "name": f"Product {n} r{revision}",
            "price": 2.5 + n + revision,
            "stock": 10 * n + revision,
            "category": "Garden",
        }

    def refused_record(self, n: int, tag: str = "") -> dict[str, Any]:
        return {**self.record(n, 0, tag), "stock": -1}


class TestFileSource(SourceConformance):
    @pytest.fixture
    def source(self, tmp_path: Path) -> Any:
        (tmp_path / "items.csv").write_text("id,name\na,A\nb,B\nc,C\nd,D\ne,E\n")
        return FileSource(path=str(tmp_path / "items.csv"))
