"""File source: a CSV, JSON (a list of objects) or Parquet file read with pandas."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from prefect.blocks.core import Block
from pydantic import Field

from batchgate.config import FileSourceConfig
from batchgate.errors import SourceError
from batchgate.schema import CONTROL, Schema, build_items_from_columns, to_bool
from batchgate.sources import SourceBatch

Format = Literal["csv", "json", "parquet"]
_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class FileSource(Block):
    """Reads items from a CSV, JSON or Parquet file, with an optional equality filter."""

    _block_type_name = "Batchgate File Source"
    _block_type_slug = "batchgate-file-source"
    _description = (
        "Items for a batchgate job from a CSV, JSON (a list of objects) or Parquet file. "
        "CSV tags are comma-separated and an empty cell is missing; JSON tags are a list and "
        "missing is null."
    )

    path: str = Field(description="Path of the file to read.")
    format: Format | None = Field(
        default=None, description="csv, json or parquet; taken from the extension when unset."
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

    def read(self, schema: Schema, since: datetime | None = None) -> SourceBatch:
        """Read every row, check columns and cell sizes, apply the filter, type the items.

        `since` keeps the items whose last_edited is at or after it (an incremental sync); an
        item without a last_edited value is kept."""
        fmt = self._format()
        frame = {"csv": self._read_csv, "json": self._read_json, "parquet": self._read_parquet}[
            fmt
        ]()
        if frame.empty:
            raise SourceError(
                f"{self.path} has a header but no rows. Fix: add items to the file, "
                "or point source.path at the right file."
            )
        self._check_columns(frame, schema)
        self._check_cell_sizes(frame)
        total = len(frame)
        frame = self._apply_filter(frame)
        unit = "item" if fmt == "json" else "row"
        prefix = f"{self.name} {unit}"
        locations = [f"{prefix} {int(i) + 1}" for i in frame.index]
        columns = {str(name): frame[name].tolist() for name in frame.columns}
        del frame
        items = build_items_from_columns(locations, columns, schema)
        description = f"{self.name} ({fmt.upper()})"
        if since is not None:
            items = [i for i in items if not _before(i.data.get("last_edited"), since)]
            description += f", edited since {since:%Y-%m-%d %H:%M:%S}"
        return SourceBatch(
            items=items,
            total_rows=total,
            filtered_out=total - len(items),
            description=description,
        )

    # --- formats --------------------------------------------------------------------------

    def _format(self) -> Format:
        if self.format:
            return self.format
        suffix = Path(self.path).suffix.lower()
        if suffix not in _EXTENSIONS:
            raise SourceError(
                f"{self.path}: cannot tell the format from the extension '{suffix}'. "
                "Fix: set source.format to csv, json or parquet."
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

    def _read_csv(self) -> pd.DataFrame:
        data = self._bytes()
        self._text(data, csv_header=True)  # checks the encoding; pandas parses the bytes itself
        try:
            return pd.read_csv(
                io.BytesIO(data),
                encoding="utf-8-sig",
                dtype=str,
                keep_default_na=False,
                na_filter=False,
            )
        except pd.errors.EmptyDataError:
            raise SourceError(f"{self.path} is empty. Fix: export the data again.") from None
        except pd.errors.ParserError as exc:
            raise SourceError(
                self._describe_ragged_row(data.decode("utf-8-sig"))
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

    def _read_json(self) -> pd.DataFrame:
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
        return pd.DataFrame.from_records(records).astype(object)

    def _read_parquet(self) -> pd.DataFrame:
        path = Path(self.path)
        if not path.exists():
            self._bytes()  # raises the missing-file error
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types for a damaged file
            raise SourceError(
                f"{self.path} cannot be read as Parquet ({type(exc).__name__}: {exc}). "
                "Fix: re-export the file, or set source.format if it is not Parquet."
            ) from None
        return frame.astype(object)

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
                f"{self.path} lacks the column(s) {', '.join(missing)} that the '{schema.name}' "
                f"preset or the filter needs. Columns found: {found}. Fix: add the column(s) to the "
                "file header (the values may be empty), or rename the matching columns."
            )

    def _check_cell_sizes(self, frame: pd.DataFrame) -> None:
        for column in frame.columns:
            values = frame[column]
            if isinstance(values.dtype, pd.StringDtype):
                sizes = values.str.len()
            else:
                sizes = values.map(lambda v: len(v) if isinstance(v, str) else 0)
            if len(sizes) and sizes.max() > self.max_cell_size:
                row = int(sizes.idxmax()) + 1
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
