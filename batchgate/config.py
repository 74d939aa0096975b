"""The job file: one batch operation described in YAML, checked by pydantic.

The same `Job` model is the flows' parameter, so the Prefect UI renders it as a form.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import types
import typing
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from batchgate.errors import ConfigError
from batchgate.plugins import add_search_path
from batchgate.records import FieldType
from batchgate.secrets import (
    MASKED,  # noqa: F401  (re-exported: the one mask)
    SecretText,
    SecretUrl,
    keep_templates,
    recorded_options,
    secret_options,
    templates_of,
    token_url_message,
    token_url_problem,
)

Severity = Literal["blocked", "warning"]
DEFAULT_LEDGER_PATH = ".batchgate/ledger.db"


def _form_schema(schema: dict[str, Any]) -> None:
    """Shape a model's JSON schema for the Prefect Run form (pydantic's `json_schema_extra`): an
    optional field (`X | None = None`) shows as X alone, a plain input (or the choice among X's
    kinds) that may stay empty, not a switch between X and "None" ('Property is type "None"').
    Empty means absent and the job validates as before; Prefect's server, checking a flow run's
    parameters, still accepts a null for such a field, since its schema has no default."""
    for prop in schema.get("properties", {}).values():
        branches = prop.get("anyOf")
        if not branches or {"type": "null"} not in branches or prop.get("default", 0) is not None:
            continue
        rest = [branch for branch in branches if branch != {"type": "null"}]
        del prop["anyOf"], prop["default"]
        if len(rest) == 1:
            prop.update(rest[0])
        else:
            prop["anyOf"] = rest


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_form_schema)


class FileSourceConfig(_Section):
    """Items from a CSV, JSON (a list of objects), JSON-lines or Parquet file."""

    model_config = ConfigDict(title="File")  # its name in the Run form

    type: Literal["file"] = Field(description="Source kind.")
    path: str = Field(description="File path; relative paths are resolved from the job file.")
    format: Literal["csv", "json", "jsonl", "parquet"] | None = Field(
        default=None, description="File format; taken from the extension when unset."
    )
    filter: dict[str, str | int | bool | list[str | int | bool]] = Field(
        default_factory=dict,
        description="Keep only items whose column equals the value (or one of a list).",
    )
    max_cell_bytes: int = Field(
        default=1_000_000,
        ge=1,
        description="Largest cell accepted; a bigger one usually means a broken quote.",
    )


class SqlDestinationConfig(_Section):
    """A SQL table (SQLite file or PostgreSQL) acting as the CMS."""

    model_config = ConfigDict(title="SQL")  # its name in the Run form

    type: Literal["sql"] = Field(description="Destination kind.")
    url: SecretUrl = Field(
        description="SQLAlchemy URL, e.g. sqlite:///cms.db (relative to the job file) "
        "or postgresql+psycopg2://user@host/db; a password in it is a secret (write the URL as "
        "${VAR} so records name the variable)."
    )
    table: str = Field(
        default="posts", min_length=1, max_length=128, description="Table that receives the items."
    )
    key: str | None = Field(
        default=None,
        description="The key column items are upserted by (unique or the primary key). Unset: "
        "the id field's column.",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Record field -> column, for fields whose column has another name (unset: "
        "the same name).",
    )
    ignore: list[str] = Field(
        default_factory=list,
        description="Record fields left out of the table on purpose (any other field with no "
        "column stops the dry-run).",
    )
    create: Literal["if-missing", "never"] = Field(
        default="if-missing",
        description="if-missing: create the table, one typed column a field, when it does not "
        "exist; never: the table must exist (the dry-run checks it).",
    )
    categories: list[str] | None = Field(
        default=None, description="Category options the destination accepts, if it has a fixed set."
    )
    publish: bool = Field(
        default=False, description="Write items as published; drafts unless true."
    )


NOTION_PROPERTIES = {
    "title": "Name",
    "slug": "Slug",
    "status": "Status",
    "category": "Category",
    "tags": "Tags",
    "featured": "Featured",
    "publish_date": "Publish date",
    "hero_image_url": "Cover image",
    "summary": "Summary",
    "last_edited": "Last edited",
}


class NotionSourceConfig(_Section):
    """Pages of a Notion database (API version 2025-09-03), with their bodies as HTML."""

    model_config = ConfigDict(title="Notion")  # its name in the Run form

    type: Literal["notion"] = Field(description="Source kind.")
    base_url: str = Field(
        default="https://api.notion.com/v1",
        description="API base URL: https (plain http only on 127.0.0.1, ::1 or localhost).",
    )
    database_id: str = Field(min_length=1, description="The database whose pages are the items.")
    data_source_id: str | None = Field(
        default=None, description="The database's data source to read (default: its first)."
    )
    token: SecretText | None = Field(
        default=None,
        description="Integration secret; ${NOTION_TOKEN}. Unset: read from the NOTION_TOKEN "
        "environment variable where the flow runs.",
    )
    filter: dict[str, str | int | bool | list[str | int | bool] | dict[str, Any]] = Field(
        default_factory=dict,
        description="Property -> value the pages must have (e.g. Status: Published), or a "
        "property's filter in Notion's own syntax.",
    )
    properties: dict[str, str] = Field(
        default_factory=lambda: dict(NOTION_PROPERTIES),
        description="Item field -> Notion property name (the blog template's names by default).",
    )
    page_url: str = Field(
        default="/post/{slug}",
        description="A migrated page's URL on the site, {slug} its slug: links between migrated "
        "pages are written so (a Webflow collection's template pages live at /<collection slug>/).",
    )
    timeout_s: float = Field(default=30.0, gt=0, le=300, description="Per-request timeout.")
    requests_per_second: float = Field(
        default=3.0, gt=0, description="Notion's limit per integration: an average of 3 requests/s."
    )
    workers: int = Field(default=4, ge=1, le=16, description="Pages read at once (the pace is "
                         "3 requests/s whatever this is).")  # fmt: skip

    @field_validator("base_url")
    @classmethod
    def check_base_url(cls, url: str) -> str:
        return _token_url(url, "source.base_url")


class BlockRefConfig(_Section):
    """A connector saved as a Prefect block (UI: Blocks), named instead of written inline."""

    model_config = ConfigDict(title="Saved block")  # its name in the Run form

    type: Literal["block"] = Field(description="Use a saved block.")
    name: str = Field(
        pattern=r"^[a-z0-9-]+/[A-Za-z0-9_.-]+$",
        description="<block type slug>/<block name>, e.g. batchgate-notion-source/blog "
        "(the slug is on the block's page in the Prefect UI).",
    )


PLUGIN = "plugin"  # the union tag of any section type batchgate does not ship


class PluginConfig(_Section):
    """A connector of your own: a class named by `class:`, or one an installed package
    registers under the entry-point group batchgate.destinations / batchgate.sources."""

    model_config = ConfigDict(title="Your own connector", populate_by_name=True,
                              serialize_by_alias=True)  # fmt: skip
    group: ClassVar[str] = ""  # the entry-point group installed connectors register under
    built_in: ClassVar[tuple[str, ...]] = ()  # the types batchgate ships

    type: str = Field(
        min_length=1,
        description="python (with class), or the name an installed connector package "
        "registers, e.g. rest-products.",
    )
    class_: str | None = Field(
        default=None,
        alias="class",
        description="For type python: the connector's class as module:Class, e.g. "
        "my_pkg.rest:Products. Its package must be installed where the flow runs (every worker).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments the class is built with. A key that is token, password, "
        "secret or key, or ends in one (api_key), holds a secret: write it as ${VAR}.",
    )

    @field_validator("options")
    @classmethod
    def _secrets(cls, options: dict[str, Any]) -> dict[str, Any]:
        return secret_options(options)

    @field_serializer("options", when_used="json")
    def _recorded(self, options: dict[str, Any]) -> dict[str, Any]:
        return recorded_options(options)

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        """A type batchgate ships no connector for must be python or an installed one's name
        (checked first: a typo in a shipped type is named as such, not as its keys)."""
        kind = data.get("type") if isinstance(data, dict) else None
        if not isinstance(kind, str) or kind == "python":
            return data
        names = sorted(p.name for p in entry_points(group=cls.group))
        if kind not in names:
            raise PydanticCustomError("union_tag_invalid", "no connector is installed under this "
                                      "name", {"tag": kind, "expected_tags": cls._choices(kind, names)})  # fmt: skip
        return data

    @classmethod
    def _choices(cls, kind: str, names: list[str]) -> str:
        """The allowed types, a close match and the fix, for the union_tag_invalid message."""
        known = [*cls.built_in, "python", *names]
        near = difflib.get_close_matches(kind, known, n=1)
        return (", ".join(map(repr, known)) + f" (installed under {cls.group}: "
                f"{', '.join(names) or 'none'})" + (f". Did you mean {near[0]!r}?" if near else "")
                + " Fix: correct the type, pip install the connector's package where the flow "
                "runs, or write type: python with class: my_pkg.module:Class")  # fmt: skip


class SourcePluginConfig(PluginConfig):
    """A source of your own (`type: python` with `class:`, or an installed connector's name)."""

    group: ClassVar[str] = "batchgate.sources"
    built_in: ClassVar[tuple[str, ...]] = ("file", "notion", "block")


class DestinationPluginConfig(PluginConfig):
    """A destination of your own (`type: python` with `class:`, or an installed one's name)."""

    group: ClassVar[str] = "batchgate.destinations"
    built_in: ClassVar[tuple[str, ...]] = ("sql", "webflow", "block")


def _kind(*known: str) -> Any:
    """A section's union tag: its own type when batchgate ships it, else PLUGIN."""

    def tag(value: Any) -> str | None:
        kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
        if kind is None:
            return None
        return kind if kind in known else PLUGIN

    return Discriminator(tag)


SourceConfig = Annotated[
    Annotated[FileSourceConfig, Tag("file")]
    | Annotated[NotionSourceConfig, Tag("notion")]
    | Annotated[BlockRefConfig, Tag("block")]
    | Annotated[SourcePluginConfig, Tag(PLUGIN)],
    _kind(*SourcePluginConfig.built_in),
]
DEFAULT_FIELD_MAP = {
    "title": "name",
    "slug": "slug",
    "body_html": "post-body",
    "summary": "post-summary",
    "hero_image_url": "main-image",
    "featured": "featured",
    "category": "category",
    "publish_date": "publish-date",
    "seo_title": "seo-title",
    "seo_description": "seo-description",
    "reading_time": "reading-time",
}


class ImagesConfig(_Section):
    """The images a Webflow item carries: body images re-hosted in the site's assets, and what
    happens to one over Webflow's 4 MB limit (issue 20)."""

    fit_limit: bool = Field(
        default=False,
        description="Re-encode an image over 4 MB (hero or body) to fit, with Pillow; off: the "
        "dry-run blocks it with the fix.",
    )
    upload: Literal["hosted", "all", "none"] = Field(
        default="hosted",
        description="Body images uploaded to the site's assets (src rewritten): hosted (those "
        "whose URL expires, e.g. Notion's files), all, or none.",
    )


class WebflowDestinationConfig(_Section):
    """A Webflow CMS collection, through the Data API v2."""

    model_config = ConfigDict(title="Webflow")  # its name in the Run form

    type: Literal["webflow"] = Field(description="Destination kind.")
    base_url: str = Field(
        default="https://api.webflow.com/v2",
        description="API base URL: https (plain http only on 127.0.0.1, ::1 or localhost).",
    )
    collection_id: str = Field(
        min_length=1, description="The CMS collection that receives the items."
    )
    token: SecretText | None = Field(
        default=None,
        description="API token with CMS write access; ${WEBFLOW_TOKEN}. Unset: read from the "
        "WEBFLOW_TOKEN environment variable where the flow runs.",
    )
    rate_per_minute: int | None = Field(
        default=None, ge=1, le=100_000,
        description="Requests per minute to send at most. Unset: the limit Webflow states in "
        "X-RateLimit-Limit (120 on CMS plans, 60 on Basic), 60 until its first answer.",
    )  # fmt: skip
    publish: bool = Field(default=False, description="Publish items live; drafts unless true.")
    items_per_request: int = Field(
        default=100, ge=1, le=100,
        description="Items one create or update request carries (1-100): 100 writes 100 items "
        "per request of the plan's rate limit; 1 sends one request per item.",
    )  # fmt: skip
    field_map: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_FIELD_MAP),
        description="Item field -> collection field slug. Fields the collection lacks are skipped.",
    )
    site_url: str | None = Field(
        default=None,
        description="Public site URL, for links in reports (e.g. https://blog.example.com).",
    )
    link_template: str | None = Field(
        default=None,
        description="Where a reviewer opens an item, with {slug}, {id} and {collection_id}, e.g. "
        "https://my-site.webflow.io/blog/{slug} (drafts: the site's staging domain). Unset: "
        "site_url/{slug}, else the item's API URL.",
    )
    images: ImagesConfig = Field(
        default_factory=ImagesConfig, description="Body images and the 4 MB limit."
    )
    create_missing_references: bool = Field(
        default=False,
        description="A category or tag (Reference/MultiReference) its collection lacks is created "
        "there before the first write that needs it; off: the dry-run blocks the item.",
    )

    @field_validator("base_url")
    @classmethod
    def check_base_url(cls, url: str) -> str:
        return _token_url(url, "destination.base_url")


def _token_url(url: str, field: str) -> str:
    """A base URL the token may be sent to (https, or http on this machine), else a clear refusal."""
    problem = token_url_problem(url)
    if problem:
        raise ValueError(token_url_message(url, field, problem).rstrip("."))
    return url


DestinationConfig = Annotated[
    Annotated[SqlDestinationConfig, Tag("sql")]
    | Annotated[WebflowDestinationConfig, Tag("webflow")]
    | Annotated[BlockRefConfig, Tag("block")]
    | Annotated[DestinationPluginConfig, Tag(PLUGIN)],
    _kind(*DestinationPluginConfig.built_in),
]


class RuleSettings(BaseModel):
    """Overrides for one rule of the preset: on/off, severity, and the rule's own limits."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_form_schema)

    enabled: bool = Field(default=True, description="Turn the rule off with false.")
    severity: Severity | None = Field(default=None, description="blocked or warning.")

    def params(self) -> dict[str, Any]:
        """The rule-specific limits (everything but enabled and severity)."""
        return dict(self.model_extra or {})


class AddedRule(BaseModel):
    """A rule added by the job file on top of the preset."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_form_schema)

    rule: str = Field(description="Rule kind, e.g. required, max_length, pattern, allowed_values.")
    field: str = Field(description="Item field the rule checks.")
    name: str | None = Field(default=None, description="Name shown in reports.")
    severity: Severity | None = Field(default=None, description="blocked or warning.")

    def params(self) -> dict[str, Any]:
        """The rule-specific limits."""
        return dict(self.model_extra or {})


class ValidationConfig(_Section):
    """Which checks run on every item before anything is written."""

    preset: Literal["blog", "none"] = Field(
        default="blog",
        description="blog: the blog's fields, rules and transform (Markdown to HTML, reading "
        "time, SEO). none: the job's own fields (unset when the job declares fields).",
    )
    allowed_categories: list[str] | None = Field(
        default=None,
        description="Categories accepted when the destination does not report its own options.",
    )
    rules: dict[str, RuleSettings] = Field(
        default_factory=dict, description="Per-rule overrides: enabled, severity, limits."
    )
    add: list[AddedRule] = Field(default_factory=list, description="Extra rules.")
    image_timeout_s: float = Field(
        default=5.0, gt=0, description="Timeout for fetching an image's header bytes."
    )


class BatchConfig(_Section):
    """How items are grouped when written. Unset sizes fit the destination: SQLite one writer
    with 500 rows per transaction, PostgreSQL four, Webflow groups of `items_per_request` paced
    at its rate limit."""

    items_per_chunk: int | None = Field(
        default=None, ge=1, le=10_000_000,
        description="Items per chunk: the unit of the progress lines and of the circuit "
        "breaker's judgement, as in the reports' 'Batch 3/10'. Unset: one write per writer.",
    )  # fmt: skip
    items_per_request: int | None = Field(
        default=None, ge=1, le=10_000,
        description="Items per write request: one SQL transaction (unset: 500), or one Webflow "
        "task's requests (unset: the destination's items_per_request).",
    )  # fmt: skip
    writes_in_flight: int | None = Field(
        default=None, ge=1, le=64,
        description="Write requests in flight at once. Unset: SQLite 1, PostgreSQL 4, "
        "Webflow three chunks (its pacer keeps the rate).",
    )  # fmt: skip
    retries: int = Field(default=3, ge=0, le=10, description="Retries of a transient failure.")
    backoff_base_s: float = Field(
        default=2.0, ge=0, description="First retry delay; doubles each time (2, 4, 8)."
    )
    jitter: float = Field(default=0.5, ge=0, le=1, description="Random spread of each delay, +/-.")
    attempt_timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one attempt.")
    pause_at: float = Field(
        default=0.5, gt=0, le=1, description="Chunk failure rate that pauses the run."
    )
    pause_seconds: float = Field(
        default=30.0, ge=0, description="How long the circuit breaker pauses."
    )
    abort_at: float = Field(
        default=0.8, gt=0, le=1, description="Chunk failure rate that aborts the run."
    )
    success_threshold: float | Literal["critical", "standard", "low"] = Field(
        default=90.0,
        description="Success rate (%) for partial-success; or critical (100), standard (90), low (any).",
    )
    shards: int = Field(
        default=1, ge=1, le=64,
        description="Shards of a full run: N > 1 plans once, then runs N full-shard deployment "
        "runs on the work pool's workers, each writing its slice of the plan (needs a PostgreSQL "
        "ledger). 1: one process, no work pool needed.",
    )  # fmt: skip
    shards_on_this_host: bool = Field(
        default=False,
        description="Every worker of the pool runs on this host, so shards may share a SQLite "
        "ledger.",
    )

    @model_validator(mode="before")
    @classmethod
    def _earlier_names(cls, data: Any) -> Any:
        """Jobs written before the keys were renamed still load: `size` (groups per chunk),
        `items_per_task` (items per write) and `concurrency` (writes in flight)."""
        if not isinstance(data, dict) or not {"size", "items_per_task", "concurrency"} & set(data):
            return data
        data = dict(data)
        per_write = data.pop("items_per_task", None)
        size = data.pop("size", None)
        concurrency = data.pop("concurrency", None)
        if per_write is not None:
            data.setdefault("items_per_request", per_write)
        if size is not None:
            try:
                data.setdefault("items_per_chunk", int(size) * int(per_write or 1))
            except (TypeError, ValueError):
                data.setdefault("items_per_chunk", size)  # reported as the new key's error
        if concurrency is not None:
            data.setdefault("writes_in_flight", concurrency)
        return data

    def layout(self, group_size: int, writers: int | None, window: int = 3) -> Layout:
        """How a run cuts its items for a destination whose one write carries at most
        `group_size` items and that takes `writers` writes at once; an API destination (None)
        keeps `window` chunks in flight while its pacer keeps the rate. The job's keys win."""
        per_request = self.items_per_request or group_size
        if self.items_per_chunk is not None:
            per_request = min(per_request, self.items_per_chunk)
        per_chunk = self.items_per_chunk or per_request
        groups = -(-per_chunk // per_request)
        if self.writes_in_flight is None and writers is None:
            return Layout(per_chunk, per_request, groups, window, window * groups)
        in_flight = self.writes_in_flight or writers or window
        return Layout(per_chunk, per_request, groups, max(1, in_flight // groups), in_flight)


class Layout(typing.NamedTuple):
    items_per_chunk: int
    items_per_request: int
    requests_per_chunk: int
    chunks_in_flight: int
    writes_in_flight: int


class LedgerConfig(_Section):
    """Where runs and item results are recorded."""

    url: SecretUrl | None = Field(
        default=None,
        description="SQLAlchemy URL (PostgreSQL for teams). Overrides path. A password in it is a "
        "secret (write the URL as ${VAR} so records name the variable).",
    )
    path: str = Field(
        default=DEFAULT_LEDGER_PATH,
        description="SQLite file used when no url is set (relative to the working directory).",
    )


class NetworkConfig(_Section):
    """What URLs from item data (hero images, covers) may make the worker fetch."""

    allow_private_hosts: bool = Field(
        default=False,
        description="Let item URLs reach loopback, private, link-local and reserved addresses "
        "(an intranet image host, a local test server). Off: such an item is blocked, and the "
        "address receives nothing.",
    )


class Job(_Section):
    """One batch operation: where items come from, where they go, and how they are checked."""

    name: str = Field(default="job", description="Job name, used in run ids and reports.")
    source: SourceConfig = Field(description="Where items come from.")
    fields: dict[str, FieldType] | None = Field(
        default=None,
        description="The items' fields and their types (string, integer, number, boolean, "
        "date, datetime, list, url, json), when no preset declares them; the record written "
        "is the item's typed fields. Unset with preset none: every column, as text.",
    )
    id_field: str = Field(
        default="id", min_length=1, description="The field that identifies an item (its key)."
    )
    title_field: str | None = Field(
        default=None, description="The field reports name an item by (the blog: title)."
    )
    transform: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description="A callable of your own from an item's fields to the record written, as "
        "'package.module:function'; it runs in the dry-run, and its output is what the plan "
        "freezes and the full run writes.",
    )
    destination: DestinationConfig | None = Field(
        default=None, description="Where items go (optional for a dry-run)."
    )
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    network: NetworkConfig = Field(
        default_factory=NetworkConfig,
        description="Where URLs from item data may lead (public addresses only, by default).",
    )

    @model_validator(mode="after")
    def _own_fields(self) -> Job:
        """Declared fields mean preset none, unless the job names a preset itself."""
        if self.fields is None:
            return self
        if "preset" not in self.validation.model_fields_set:
            self.validation.preset = "none"
        elif self.validation.preset != "none":
            raise ValueError(
                f"fields: the '{self.validation.preset}' preset declares its own fields; set "
                "validation.preset: none to use the job's fields"
            )
        if self.id_field not in self.fields:
            raise ValueError(f"id_field: '{self.id_field}' is not among the fields "
                             f"({', '.join(self.fields)}); declare it or name another")  # fmt: skip
        if self.title_field and self.title_field not in self.fields:
            raise ValueError(f"title_field: '{self.title_field}' is not among the fields "
                             f"({', '.join(self.fields)})")  # fmt: skip
        return self

    def fingerprint(self) -> str:
        """A short hash of the job's settings, recorded with each run. How many shards write a
        plan is not part of it: a plan reviewed with one process may be written by several."""
        data = self.model_dump(mode="json", exclude={"batch": {"shards", "shards_on_this_host"}})
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


# --- loading ---------------------------------------------------------------------------------

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: Any, where: str = "", env: typing.Mapping[str, str] | None = None) -> Any:
    """Expand ${VAR} and ${VAR:-default} in every string of a parsed YAML tree."""
    env = os.environ if env is None else env
    if isinstance(value, dict):
        return {k: expand_env(v, _join(where, k), env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, f"{where}[{i}]", env) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"key '{where}' refers to ${{{name}}}, which is not set in the environment. "
            f"Fix: export {name}=... before running, or write ${{{name}:-default}}."
        )

    return _ENV_REF.sub(substitute, value)


MAX_YAML_DEPTH = 50  # a job file nests 4 or 5 levels
MAX_YAML_ALIASES = 20  # a few shared settings; an alias bomb needs many
MAX_YAML_NODES = 20_000  # values once every alias is expanded


class _JobLoader(yaml.SafeLoader):
    """yaml.SafeLoader refusing, while it composes, what no job file needs and a hostile one uses:
    many aliases (a "billion laughs" bomb), deep nesting (2,000 `[` exhaust the stack) and
    duplicate keys (YAML keeps the last one silently)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_YAML_ALIASES:
                raise _refused(f"more than {MAX_YAML_ALIASES} aliases (*name); write the values "
                               "out instead", event.start_mark)  # fmt: skip
        if not isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > MAX_YAML_DEPTH:
            raise _refused(f"nested deeper than {MAX_YAML_DEPTH} levels", event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor: Any) -> Any:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue
            line = first.setdefault((key.tag, key.value), key.start_mark.line + 1)
            if line != key.start_mark.line + 1:
                raise _refused(f"duplicate key '{key.value}' (first at line {line})",
                               key.start_mark)  # fmt: skip
        return node

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_YAML_NODES:
            raise _refused(f"more than {MAX_YAML_NODES:,} values once its aliases are expanded",
                           node.start_mark)  # fmt: skip
        return node


def _refused(problem: str, mark: Any) -> yaml.YAMLError:
    return yaml.composer.ComposerError(None, None, problem, mark)


def _expanded_size(node: Any, sizes: dict[int, int]) -> int:
    """How many values the node stands for with every alias copied out (each node counted once)."""
    if id(node) not in sizes:
        sizes[id(node)] = 1  # a node reached again through itself adds nothing more
        if isinstance(node, yaml.SequenceNode):
            sizes[id(node)] += sum(_expanded_size(child, sizes) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            sizes[id(node)] += sum(
                _expanded_size(key, sizes) + _expanded_size(value, sizes)
                for key, value in node.value
            )
    return sizes[id(node)]


def load_job(path: str | Path) -> Job:
    """Read, expand and check a job file; relative paths are resolved from its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"job file {path} does not exist. Fix: check the --job path.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"job file {path} cannot be read: {exc}.") from None
    try:
        raw = yaml.load(text, Loader=_JobLoader)  # noqa: S506 - a SafeLoader, stricter still
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}.") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path} must be a YAML mapping with the sections source, destination, validation "
            f"and batch; found {type(raw).__name__}."
        )
    raw.setdefault("name", path.stem if path.stem != "job" else path.resolve().parent.name)
    templates = templates_of(raw)  # records name ${VAR}, never the secret it expands to
    try:
        raw = expand_env(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    job = keep_templates(parse_job(raw, origin=str(path)), templates)
    add_search_path(path.resolve().parent)  # its own transform or connector may sit beside it
    return resolve_paths(job, path.resolve().parent)


def parse_job(raw: dict[str, Any], origin: str = "job") -> Job:
    """Check a parsed job; a wrong key or value raises ConfigError naming key, value and choices."""
    try:
        return Job.model_validate(raw)
    except ValidationError as exc:
        lines = [describe_error(err) for err in exc.errors()]
        raise ConfigError(f"{origin} is not a valid job: " + " ".join(lines)) from None


def resolve_paths(job: Job, base: Path) -> Job:
    """Make the source path and SQLite URLs absolute, relative to the job file's folder."""
    source = job.source
    if isinstance(source, FileSourceConfig) and not Path(source.path).is_absolute():
        source = source.model_copy(update={"path": str(base / source.path)})
    destination = job.destination
    if isinstance(destination, SqlDestinationConfig):
        url = destination.url
        destination = destination.model_copy(
            update={"url": url.with_value(_absolute_sqlite(url.get_secret_value(), base))}
        )
    return job.model_copy(update={"source": source, "destination": destination})


def _absolute_sqlite(url: str, base: Path) -> str:
    prefix = next((p for p in ("sqlite:///", "sqlite+pysqlite:///") if url.startswith(p)), None)
    if prefix is None or url.startswith(prefix + "/") or url == prefix + ":memory:":
        return url
    return prefix + str(base / url[len(prefix) :])


# --- error messages ----------------------------------------------------------------------------


def describe_error(err: Any) -> str:
    """One sentence for one pydantic error: the key, the value found, and what is allowed."""
    path, model = _walk(Job, err["loc"])
    kind, value = err["type"], err.get("input")
    if kind == "extra_forbidden":
        key = path.rsplit(".", 1)[-1]
        allowed = [f.alias or n for n, f in model.model_fields.items()] if model else []
        hint = difflib.get_close_matches(key, allowed, n=1)
        maybe = f" Did you mean '{hint[0]}'?" if hint else ""
        return f"Unknown key '{path}' (value {_show(value)}); allowed keys here: {', '.join(allowed)}.{maybe}"
    if kind == "missing":
        return f"Missing required key '{path}'."
    if kind == "value_error" and not path:  # a check across keys names its own keys
        return str(err["msg"]).removeprefix("Value error, ") + "."
    if kind in ("union_tag_invalid", "literal_error"):
        expected = err.get("ctx", {}).get("expected_tags") or err.get("ctx", {}).get("expected")
        if kind == "union_tag_invalid":
            value = err.get("ctx", {}).get("tag", value)
            path = f"{path}.type" if path else "type"
        return f"Key '{path}' has value {_show(value)}; allowed: {expected}."
    if kind == "union_tag_not_found":
        return f"Key '{path}' needs a 'type' (one of: {_tags_at(err['loc'])})."
    return f"Key '{path}' has value {_show(value)}: {err['msg']}."


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _walk(
    model: type[BaseModel] | None, loc: tuple[Any, ...]
) -> tuple[str, type[BaseModel] | None]:
    """Follow a pydantic error location through the models, dropping union tags from the path."""
    path, parent, annotation = "", model, None
    for segment in loc:
        if annotation is not None and _union_members(annotation):
            members = _union_members(annotation)
            chosen = next((m for m in members if _tag_of(m) == segment), None)
            if chosen is not None:
                parent, annotation = chosen, None
                continue
        if parent is not None and segment not in parent.model_fields and _tag_of(parent) == segment:
            continue  # a one-member tagged union: the tag is in the location, not in the file
        if isinstance(segment, int):
            path = f"{path}[{segment}]"
            annotation = _item_type(annotation)
        elif parent is not None and segment in parent.model_fields:
            path = _join(path, segment)
            annotation = parent.model_fields[segment].annotation
        else:
            path = _join(path, segment)
            annotation = _item_type(annotation) if annotation is not None else None
        model_here = _as_model(annotation)
        parent = model_here if model_here is not None else (parent if annotation is None else None)
    return path, parent


def _strip(annotation: Any) -> Any:
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    return annotation


def _union_members(annotation: Any) -> list[type[BaseModel]]:
    annotation = _strip(annotation)
    if typing.get_origin(annotation) not in (Union, types.UnionType):
        return []
    members: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        nested = _union_members(arg)
        model = _as_model(arg)
        members += nested if nested else ([model] if model is not None else [])
    return members


def _tag_of(model: type[BaseModel]) -> Any:
    if issubclass(model, PluginConfig):
        return PLUGIN
    field = model.model_fields.get("type")
    args = typing.get_args(field.annotation) if field else ()
    return args[0] if args else None


def _as_model(annotation: Any) -> type[BaseModel] | None:
    annotation = _strip(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    members = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (Union, types.UnionType) and len(members) == 1:
        return _as_model(members[0])
    return None


def _item_type(annotation: Any) -> Any:
    annotation = _strip(annotation)
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is list and args:
        return args[0]
    if origin is dict and len(args) == 2:
        return args[1]
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _item_type(inner[0]) if len(inner) == 1 else None
    return None


def _tags_at(loc: tuple[Any, ...]) -> str:
    field = Job.model_fields.get(str(loc[0])) if loc else None
    members = _union_members(field.annotation) if field else []
    tags = [str(_tag_of(m)) for m in members if not issubclass(m, PluginConfig)]
    return ", ".join(tags + ["python", "or an installed connector's name"])
