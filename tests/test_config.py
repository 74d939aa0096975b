"""The job file: the minimal job, ${ENV} expansion, and errors that name key, value and choices."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from batchgate.config import FileSourceConfig, Job, SqlDestinationConfig, expand_env, load_job
from batchgate.errors import ConfigError

MINIMAL = """\
source:
  type: file
  path: posts.csv            # relative to the job file
  filter: {status: Published}
destination:
  type: sql
  url: sqlite:///cms.db
validation:
  preset: blog
  allowed_categories: [Engineering, Data, Cloud, Security, AI]
batch:
  items_per_chunk: 5
"""


def write(tmp_path: Path, text: str, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_job_is_accepted_as_written(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, MINIMAL))
    assert isinstance(job.source, FileSourceConfig)
    assert job.source.path == str(tmp_path / "posts.csv")
    assert job.source.filter == {"status": "Published"}
    assert isinstance(job.destination, SqlDestinationConfig)
    assert job.destination.url == f"sqlite:///{tmp_path / 'cms.db'}"
    assert job.validation.allowed_categories == ["Engineering", "Data", "Cloud", "Security", "AI"]
    assert job.batch.items_per_chunk == 5


def test_destination_is_optional_for_a_dry_run(tmp_path: Path) -> None:
    job = load_job(write(tmp_path, "source: {type: file, path: /data/posts.json}\n"))
    assert job.destination is None
    assert job.source.path == "/data/posts.json"
    assert job.validation.preset == "blog"


def test_env_references_expand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BG_DATA", "/srv/data")
    monkeypatch.delenv("BG_MISSING", raising=False)
    text = "source: {type: file, path: '${BG_DATA}/posts.csv'}\nbatch: {items_per_chunk: '${BG_MISSING:-7}'}\n"
    job = load_job(write(tmp_path, text))
    assert job.source.path == "/srv/data/posts.csv"
    assert job.batch.items_per_chunk == 7


def test_unset_env_reference_names_key_and_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BG_NOPE", raising=False)
    with pytest.raises(ConfigError) as err:
        load_job(write(tmp_path, "source: {type: file, path: '${BG_NOPE}/x.csv'}\n"))
    message = str(err.value)
    assert "source.path" in message and "BG_NOPE" in message and "export BG_NOPE" in message


def test_dollar_dollar_is_a_literal_dollar() -> None:
    assert expand_env({"a": "cost $$5"}, env={}) == {"a": "cost $5"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # unknown key: names the key, the value, the allowed keys, and a suggestion
        (
            "source: {type: file, path: p.csv}\nbatch: {items_per_chunck: 5}\n",
            [
                "batch.items_per_chunck",
                "5",
                "allowed keys here: items_per_chunk",
                "Did you mean 'items_per_chunk'?",
            ],
        ),
        # wrong literal value
        (
            "source: {type: file, path: p.csv}\nvalidation: {preset: blogg}\n",
            ["validation.preset", "'blogg'", "'blog'"],
        ),
        # unknown source type
        ("source: {type: filez, path: p.csv}\n", ["source.type", "'filez'", "'file'"]),
        # wrong type of value
        (
            "source: {type: file, path: p.csv}\nbatch: {items_per_chunk: lots}\n",
            ["batch.items_per_chunk", "'lots'", "integer"],
        ),
        # out of range
        (
            "source: {type: file, path: p.csv}\nbatch: {items_per_chunk: 0}\n",
            ["batch.items_per_chunk", "0", "greater than"],
        ),
        # unknown key inside a tagged section
        (
            "source: {type: file, path: p.csv, filtr: {status: x}}\n",
            [
                "source.filtr",
                "allowed keys here: type, path, format, filter",
                "Did you mean 'filter'?",
            ],
        ),
        # missing required key
        ("source: {type: file}\n", ["Missing required key 'source.path'"]),
        # a key of one member of a several-member tagged union
        (
            "source: {type: file, path: p.csv}\ndestination: {type: webflow, collection_id: c, rate_per_minut: 5}\n",
            ["Unknown key 'destination.rate_per_minut'", "Did you mean 'rate_per_minute'?"],
        ),
        (
            "source: {type: file, path: p.csv}\ndestination: {type: ftp}\n",
            ["destination.type", "'ftp'", "'sql'", "'webflow'"],
        ),
        # missing section
        ("batch: {items_per_chunk: 5}\n", ["Missing required key 'source'"]),
        # unknown top-level section
        (
            "source: {type: file, path: p.csv}\nvalidaton: {}\n",
            ["validaton", "Did you mean 'validation'?"],
        ),
    ],
)
def test_wrong_key_or_value_names_key_value_and_choices(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        load_job(write(tmp_path, text))
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'job.yaml'} is not a valid job")
    for fragment in expected:
        assert fragment in message


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d+, column \d+"):
        load_job(write(tmp_path, "source:\n  type: [file\n"))


def test_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_job(tmp_path / "nope.yaml")


def test_job_model_is_a_form_schema() -> None:
    """The Prefect UI renders a flow parameter from this JSON schema; fields carry descriptions."""
    schema = Job.model_json_schema()
    assert set(schema["properties"]) >= {"source", "destination", "validation", "batch"}
    file_source = schema["$defs"]["FileSourceConfig"]["properties"]
    assert file_source["path"]["description"]


def test_postgres_and_absolute_urls_are_left_alone(tmp_path: Path) -> None:
    text = (
        "source: {type: file, path: p.csv}\ndestination: {type: sql, url: 'postgresql://u@h/db'}\n"
    )
    job = load_job(write(tmp_path, text))
    assert job.destination.url == "postgresql://u@h/db"


NOTION_AS_WRITTEN = """
source:
  type: notion
  base_url: https://api.notion.com/v1   # default
  database_id: 6513270e269e4d37b2a74de452e6b438
  token: ${NOTION_TOKEN}
  filter: {Status: Published}
validation: {preset: blog}
"""


def test_the_notion_source_is_accepted_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchgate.config import NOTION_PROPERTIES, NotionSourceConfig

    monkeypatch.setenv("NOTION_TOKEN", "secret_abc")
    job = load_job(write(tmp_path, NOTION_AS_WRITTEN))
    assert isinstance(job.source, NotionSourceConfig)
    assert job.source.database_id == "6513270e269e4d37b2a74de452e6b438"
    assert job.source.filter == {"Status": "Published"}
    assert job.source.token is not None and job.source.token.get_secret_value() == "secret_abc"
    assert "secret_abc" not in job.model_dump_json()  # masked wherever the job is recorded
    assert job.source.properties == NOTION_PROPERTIES and job.source.requests_per_second == 3.0


def test_the_notion_to_webflow_example_job_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    from batchgate.config import NotionSourceConfig, WebflowDestinationConfig

    for name, value in {"NOTION_TOKEN": "secret_n", "WEBFLOW_TOKEN": "w-token",
                        "NOTION_DATABASE_ID": "6513270e269e4d37b2a74de452e6b438",
                        "WEBFLOW_COLLECTION_ID": "c0ffee"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    root = Path(__file__).resolve().parents[1]
    job = load_job(root / "examples" / "notion-to-webflow" / "job.yaml")
    assert isinstance(job.source, NotionSourceConfig)
    assert isinstance(job.destination, WebflowDestinationConfig)
    assert job.destination.publish and job.destination.collection_id == "c0ffee"
    assert "secret_n" not in job.model_dump_json() and "w-token" not in job.model_dump_json()


def test_batch_keys_say_what_they_mean_and_earlier_names_still_load(tmp_path: Path) -> None:
    from batchgate.config import BatchConfig

    # unset: fitted to the destination (SQLite: one writer, 500 rows a transaction)
    assert BatchConfig().layout(500, 1) == (500, 500, 1, 1, 1)
    # PostgreSQL: four transactions in flight, a chunk each
    assert BatchConfig().layout(500, 4) == (500, 500, 1, 4, 4)
    # Webflow: groups of 100, three chunks (requests) in flight, its pacer keeping the rate
    assert BatchConfig().layout(100, None) == (100, 100, 1, 3, 3)
    # the pattern's chunk of 5: one write of 5 rows (SQL), or five requests of one (Webflow)
    assert BatchConfig(items_per_chunk=5).layout(500, 1) == (5, 5, 1, 1, 1)
    assert BatchConfig(items_per_chunk=5).layout(1, None) == (5, 1, 5, 3, 15)
    assert BatchConfig(items_per_chunk=5, writes_in_flight=5).layout(1, None) == (5, 1, 5, 1, 5)
    assert BatchConfig(items_per_chunk=1000, writes_in_flight=8).layout(100, None) == (
        1000, 100, 10, 1, 8
    )  # fmt: skip
    # a job written with the earlier names: size groups of items_per_task per chunk
    job = load_job(write(tmp_path, "source: {type: file, path: p.csv}\n"
                                   "batch: {size: 4, items_per_task: 3, concurrency: 2}\n"))  # fmt: skip
    assert (job.batch.items_per_chunk, job.batch.items_per_request, job.batch.writes_in_flight) == (
        12, 3, 2
    )  # fmt: skip


def test_the_issue_s_old_big_batch_still_loads_and_the_webflow_examples_write_100_per_request(
    tmp_path: Path,
) -> None:
    from batchgate.config import BatchConfig

    job = load_job(write(tmp_path, "source: {type: file, path: p.csv}\n"
                                   "batch: {size: 500, items_per_task: 500}\n"))  # fmt: skip
    assert (job.batch.items_per_chunk, job.batch.items_per_request) == (250_000, 500)
    root = Path(__file__).resolve().parents[1]
    for example in ("examples/blog/job-webflow.yaml", "examples/notion-to-webflow/job.yaml"):
        batch = BatchConfig.model_validate(yaml.safe_load((root / example).read_text())["batch"])
        assert batch.layout(100, None).items_per_request == 100, example
