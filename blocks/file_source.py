"""File source: a CSV, JSON (a list of objects), JSON-lines or Parquet file read with pandas.

`iter_chunks` reads it a chunk at a time (pandas chunks for CSV, Parquet row batches, JSON-lines
pages), so a run never holds every item; a JSON list is parsed whole, then typed in chunks.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

import pandas as pd
from prefect.blocks.core import Block
from pydantic import Field

from batchgate.config import FileSourceConfig
from batchgate.connectors import SourceBase, SourceCapabilities
from batchgate.errors import SourceError
from batchgate.schema import CONTROL, Schema, build_items_from_columns, to_bool
from batchgate.sources import SourceBatch

Format = Literal["csv", "json", "jsonl", "parquet"]
CHUNK_SIZE = 5000  # items typed and validated at a time
_UNITS = {"csv": "row", "json": "item", "jsonl": "line", "parquet": "row"}
_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class FileSource(SourceBase, Block):
    """Reads items from a CSV, JSON, JSON-lines or Parquet file, with an optional equality filter."""

    capabilities: ClassVar[SourceCapabilities] = SourceCapabilities(since=True)

    _block_type_name = "Batchgate File Source"
    _block_type_slug = "batchgate-file-source"
    _description = (
        "Items for a batchgate job from a CSV, JSON (a list of objects), JSON-lines (an object "
        "a line) or Parquet file. "
        "CSV tags are comma-separated and an empty cell is missing; JSON tags are a list and "
        "missing is null."
    )

    path: str = Field(description="Path of the file to read.")
    format: Format | None = Field(
        default=None,
        description="csv, json, jsonl or parquet; taken from the extension when unset.",
    )
    filter: dict[str, Any] = Field(
        default_factory=dict,
        description="Keep only rows whose column equals the value, or one of a list of values.",
    )
    max_cell_size: int = Field(
        default=1_000_000,
        description="Largest cell accepted, in characters; a bigger one usually means a broken quote.",
    )

    @classmethod
    def from_config(cls, config: FileSourceConfig) -> FileSource:
        return cls(
            path=config.path,
            format=config.format,
            filter=dict(config.filter),
            max_cell_size=config.max_cell_bytes,
        )

    @property
    def name(self) -> str:
        return Path(self.path).name

    def iter_chunks(
        self, schema: Schema, since: datetime | None = None, chunk_size: int = CHUNK_SIZE
    ) -> Iterator[SourceBatch]:
        """The items of `read`, a chunk of at most `chunk_size` source rows at a time, numbered
        (seq) across chunks; a SourceError may come at any chunk."""
        fmt = self._format()
        frames = {"csv": self._csv_chunks, "json": self._json_chunks,
                  "jsonl": self._jsonl_chunks, "parquet": self._parquet_chunks}[fmt](chunk_size)  # fmt: skip
        prefix = f"{self.name} {_UNITS[fmt]}"
        description = f"{self.name} ({fmt.upper()})"
        if since is not None:
            description += f", edited since {since:%Y-%m-%d %H:%M:%S}"
        rows = seq = 0
        for frame in frames:
            frame = frame.reset_index(drop=True)
            if rows == 0:
                self._check_columns(frame, schema)
            self._check_cell_sizes(frame, rows)
            total = len(frame)
            frame = self._apply_filter(frame)
            locations = [f"{prefix} {rows + int(i) + 1}" for i in frame.index]
            columns = {str(name): frame[name].tolist() for name in frame.columns}
            header = tuple(columns)
            del frame
            items = build_items_from_columns(locations, columns, schema)
            for item in items:  # numbered across chunks, as one read numbers them
                if seq:
                    item.seq += seq
                    if not item.data.get(schema.id_field):
                        item.id = f"row-{item.seq + 1}"
            rows, seq = rows + total, seq + len(items)
            if since is not None:
                items = [i for i in items if not _before(i.data.get("last_edited"), since)]
            yield SourceBatch(items=items, total_rows=total, filtered_out=total - len(items),
                              description=description, columns=header)  # fmt: skip
        if rows == 0:
            raise SourceError(
                f"{self.path} has a header but no rows. Fix: add items to the file, "
                "or point source.path at the right file."
            )

    # --- formats --------------------------------------------------------------------------

    def _format(self) -> Format:
        if self.format:
            return self.format
        suffix = Path(self.path).suffix.lower()
        if suffix not in _EXTENSIONS:
            raise SourceError(
                f"{self.path}: cannot tell the format from the extension '{suffix}'. "
                "Fix: set source.format to csv, json, jsonl or parquet."
            )
        return _EXTENSIONS[suffix]

    def _bytes(self) -> bytes:
        try:
            data = Path(self.path).read_bytes()
        except FileNotFoundError:
            raise SourceError(
                f"source file {self.path} does not exist. Fix: check source.path in the job file "
                "(relative paths start at the job file's folder)."
            ) from None
        except IsADirectoryError:
            raise SourceError(
                f"source.path {self.path} is a folder. Fix: point it at a file."
            ) from None
        except OSError as exc:
            raise SourceError(f"source file {self.path} cannot be read: {exc.strerror}.") from None
        if not data.strip():
            raise SourceError(
                f"{self.path} is empty: it has no header and no rows. Fix: export the data again, "
                "or point source.path at the right file."
            )
        return data

    def _text(self, data: bytes, csv_header: bool = False) -> str:
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            where = f"line {line}"
            if csv_header:
                records = list(csv.reader(io.StringIO(data[: exc.start].decode("utf-8-sig"))))
                header, row = (records[0] if records else []), len(records) - 1
                index = max(len(records[-1]) - 1, 0) if records else 0
                column = header[index] if index < len(header) else f"#{index + 1}"
                where = f"line {line} (row {row}), column '{column}'"
            bad = data[exc.start : exc.start + 4].hex(" ")
            raise SourceError(
                f"{self.path} {where}: byte(s) {bad} are not valid UTF-8. Fix: save the file as "
                "UTF-8 (in a spreadsheet: Save As, CSV UTF-8), or re-export it from the source system."
            ) from None

    def _check_file(self) -> None:
        """The errors of `_bytes` (missing, a folder, unreadable, empty) without reading it all."""
        try:
            with open(self.path, "rb") as handle:
                head = handle.read(65536)
                whole = not handle.read(1)
        except OSError:
            self._bytes()  # raises the error that names the fix
            raise
        if whole and not head.strip():
            self._bytes()

    def _csv_chunks(self, chunk_size: int) -> Iterator[pd.DataFrame]:
        self._check_file()
        try:
            reader = pd.read_csv(
                self.path,
                encoding="utf-8-sig",
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                chunksize=chunk_size,
            )
            with reader:
                yield from reader
        except pd.errors.EmptyDataError:
            raise SourceError(f"{self.path} is empty. Fix: export the data again.") from None
        except UnicodeDecodeError:
            data = self._bytes()
            self._text(data, csv_header=True)  # raises, naming the line, row and column
            raise
        except pd.errors.ParserError as exc:
            data = self._bytes()
            raise SourceError(
                self._describe_ragged_row(self._text(data))
                or (f"{self.path} is not a well-formed CSV file: {exc}. Fix: check its quoting.")
            ) from None

    def _describe_ragged_row(self, text: str) -> str | None:
        reader = csv.reader(io.StringIO(text))
        header = next(reader, [])
        for row, fields in enumerate(reader, start=1):
            if len(fields) > len(header):
                return (
                    f"{self.path} row {row} (line {reader.line_num}) has {len(fields)} fields where "
                    f"the header has {len(header)}; the extra value is {fields[len(header)]!r}. "
                    'Fix: quote any cell that holds a comma, e.g. "Data, AI", or remove the extra '
                    "separators in that row."
                )
        return None

    def _json_chunks(self, chunk_size: int) -> Iterator[pd.DataFrame]:
        """A JSON list is parsed whole (json has no streaming parser); use JSON-lines for big files."""
        records = self._read_json()
        columns = list(dict.fromkeys(key for record in records for key in record))
        for i in range(0, len(records), chunk_size):
            part = records[i : i + chunk_size]
            yield pd.DataFrame.from_records(part, columns=columns).astype(object)

    def _jsonl_chunks(self, chunk_size: int) -> Iterator[pd.DataFrame]:
        """An object a line, parsed a page of `chunk_size` lines at a time; blank lines are skipped."""
        self._check_file()
        columns: dict[str, None] = {}
        page: list[dict[str, Any]] = []
        with open(self.path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                page.append(self._json_line(raw, number))
                if len(page) >= chunk_size:
                    yield self._page_frame(page, columns)
                    page = []
        if page:
            yield self._page_frame(page, columns)

    def _json_line(self, raw: bytes, number: int) -> dict[str, Any]:
        try:
            record = json.loads(raw.decode("utf-8-sig" if number == 1 else "utf-8"))
        except UnicodeDecodeError:
            raise SourceError(
                f"{self.path} line {number} is not valid UTF-8. Fix: save the file as UTF-8."
            ) from None
        except json.JSONDecodeError as exc:
            raise SourceError(
                f"{self.path} line {number}, column {exc.colno} is not valid JSON: {exc.msg}. "
                "Fix: a JSON-lines file holds one JSON object on each line."
            ) from None
        if not isinstance(record, dict):
            raise SourceError(
                f"{self.path} line {number} is a JSON {type(record).__name__}, not an object. "
                "Fix: every line must be an object with the item's fields."
            )
        return record

    @staticmethod
    def _page_frame(page: list[dict[str, Any]], columns: dict[str, None]) -> pd.DataFrame:
        for record in page:
            columns.update(dict.fromkeys(record))
        return pd.DataFrame.from_records(page, columns=list(columns)).astype(object)

    def _read_json(self) -> list[dict[str, Any]]:
        data = self._bytes()
        text = self._text(data)
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SourceError(
                f"{self.path} line {exc.lineno}, column {exc.colno} is not valid JSON: {exc.msg}. "
                "Fix: the file must hold one JSON list of objects."
            ) from None
        if not isinstance(records, list):
            raise SourceError(
                f"{self.path} holds a JSON {type(records).__name__}; a list of objects is needed, "
                'e.g. [{"id": "p1", "title": "..."}].'
            )
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                raise SourceError(
                    f"{self.path} item {index + 1} is a JSON {type(record).__name__}, not an object. "
                    "Fix: every element of the list must be an object with the item's fields."
                )
        if not records:
            raise SourceError(f"{self.path} is an empty list. Fix: add items to the file.")
        return records

    def _parquet_chunks(self, chunk_size: int) -> Iterator[pd.DataFrame]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(self.path)
        if not path.exists():
            self._bytes()  # raises the missing-file error
        try:
            parquet = pq.ParquetFile(path)
            for batch in parquet.iter_batches(batch_size=chunk_size):
                # through a table: the file's pandas metadata types the columns as read_parquet does
                yield pa.Table.from_batches([batch]).to_pandas().astype(object)
        except Exception as exc:  # pyarrow raises many types for a damaged file
            raise SourceError(
                f"{self.path} cannot be read as Parquet ({type(exc).__name__}: {exc}). "
                "Fix: re-export the file, or set source.format if it is not Parquet."
            ) from None

    # --- checks ---------------------------------------------------------------------------

    def _check_columns(self, frame: pd.DataFrame, schema: Schema) -> None:
        for column in frame.columns:
            found = CONTROL.search(str(column))
            if found:
                shown = CONTROL.sub("\ufffd", str(column))
                raise SourceError(
                    f"{self.path}: the header '{shown}' holds the control character "
                    f"U+{ord(found.group()):04X}. Fix: rename the column without it."
                )
        missing = [c for c in schema.required if c not in frame.columns]
        missing += [c for c in self.filter if c not in frame.columns and c not in missing]
        if missing:
            found = ", ".join(map(str, frame.columns))
            raise SourceError(
                f"{self.path} lacks the column(s) {', '.join(missing)} that the "
                f"{_needs(schema)} or the filter needs. Columns found: {found}. Fix: add the column(s) to the "
                "file header (the values may be empty), or rename the matching columns."
            )

    def _check_cell_sizes(self, frame: pd.DataFrame, offset: int = 0) -> None:
        for column in frame.columns:
            values = frame[column]
            if isinstance(values.dtype, pd.StringDtype):
                sizes = values.str.len()
            else:
                sizes = values.map(lambda v: len(v) if isinstance(v, str) else 0)
            if len(sizes) and sizes.max() > self.max_cell_size:
                row = offset + int(sizes.idxmax()) + 1
                size = int(sizes.max())
                raise SourceError(
                    f"{self.path} row {row}, column '{column}' holds {size:,} characters, over the "
                    f"limit of {self.max_cell_size:,} (source.max_cell_bytes). This usually means an "
                    "unclosed quote swallowed the following rows. Fix: close the quote in that row; "
                    "if the content is real, raise source.max_cell_bytes."
                )

    def _apply_filter(self, frame: pd.DataFrame) -> pd.DataFrame:
        for column, expected in self.filter.items():
            wanted = expected if isinstance(expected, list) else [expected]
            frame = frame[frame[column].map(lambda v, w=wanted: _matches(v, w))]
        return frame


def _matches(value: Any, wanted: list[Any]) -> bool:
    for option in wanted:
        if isinstance(option, bool):
            try:
                if to_bool(value) is option:
                    return True
            except ValueError:
                continue
        elif value is not None and str(value).strip() == str(option):
            return True
    return False


def _before(edited: Any, since: datetime) -> bool:
    if not isinstance(edited, datetime):
        return False
    if edited.tzinfo is None:
        edited = edited.replace(tzinfo=UTC)
    return edited < since


def _needs(schema: Schema) -> str:
    if schema.name == "fields":
        return "job's fields (fields:, id_field)"
    if schema.name == "none":
        return "id_field"
    return f"'{schema.name}' preset"
