"""Connectors as Prefect blocks."""

from blocks.file_source import FileSource

__all__ = ["FileSource"]
