"""The deployments' Run form is the flows' parameter schema (the job model): each choice has a
human title, a field with a fixed set of values is a select (an enum), and an optional field is a
plain input, never a switch between its type and "None". The job still validates with the field
absent or null, in pydantic and in the Prefect server's own check of a flow run's parameters."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools import validate

from batchgate.config import Job
from flows.dry_run import dry_run
from flows.full import full
from flows.pipeline import pipeline
from flows.sample import sample
from flows.sync import sync
from tests.conftest import ROOT

FLOWS = [dry_run, sample, full, pipeline, sync]


def schema_of(flow: Any) -> dict[str, Any]:
    return parameter_schema(flow.fn).model_dump()


def choices(schema: dict[str, Any], field: str) -> list[str]:
    """The titles the form shows on the tabs of the job's `field` (source or destination)."""
    prop = schema["definitions"]["Job"]["properties"][field]
    assert "anyOf" not in prop, prop  # one level of choice, not a choice wrapped in another
    names = [branch["$ref"].rpartition("/")[2] for branch in prop["oneOf"]]
    return [schema["definitions"][name]["title"] for name in names]


def null_switches(node: Any, where: str = "") -> list[str]:
    """Every place the schema offers "None" as one kind of a field (the UI's type switch)."""
    found = []
    if isinstance(node, dict):
        for key in ("anyOf", "oneOf"):
            if any(branch == {"type": "null"} for branch in node.get(key, [])):
                found.append(where)
        if isinstance(node.get("type"), list) and "null" in node["type"]:
            found.append(where)
        for key, value in node.items():
            found += null_switches(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += null_switches(value, f"{where}[{i}]")
    return found


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_each_choice_has_a_human_title(flow: Any) -> None:
    schema = schema_of(flow)
    assert choices(schema, "source") == ["File", "Notion", "Saved block", "Your own connector"]
    assert choices(schema, "destination") == ["SQL", "Webflow", "Saved block", "Your own connector"]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_no_field_of_the_job_is_a_switch_with_none(flow: Any) -> None:
    schema = schema_of(flow)
    assert null_switches(schema["definitions"]) == []


def test_the_pipelines_own_optional_parameters_are_plain_inputs() -> None:
    """sample_ids and run_id, optional, are a list and a text box in the pipeline's Run form."""
    schema = schema_of(pipeline)
    assert null_switches(schema) == []
    assert schema["properties"]["sample_ids"]["type"] == "array"
    assert schema["properties"]["run_id"]["type"] == "string"


def test_a_field_with_a_fixed_set_of_values_is_a_select() -> None:
    definitions = schema_of(pipeline)["definitions"]
    fmt = definitions["FileSourceConfig"]["properties"]["format"]
    assert fmt["enum"] == ["csv", "json", "jsonl", "parquet"] and fmt["type"] == "string"
    assert definitions["ValidationConfig"]["properties"]["preset"]["enum"] == ["blog", "none"]
    assert definitions["AddedRule"]["properties"]["severity"]["enum"] == ["blocked", "warning"]
    optional = definitions["NotionSourceConfig"]["properties"]["data_source_id"]
    assert optional["type"] == "string" and "default" not in optional  # a plain, empty input


def example_job() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "prefect.yaml").read_text())["definitions"]["example_job"])


def test_optional_fields_may_stay_empty_or_be_null() -> None:
    """Left empty in the form, an optional field is absent; an API caller may still send null
    for a plain one (the server's check allows null where the schema sets no default). A select
    takes one of its values or nothing: the server refuses a null for it, pydantic does not."""
    job = example_job()
    schema = schema_of(dry_run)
    absent = {"job": job}
    assert "format" not in job["source"] and "categories" not in job["destination"]
    assert validate(absent, schema, raise_on_error=True) == []  # the Prefect server's check
    assert Job.model_validate(job).source.format is None
    null = {"job": {**job, "destination": {**job["destination"], "categories": None}}}
    assert validate(null, schema, raise_on_error=True) == []
    assert Job.model_validate(null["job"]).destination.categories is None
    assert Job.model_validate({**job, "source": {**job["source"], "format": None}})
    no_destination = {key: value for key, value in job.items() if key != "destination"}
    assert validate({"job": no_destination}, schema, raise_on_error=True) == []
    assert Job.model_validate(no_destination).destination is None
    assert Job.model_validate({**no_destination, "destination": None}).destination is None


def test_the_server_still_refuses_a_wrong_choice() -> None:
    """Shaping the schema for the form did not loosen it: a bad enum value is refused."""
    job = example_job()
    params = {"job": {**job, "source": {**job["source"], "format": "xlsx"}}}
    with pytest.raises(Exception, match="xlsx"):
        validate(params, schema_of(dry_run), raise_on_error=True)


def test_a_job_with_connectors_of_its_own_passes_the_servers_check_and_keeps_class() -> None:
    """A `type: python` or installed-connector section is one choice of the form (exactly one
    branch of its oneOf), its `class` key keeps its name in the parameters, and a secret option
    is recorded as the ${VAR} it was written as."""
    job = example_job()
    own = {"type": "python", "class": "my_pkg.rest:Products",
           "options": {"base_url": "http://127.0.0.1:8080", "token": "${PRODUCTS_TOKEN}"}}  # fmt: skip
    for destination in (own, {"type": "rest-products", "options": {"base_url": "http://x"}}):
        params = {"job": {**job, "destination": destination}}
        assert validate(params, schema_of(dry_run), raise_on_error=True) == []
    dumped = Job.model_validate({**job, "destination": own}).model_dump(mode="json")
    assert dumped["destination"] == own
    assert Job.model_validate(dumped).destination.class_ == "my_pkg.rest:Products"
