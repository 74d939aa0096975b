"""Blocks from a job's settings: its source, its destination."""

from __future__ import annotations

from batchgate.config import (
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
    if isinstance(job.source, FileSourceConfig):
        return FileSource.from_config(job.source)
    if isinstance(job.source, NotionSourceConfig):
        return NotionSource.from_config(job.source)
    raise ConfigError(f"source.type {job.source.type!r} is not supported here")


def destination_for(job: Job) -> Destination:
    config = job.destination
    if isinstance(config, SqlDestinationConfig):
        return SqlDestination.from_config(config)
    if isinstance(config, WebflowDestinationConfig):
        return WebflowDestination.from_config(config, timeout_s=job.batch.attempt_timeout_s)
    raise ConfigError(
        "this job has no destination section. Fix: add destination: {type: sql, url: ...} "
        "or {type: webflow, ...} to the job file."
    )
