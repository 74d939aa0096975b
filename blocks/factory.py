"""Blocks from a job's settings: its source, its destination."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from prefect.exceptions import ObjectNotFound

from batchgate.config import (
    BlockRefConfig,
    FileSourceConfig,
    Job,
    NotionSourceConfig,
    SqlDestinationConfig,
    WebflowDestinationConfig,
)
from batchgate.destinations import Destination
from batchgate.errors import ConfigError
from blocks.file_source import FileSource
from blocks.notion_source import NotionSource
from blocks.sql_destination import SqlDestination
from blocks.webflow import WebflowDestination


def source_for(job: Job) -> FileSource | NotionSource:
    if isinstance(job.source, BlockRefConfig):
        return _saved(job.source.name, (FileSource, NotionSource), "source")
    if isinstance(job.source, FileSourceConfig):
        return FileSource.from_config(job.source)
    if isinstance(job.source, NotionSourceConfig):
        return NotionSource.from_config(job.source)
    raise ConfigError(f"source.type {job.source.type!r} is not supported here")


def destination_for(job: Job) -> Destination:
    config = job.destination
    if isinstance(config, BlockRefConfig):
        return _saved(config.name, (SqlDestination, WebflowDestination), "destination")
    if isinstance(config, SqlDestinationConfig):
        return SqlDestination.from_config(config)
    if isinstance(config, WebflowDestinationConfig):
        return WebflowDestination.from_config(config, timeout_s=job.batch.attempt_timeout_s)
    raise ConfigError(
        "this job has no destination section. Fix: add destination: {type: sql, url: ...} "
        "or {type: webflow, ...} to the job file."
    )


def _saved(name: str, kinds: tuple[type[Block], ...], section: str) -> Any:
    """A block saved on the Prefect API, checked to be a connector that fits the section."""
    try:
        block = Block.load(name)
    except (ValueError, ObjectNotFound) as exc:
        raise ConfigError(
            f"{section}.name {name!r}: no such block is saved on the Prefect API ({exc}). Fix: "
            "save it first (Prefect UI > Blocks, or the block's .save(name) in Python), and name "
            "it as <block type slug>/<block name>."
        ) from None
    if not isinstance(block, kinds):
        wanted = " or ".join(k.get_block_type_slug() for k in kinds)
        raise ConfigError(f"{section}.name {name!r} is a {type(block).__name__}, not a {section}: "
                          f"use a {wanted} block.")  # fmt: skip
    return block
