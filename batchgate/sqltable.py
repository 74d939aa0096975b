"""A SQL table as a destination's layout: the table a job's records go into, created from their
fields or reflected from the user's own, and whether each record fits it before it is written.

Plain SQLAlchemy: the checks run in the dry-run (nothing is written), the layout in every write.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Double,
    Engine,
    MetaData,
    Table,
    Text,
    inspect,
)
from sqlalchemy import types as sa_types

from batchgate.errors import ConfigError
from batchgate.records import RecordSpec

# Columns batchgate keeps itself, where the table has them and no field maps to them.
BOOKKEEPING = ("draft", "created_at", "updated_at")
_COLUMN_TYPES: dict[str, Any] = {
    "string": Text, "url": Text, "integer": BigInteger, "number": Double, "boolean": Boolean,
    "date": Date, "datetime": lambda: DateTime(timezone=True), "list": Text, "json": JSON,
}  # fmt: skip
# the blog's table as it always was (the demo's cms.db and existing tables keep their shape)
_BLOG_LENGTHS = {"source_id": 200, "slug": 300, "status": 100, "category": 200,
                 "publish_date": 40, "seo_title": 200, "seo_description": 400}  # fmt: skip


class Misfit(ValueError):
    """A value its column cannot hold: args (message, fix)."""


@dataclass
class Layout:
    """Where each record field goes in one table, and what batchgate keeps beside it."""

    table: Table
    key_field: str
    key_column: str
    columns: dict[str, str]  # field -> column, the fields written
    ignored: frozenset[str] = frozenset()
    bookkeeping: tuple[str, ...] = ()
    exists: bool = True
    notes: list[str] = field(default_factory=list)
    required: frozenset[str] = frozenset()  # NOT NULL columns a record must fill (no default)
    wide_integers: bool = False  # SQLite: every INTEGER holds 64 bits

    @property
    def content_columns(self) -> list[str]:
        """Every column a version covers: all but the key and batchgate's own."""
        skip = {self.key_column, *self.bookkeeping}
        return [c.name for c in self.table.columns if c.name not in skip]

    def column_of(self, name: str) -> str | None:
        if name in self.columns:
            return self.columns[name]
        return None

    def row(self, record: dict[str, Any]) -> dict[str, Any]:
        """The record as column values (each adapted to its column)."""
        values = {self.key_column: self.key_value(record)}
        for name, value in record.items():
            column = self.columns.get(name)
            if column is not None and column != self.key_column:
                values[column] = adapt(self.table.c[column], value, self.wide_integers)
        return values

    def key_value(self, record: dict[str, Any]) -> Any:
        """The item's key as its column stores it (text, or a number in an integer column)."""
        key = str(record[self.key_field])
        column = self.table.c[self.key_column]
        if isinstance(column.type, sa_types.Integer):
            if not _integer_text(key):
                raise Misfit(f"'{key[:60]}' is not a whole number, as the integer column needs",
                             "Give the items whole-number keys, or key the table by a text "
                             "column.")  # fmt: skip
            return int(key)
        return _as_text(column.type, key)

    def _key_problem(self, record: dict[str, Any]) -> list[tuple[str, str, str]]:
        key, name, column = str(record[self.key_field]), self.key_field, self.key_column
        try:
            stored = self.key_value(record)
        except Misfit as exc:
            return [(name, f"key {exc.args[0]} (key column {column})", exc.args[1])]
        if str(stored) != key:
            return [(name, f"key '{key[:60]}' would be stored as {stored!r} in the key column "
                     f"{column}, and a rerun could not find the item by it",
                     "Give the items keys the column keeps as they are (no leading zeros or "
                     "spaces in an integer column), or key the table by a text column.")]  # fmt: skip
        return []

    def problems(self, record: dict[str, Any]) -> list[tuple[str, str, str]]:
        """(field, message, fix) for each value of the record this table cannot take."""
        out = self._key_problem(record)
        for name, value in record.items():
            if name in self.ignored or name == self.key_field:
                continue
            column = self.columns.get(name)
            if column is None:
                out.append((name, f"field '{name}' has no column in table {self.table.name}",
                            _no_column_fix(name)))  # fmt: skip
                continue
            try:
                adapt(self.table.c[column], value, self.wide_integers)
            except Misfit as exc:
                out.append((name, f"field '{name}' {exc.args[0]} (column {column})", exc.args[1]))
        filled = {self.columns[n] for n in record if n in self.columns and record[n] is not None}
        out += [(column, f"column {column} is NOT NULL with no default, and the record has no "
                 f"'{column}'", f"Give the record a {column} (the transform's output), or let "
                 "the column accept NULL or have a default.")
                for column in sorted(self.required - filled)]  # fmt: skip
        return out


def _integer_text(text: str) -> bool:
    return text.lstrip("-").isdigit() and text.isascii()


def _no_column_fix(name: str) -> str:
    return (f"Add a column for it, map it under destination.columns ({name}: <column>), or list "
            f"it under destination.ignore to leave it out on purpose.")  # fmt: skip


def layout_for(
    engine: Engine | None, spec: RecordSpec, table: str, key: str | None, columns: dict[str, str],
    ignore: list[str], create: str,
) -> Layout:  # fmt: skip
    """The table's layout: reflected when it exists, else the one a first write creates (no
    engine: the database does not exist yet)."""
    unknown_ignored = [n for n in ignore if spec.fields and n not in spec.fields]
    if unknown_ignored:
        raise ConfigError(f"destination.ignore names {', '.join(unknown_ignored)}, which the "
                          f"records do not have (their fields: {', '.join(spec.fields)}). Fix: "
                          "correct the names, or remove them.")  # fmt: skip
    key_column = key or columns.get(spec.key, spec.key)
    _distinct_columns(columns, spec, key_column)
    wide = engine is None or engine.dialect.name == "sqlite"  # None: a SQLite file not made yet
    schema, _, name = table.rpartition(".")  # schema.table names a table in another schema
    if engine is not None and inspect(engine).has_table(name, schema=schema or None):
        reflected = Table(name, MetaData(schema=schema or None), autoload_with=engine)
        layout = _reflected(reflected, spec, key_column, columns, ignore)
        layout.wide_integers = wide
        return layout
    if create == "never":
        raise ConfigError(f"destination.table {table} does not exist, and destination.create is "
                          "never. Fix: create the table, correct destination.table, or set "
                          "create: if-missing.")  # fmt: skip
    if not spec.fields:
        raise ConfigError(f"destination.table {table} does not exist, and the records' fields "
                          "are not known before they are made (a transform decides them, or no "
                          "fields: are declared), so its columns cannot be made. Fix: create the "
                          "table yourself (then create: never), or declare fields: with their "
                          "types and no transform.")  # fmt: skip
    layout = _created(name, spec, key_column, columns, ignore, schema or None)
    layout.wide_integers = wide
    return layout


def _created(
    name: str, spec: RecordSpec, key_column: str, columns: dict[str, str], ignore: list[str],
    schema: str | None = None,
) -> Layout:  # fmt: skip
    mapping = {f: columns.get(f, f) for f in spec.fields if f not in ignore}
    mapping[spec.key] = key_column
    table = Table(name, MetaData(schema=schema))
    blog = spec.key == "source_id" and "body_html" in spec.fields
    for field_name, column in mapping.items():
        kind = spec.fields.get(field_name, "string")
        length = _BLOG_LENGTHS.get(column) if blog else None
        sql_type = sa_types.String(length) if length else _COLUMN_TYPES[kind]()
        if column == key_column:
            table.append_column(Column(column, sql_type if length else Text, primary_key=True))
        else:
            table.append_column(Column(column, sql_type))
    table.append_column(Column("draft", Boolean, nullable=False, default=True))
    table.append_column(Column("created_at", DateTime(timezone=True), nullable=False))
    table.append_column(Column("updated_at", DateTime(timezone=True), nullable=False))
    kept = {f: c for f, c in mapping.items()}
    note = (f"Table {name} does not exist yet: the first write creates it with the columns "
            f"{', '.join(kept.values())} (key {key_column}).")  # fmt: skip
    return Layout(table, spec.key, key_column, kept, frozenset(ignore), BOOKKEEPING, False, [note])


def _reflected(
    table: Table, spec: RecordSpec, key_column: str, columns: dict[str, str], ignore: list[str]
) -> Layout:
    names = {c.name for c in table.columns}
    where = f"table {table.name}"
    if key_column not in names:
        raise ConfigError(f"destination.key: {where} has no column {key_column} to key the items "
                          f"by (its columns: {', '.join(sorted(names))}). Fix: set "
                          "destination.key to the column that holds the item's id, or map the id "
                          "field under destination.columns.")  # fmt: skip
    if not _unique(table, key_column):
        raise ConfigError(f"destination.key: column {key_column} of {where} is neither its primary "
                          "key nor unique, so an item cannot be upserted by it (a rerun would "
                          f"duplicate rows). Fix: add a unique constraint on {key_column}, or "
                          "name a unique column as destination.key.")  # fmt: skip
    wrong = {f: c for f, c in columns.items() if c not in names}
    if wrong:
        shown = ", ".join(f"{f} -> {c}" for f, c in wrong.items())
        raise ConfigError(f"destination.columns maps to columns {where} lacks: {shown} (its "
                          f"columns: {', '.join(sorted(names))}). Fix: correct the column names.")  # fmt: skip
    mapping: dict[str, str] = {}
    missing: list[str] = []
    for name in spec.fields or {}:
        if name in ignore:
            continue
        column = columns.get(name, key_column if name == spec.key else name)
        (mapping.__setitem__(name, column) if column in names else missing.append(name))
    if missing:
        raise ConfigError(f"{where} has no column for the field(s) {', '.join(missing)} (its "
                          f"columns: {', '.join(sorted(names))}); nothing would hold them. Fix: "
                          "add the columns, map each under destination.columns (field: column), "
                          "or list them under destination.ignore to leave them out on "
                          "purpose.")  # fmt: skip
    if not spec.fields:  # a transform or untyped columns: each record's fields decide
        mapping = {c: c for c in names}
        mapping.update(columns)
        mapping[spec.key] = key_column
    mapping[spec.key] = key_column
    mapped = set(mapping.values()) if spec.fields else set(columns.values()) | {key_column}
    keep = tuple(b for b in BOOKKEEPING if b in names and b not in mapped
                 and _bookkeeping_fits(table.c[b]))  # fmt: skip
    unfilled = [c.name for c in table.columns if _needs_value(c) and c.name not in
                mapping.values() and c.name not in keep]  # fmt: skip
    if unfilled:
        raise ConfigError(f"{where} has NOT NULL column(s) {', '.join(unfilled)} with no default "
                          "that no field fills: every insert would be refused. Fix: map a field "
                          "to each under destination.columns, or give the column a default.")  # fmt: skip
    required: frozenset[str] = frozenset()
    if not spec.fields:  # each record must fill what the table needs
        required = frozenset(c.name for c in table.columns if _needs_value(c)
                             and c.name != key_column and c.name not in keep)  # fmt: skip
    notes = [f"Writes the existing table {table.name}, keyed by {key_column}."]
    if keep:
        notes.append(f"batchgate also sets the table's {', '.join(keep)} column(s).")
    if "draft" not in keep:
        notes.append("The table has no draft column: a sample's rows are ordinary rows, visible "
                     "as written, until the sample is approved or rolled back.")  # fmt: skip
    if not spec.fields:
        mapping = {f: c for f, c in mapping.items() if f not in ignore}
    return Layout(table, spec.key, key_column, mapping, frozenset(ignore), keep, True, notes,
                  required)  # fmt: skip


def _distinct_columns(columns: dict[str, str], spec: RecordSpec, key_column: str) -> None:
    """Two fields into one column would keep one of them: a job error, never a silent loss."""
    owners: dict[str, list[str]] = {}
    for name in dict.fromkeys([*spec.fields, *columns]):
        column = key_column if name == spec.key else columns.get(name, name)
        owners.setdefault(column, []).append(name)
    shared = {c: names for c, names in owners.items() if len(names) > 1}
    if shared:
        shown = "; ".join(f"{', '.join(n)} -> {c}" for c, n in shared.items())
        raise ConfigError(f"destination.columns sends several fields into one column ({shown}): "
                          "only one value could be kept. Fix: give each field its own column, or "
                          "list the others under destination.ignore.")  # fmt: skip


def _unique(table: Table, column: str) -> bool:
    if [c.name for c in table.primary_key.columns] == [column]:
        return True
    for constraint in table.constraints:
        cols = [c.name for c in getattr(constraint, "columns", [])]
        if cols == [column] and type(constraint).__name__ == "UniqueConstraint":
            return True
    return any(i.unique and [c.name for c in i.columns] == [column] for i in table.indexes)


def _needs_value(column: Column) -> bool:
    """NOT NULL with no default of any kind: an insert must give it a value."""
    if column.nullable or column.default is not None or column.server_default is not None:
        return False
    if column.primary_key and isinstance(column.type, sa_types.Integer):
        return False  # an integer primary key numbers itself (SERIAL, INTEGER PRIMARY KEY)
    return column.computed is None and column.identity is None


def _bookkeeping_fits(column: Column) -> bool:
    if column.name == "draft":
        return isinstance(column.type, sa_types.Boolean | sa_types.Integer)
    return isinstance(column.type, sa_types.DateTime | sa_types.String | sa_types.Text)


# --- values ------------------------------------------------------------------------------------


def adapt(column: Column, value: Any, wide_integers: bool = False) -> Any:
    """The value as its column stores it; Misfit when the column cannot hold it."""
    if value is None:
        if not column.nullable and not column.primary_key:
            raise Misfit("is empty, and the column is NOT NULL",
                         "Give the item a value, or let the column accept NULL.")  # fmt: skip
        return None
    kind = column.type
    if isinstance(kind, sa_types.JSON):
        return json.loads(json.dumps(value, default=_jsonable))
    if isinstance(kind, sa_types.Boolean):
        if isinstance(value, bool):
            return value
        raise Misfit(f"is {_show(value)}, not true or false", "Write true or false.")
    if isinstance(kind, sa_types.Integer):
        if isinstance(value, int) and not isinstance(value, bool):
            return _in_range(kind, value, wide_integers)
        if isinstance(value, float | Decimal) and value == int(value):
            return _in_range(kind, int(value), wide_integers)
        raise Misfit(f"is {_show(value)}, not a whole number",
                     "Write a whole number (declare the field as integer under fields:).")  # fmt: skip
    if isinstance(kind, sa_types.Numeric | sa_types.Float):
        if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise Misfit(f"is {value!r}", "Write a finite number.")
            return _within_precision(kind, value)
        raise Misfit(f"is {_show(value)}, not a number",
                     "Write a number (declare the field as number under fields:).")  # fmt: skip
    if isinstance(kind, sa_types.DateTime):
        return _as_datetime(value)
    if isinstance(kind, sa_types.Date):
        return _as_date(value)
    return _as_text(kind, value)


def _in_range(kind: Any, value: int, wide: bool) -> int:
    if wide or isinstance(kind, sa_types.BigInteger):
        bits = 64
    else:
        bits = 16 if isinstance(kind, sa_types.SmallInteger) else 32
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        raise Misfit(f"is {value}, too large for a {bits}-bit integer column",
                     "Use a bigger column type, or correct the value.")  # fmt: skip
    return value


def _within_precision(kind: Any, value: int | float | Decimal) -> int | float | Decimal:
    """numeric(p, s) holds p - s digits before the point: more is refused by the database."""
    precision, scale = getattr(kind, "precision", None), getattr(kind, "scale", None) or 0
    fixed = isinstance(kind, sa_types.Numeric) and not isinstance(kind, sa_types.Float)
    if fixed and precision and abs(Decimal(str(value))) >= Decimal(10) ** (precision - scale):
        raise Misfit(f"is {value}, too large for numeric({precision}, {scale})",
                         f"Keep it under {10 ** (precision - scale):,}, or widen the column.")  # fmt: skip
    return value


def _as_text(kind: Any, value: Any) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | tuple | dict):
        text = json.dumps(value, default=_jsonable, ensure_ascii=False)
    elif isinstance(value, date | datetime):
        text = value.isoformat()
    else:
        text = str(value).lower() if isinstance(value, bool) else str(value)
    if "\x00" in text:  # PostgreSQL refuses it in text; no report should carry it either
        raise Misfit("holds a NUL character (U+0000)", "Remove the NUL character from the value.")
    length = getattr(kind, "length", None)
    if length and len(text) > length:
        raise Misfit(f"is {len(text):,} characters, longer than the column's {length} "
                     f"(varchar({length}))", f"Shorten it to {length} characters, or widen the "
                     "column.")  # fmt: skip
    return text


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            pass
    raise Misfit(f"is {_show(value)}, not a date", "Write the date as YYYY-MM-DD.")


def _as_datetime(value: Any) -> datetime:
    """A timestamp, in UTC when it has an offset (SQLite would drop the offset, not convert)."""
    moment = _parsed_datetime(value)
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment


def _parsed_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
    raise Misfit(f"is {_show(value)}, not a timestamp", "Write an ISO 8601 timestamp.")


def _jsonable(value: Any) -> Any:
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def version_of(row: Any, columns: list[str]) -> str:
    """What a row holds, as a hash of every content column (not batchgate's times or flag)."""
    blob = json.dumps([_normal(row[name]) for name in columns], default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def _normal(value: Any) -> Any:
    """One form for a value however the driver returns it (a JSON column's text or object)."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value == value.to_integral() else str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value
