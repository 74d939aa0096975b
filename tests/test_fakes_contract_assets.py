"""The fake Webflow's assets and referenced collections, driven by Webflow's own SDK (as
tests/test_fakes_contract.py does for the rest): its models parse what the fake answers."""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
from webflow import Webflow
from webflow.errors import BadRequestError
from webflow.types import CollectionItemPostSingle

from tests.fakes.notion_server import png_header
from tests.fakes.webflow_refs import blog_template
from tests.fakes.webflow_server import WebflowServer
from tests.test_fakes_contract import NO_RETRY, sdk


def upload(answer: Any, name: str, data: bytes) -> httpx.Response:
    details = answer.upload_details.model_dump(by_alias=True, exclude_none=True)
    return httpx.post(answer.upload_url, data=details, files={"file": (name, data, "image/png")})


def test_assets_create_upload_list_and_serve() -> None:
    data = png_header(800, 450)
    digest = hashlib.md5(data).hexdigest()
    with WebflowServer() as server:
        client: Webflow = sdk(server)
        answer = client.assets.create(server.state.site_id, file_name="a.png", file_hash=digest)
        assert answer.id and answer.upload_url and answer.hosted_url
        assert httpx.get(answer.hosted_url).status_code == 403  # not uploaded yet
        assert upload(answer, "a.png", data).status_code == 201
        assert httpx.get(answer.hosted_url).content == data
        listed = client.assets.list(server.state.site_id)
        assert [a.id for a in listed.assets or []] == [answer.id]
        wrong = client.assets.create(server.state.site_id, file_name="b.png", file_hash="0" * 32)
        assert upload(wrong, "b.png", data).status_code == 400  # another file's hash
        with pytest.raises(BadRequestError):
            client.assets.create(server.state.site_id, file_name="x" * 100, file_hash=digest,
                                 request_options=NO_RETRY)  # fmt: skip


def test_a_reference_field_takes_only_item_ids_of_its_collection() -> None:
    fields, collections = blog_template()
    with WebflowServer(fields=fields, ref_collections=collections) as server:
        client = sdk(server)
        schema = {f.slug: f for f in client.collections.get(server.state.collection_id).fields}
        cats = collections[0]
        assert schema["category"].type == "Reference"
        assert dict(schema["category"].validations or {})["collectionId"] == cats.id
        listed = client.collections.items.list_items(cats.id)
        data = cats.by_name("Data")
        assert data is not None and data["id"] in {i.id for i in listed.items or []}
        item = client.collections.items.create_item(
            server.state.collection_id, skip_invalid_files=False,
            request=CollectionItemPostSingle(fieldData={"name": "P", "slug": "p",
                                                        "category": data["id"]}),
        )  # fmt: skip
        assert dict(item.field_data or {})["category"] == data["id"]
        with pytest.raises(BadRequestError):
            client.collections.items.create_item(
                server.state.collection_id, request_options=NO_RETRY,
                request=CollectionItemPostSingle(fieldData={"name": "Q", "slug": "q",
                                                            "category": "Data"}),
            )  # fmt: skip
