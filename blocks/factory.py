"""Blocks from a job's settings: its source, its destination."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block, UnknownBlockType
from prefect.exceptions import ObjectNotFound

from batchgate import registry
from batchgate.config import (
    BlockRefConfig,
    FileSourceConfig,
    Job,
    NotionSourceConfig,
    PluginConfig,
    SqlDestinationConfig,
    WebflowDestinationConfig,
)
from batchgate.connectors import DestinationBase, SourceBase
from batchgate.destinations import Destination
from batchgate.errors import ConfigError
from batchgate.items import model_for
from blocks.file_source import FileSource
from blocks.notion_source import NotionSource
from blocks.sql_destination import SqlDestination
from blocks.webflow import WebflowDestination


def source_for(job: Job) -> FileSource | NotionSource:
    if isinstance(job.source, BlockRefConfig):
        return _saved(job.source.name, (FileSource, NotionSource, SourceBase), "source")
    if isinstance(job.source, PluginConfig):
        return registry.build("source", job.source)
    if isinstance(job.source, FileSourceConfig):
        return FileSource.from_config(job.source)
    if isinstance(job.source, NotionSourceConfig):
        return NotionSource.from_config(job.source)
    raise ConfigError(f"source.type {job.source.type!r} is not supported here")


def destination_for(job: Job) -> Destination:
    """The job's destination, told the shape of the job's records before it checks or writes."""
    destination = _destination(job)
    destination.bind(model_for(job).spec)  # every destination has bind (DestinationBase's, SQL's)
    return destination


def _destination(job: Job) -> Destination:
    config = job.destination
    if isinstance(config, BlockRefConfig):
        return _saved(config.name, (SqlDestination, WebflowDestination, DestinationBase),
                      "destination")  # fmt: skip
    if isinstance(config, PluginConfig):
        return registry.build("destination", config)
    if isinstance(config, SqlDestinationConfig):
        return SqlDestination.from_config(config)
    if isinstance(config, WebflowDestinationConfig):
        # a job's own attempt timeout is every request's; unset, a group write's is fitted to it
        explicit = "attempt_timeout_s" in job.batch.model_fields_set
        webflow = WebflowDestination.from_config(
            config, timeout_s=job.batch.attempt_timeout_s,
            write_timeout_s=job.batch.attempt_timeout_s if explicit else None,
        )  # fmt: skip
        webflow.allow_private_hosts = job.network.allow_private_hosts  # image URLs (issue 20)
        return webflow
    raise ConfigError(
        "this job has no destination section. Fix: add destination: {type: sql, url: ...} "
        "or {type: webflow, ...} to the job file."
    )


def _saved(name: str, kinds: tuple[type, ...], section: str) -> Any:
    """A block saved on the Prefect API, checked to be a connector that fits the section: a
    shipped block, or any block class derived from DestinationBase / SourceBase (installed
    connectors are imported first, so Prefect knows their block types)."""
    registry.import_registered(section)
    try:
        block = Block.load(name)
    except UnknownBlockType as exc:
        raise ConfigError(
            f"{section}.name {name!r}: its block class cannot be imported on this machine "
            f"({str(exc).splitlines()[0]}). Fix: install the package that defines it where the "
            f"flow runs (every worker), registered under the entry-point group "
            f"{registry.GROUPS[section]} so batchgate imports it."
        ) from None
    except (ValueError, ObjectNotFound) as exc:
        raise ConfigError(
            f"{section}.name {name!r}: no such block is saved on the Prefect API ({exc}). Fix: "
            "save it first (Prefect UI > Blocks, or the block's .save(name) in Python), and name "
            "it as <block type slug>/<block name>."
        ) from None
    if not isinstance(block, kinds):
        slugs = [k.get_block_type_slug() for k in kinds if issubclass(k, Block)]
        base = kinds[-1].__name__
        wanted = f"{' or '.join(slugs)} block, or a block of a connector derived from {base}"
        raise ConfigError(f"{section}.name {name!r} is a {type(block).__name__}, not a {section}: "
                          f"use a {wanted}.")  # fmt: skip
    if isinstance(block, kinds[-1]):  # a connector's block: its required core is there
        registry.checked(section, f"block {name!r}", type(block), block)
    return block
