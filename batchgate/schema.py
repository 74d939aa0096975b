"""Item schemas: which columns a preset needs and how raw cell values become typed fields.

A cell that cannot be converted does not stop the batch: the item keeps the field as missing and
carries a type error, which the validation turns into a blocked issue naming row, column and fix.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit

from batchgate.models import Item

_TRUE = {"true", "yes", "y", "1", "t", "on"}
_FALSE = {"false", "no", "n", "0", "f", "off"}


class CellError(ValueError):
    """A cell's value does not fit its column's type; args: (message, fix)."""


def _is_missing(value: Any) -> bool:
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CellError(
            f"expected text, found {type(value).__name__} {value!r}", "Write the value as text."
        )
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def to_id(value: Any) -> str:
    return to_text(value).strip()


def to_tags(value: Any) -> list[str]:
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    if hasattr(value, "tolist"):  # numpy arrays from Parquet
        value = value.tolist()
    if isinstance(value, list | tuple):
        tags = []
        for tag in value:
            if not isinstance(tag, str):
                raise CellError(
                    f"expected a list of text tags, found {tag!r} in it",
                    'Write tags as text, e.g. ["python", "data"] or "python, data".',
                )
            if tag.strip():
                tags.append(tag.strip())
        return tags
    raise CellError(
        f"expected tags as a comma-separated text or a list, found {value!r}",
        'Write tags as "python, data" (CSV) or ["python", "data"] (JSON).',
    )


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalars
        value = value.item()
        if isinstance(value, bool):
            return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise CellError(f"expected true or false, found {value!r}", "Write true or false.")


def to_int(value: Any) -> int:
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    number: float | int
    if isinstance(value, bool):
        raise CellError(
            f"expected a whole number, found {value!r}",
            "Write a whole number of pixels, e.g. 1600.",
        )
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            parsed = float(value.strip())
        except ValueError:
            raise CellError(
                f"expected a whole number, found {value!r}",
                "Write a whole number of pixels, e.g. 1600.",
            ) from None
        if not parsed.is_integer():
            raise CellError(
                f"expected a whole number, found {value!r}", "Write a whole number, e.g. 1600."
            )
        number = int(parsed)
    else:
        raise CellError(
            f"expected a whole number, found {value!r}", "Write a whole number, e.g. 1600."
        )
    if number <= 0:
        raise CellError(
            f"expected a positive number, found {number}", "Write the size in pixels, above 0."
        )
    return int(number)


def to_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if hasattr(value, "to_pydatetime"):
        return value.to_pydatetime().date()
    text = to_text(value).strip()
    try:
        return date.fromisoformat(text[:10]) if len(text) >= 10 else date.fromisoformat(text)
    except ValueError:
        raise CellError(
            f"expected a date like 2025-10-28, found {value!r}", "Write the date as YYYY-MM-DD."
        ) from None


def to_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if hasattr(value, "to_pydatetime"):
        return value.to_pydatetime()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    text = to_text(value).strip()
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CellError(
            f"expected a timestamp like 2025-10-28T10:00:00Z, found {value!r}",
            "Write an ISO 8601 timestamp.",
        ) from None


def to_integer(value: Any) -> int:
    """Any whole number (negative and zero included), from a number or its text."""
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, bool):
        raise CellError(f"expected a whole number, found {value!r}", "Write a whole number, e.g. 12.")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        try:
            return int(text)
        except ValueError:
            try:
                parsed = float(text)
            except ValueError:
                parsed = math.nan
            if math.isfinite(parsed) and parsed.is_integer():
                return int(parsed)
    raise CellError(f"expected a whole number, found {value!r}", "Write a whole number, e.g. 12.")


def to_number(value: Any) -> int | float:
    """A finite number (an int stays an int), from a number or its text."""
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, bool):
        raise CellError(f"expected a number, found {value!r}", "Write a number, e.g. 19.99.")
    if isinstance(value, int):
        return value
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, float) and math.isfinite(number):
        return number
    raise CellError(f"expected a number, found {value!r}", "Write a number, e.g. 19.99.")


def to_list(value: Any) -> list[Any]:
    """A list: a JSON list, or text as a comma-separated list."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                raise CellError(f"expected a list, found {_short(value)}",
                                'Write a JSON list, e.g. ["a", "b"], or "a, b".') from None  # fmt: skip
            if isinstance(parsed, list):
                return parsed
        return [t.strip() for t in value.split(",") if t.strip()]
    if hasattr(value, "tolist"):  # numpy arrays from Parquet
        value = value.tolist()
    if isinstance(value, list | tuple):
        return list(value)
    raise CellError(f"expected a list, found {_short(value)}", 'Write "a, b" or ["a", "b"].')


def to_url(value: Any) -> str:
    """An absolute http(s) URL with a host."""
    text = to_text(value).strip()
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise CellError(f"expected an http(s) URL, found {_short(text)}",
                        "Write a full URL, e.g. https://example.com/a.png.")  # fmt: skip
    return text


def to_json(value: Any) -> Any:
    """Any JSON value: a dict or list as it is, text parsed as JSON."""
    if hasattr(value, "tolist") and not isinstance(value, str):
        value = value.tolist()
    if isinstance(value, dict | list | int | float | bool):
        return value
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise CellError(f"expected JSON, found {_short(value)}",
                            'Write valid JSON, e.g. {"color": "red"}.') from None  # fmt: skip
    raise CellError(f"expected JSON, found {type(value).__name__}", "Write valid JSON.")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


Converter = Callable[[Any], Any]

CONVERTERS: dict[str, Converter] = {
    "string": to_text, "integer": to_integer, "number": to_number, "boolean": to_bool,
    "date": to_date, "datetime": to_datetime, "list": to_list, "url": to_url, "json": to_json,
}  # fmt: skip


@dataclass(frozen=True)
class Schema:
    """Columns of a preset: the required ones, and a converter per known column."""

    name: str
    required: tuple[str, ...]
    converters: Mapping[str, Converter]
    id_field: str = "id"
    title_field: str | None = "title"
    only_declared: bool = False  # keep only the declared columns (the job's own `fields:`)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.converters)


def declared(fields: Mapping[str, str], id_field: str, title_field: str | None) -> Schema:
    """The schema of a job's own fields: every one required, each typed by its converter."""
    converters = {name: CONVERTERS[kind] for name, kind in fields.items()}
    converters[id_field] = to_id
    return Schema("fields", tuple(dict.fromkeys([id_field, *fields])), converters, id_field,
                  title_field, only_declared=True)  # fmt: skip


BLOG = Schema(
    name="blog",
    required=("id", "title", "slug", "category", "hero_image_url"),
    converters={
        "id": to_id,
        "title": to_text,
        "slug": to_text,
        "status": to_text,
        "category": to_text,
        "tags": to_tags,
        "featured": to_bool,
        "publish_date": to_date,
        "hero_image_url": to_text,
        "hero_width": to_int,
        "hero_height": to_int,
        "summary": to_text,
        "body_markdown": to_text,
        "last_edited": to_datetime,
    },
)
GENERIC = Schema(name="none", required=("id",), converters={"id": to_id}, title_field=None)
SCHEMAS = {"blog": BLOG, "none": GENERIC}


def untyped(id_field: str, title_field: str | None) -> Schema:
    """No fields declared: the id is required, every other column is kept as read."""
    return Schema("none", (id_field,), {id_field: to_id}, id_field, title_field)


def build_items(rows: Iterable[tuple[str, Mapping[str, Any]]], schema: Schema) -> list[Item]:
    """Type each raw row (location, values); unconvertible cells become type errors, not exceptions."""
    rows = list(rows)
    names: list[str] = list(dict.fromkeys(c for _, raw in rows for c in raw))
    columns = {name: [raw.get(name) for _, raw in rows] for name in names}
    return build_items_from_columns([location for location, _ in rows], columns, schema)


def build_items_from_columns(
    locations: list[str], columns: Mapping[str, list[Any]], schema: Schema
) -> list[Item]:
    """The same, column by column: a converter runs over a whole column at a time (faster)."""
    errors: dict[int, list[tuple[str, str, str]]] = {}
    typed: dict[str, list[Any]] = {}
    if schema.only_declared:
        columns = {name: values for name, values in columns.items() if name in schema.converters}
    for name, values in columns.items():
        values = _scrub_controls(name, values, errors)
        typed[name] = _convert_column(name, values, schema.converters.get(name), errors)
    names = list(typed)
    items = []
    for seq, values in enumerate(zip(*typed.values(), strict=True)):
        data = dict(zip(names, values, strict=True))
        item_id = data.get(schema.id_field) or f"row-{seq + 1}"
        items.append(Item(item_id, seq, locations[seq], data, errors.get(seq, []),
                          title_field=schema.title_field))  # fmt: skip
    return items


def _convert_column(
    name: str,
    values: list[Any],
    convert: Converter | None,
    errors: dict[int, list[tuple[str, str, str]]],
) -> list[Any]:
    if convert is None:
        return [None if _is_missing(v) else v for v in values]
    if convert is to_text and all(type(v) is str for v in values):
        return [v if v.strip() else None for v in values]  # fast path: a CSV text column
    out: list[Any] = [None] * len(values)
    for index, value in enumerate(values):
        if _is_missing(value):
            continue
        try:
            out[index] = convert(value)
        except CellError as exc:
            errors.setdefault(index, []).append((name, str(exc.args[0]), str(exc.args[1])))
    return out


# C0 controls but tab, newline and carriage return; DEL; and C1 (U+0080-U+009F: in text they only
# come from a file decoded with the wrong code page, and U+009B is a terminal's 8-bit CSI).
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_CONTROL_NAMES = {0x00: "NUL", 0x07: "BEL", 0x08: "BS", 0x1B: "ESC", 0x7F: "DEL", 0x9B: "CSI"}


def _scrub_controls(
    name: str, values: list[Any], errors: dict[int, list[tuple[str, str, str]]]
) -> list[Any]:
    """A cell holding a control character blocks its item (a type error naming the character);
    the cell keeps its text with U+FFFD in its place, so no report, log or ledger (PostgreSQL
    refuses NUL in text) ever receives the character itself."""
    if all(type(v) is str for v in values) and not CONTROL.search("\n".join(values)):
        return values  # the usual case, checked in one pass
    out = list(values)
    for index, value in enumerate(values):
        found = _first_control(value)
        if found is None:
            continue
        char, position = found
        code = ord(char)
        label = f"U+{code:04X}" + (f" ({_CONTROL_NAMES[code]})" if code in _CONTROL_NAMES else "")
        errors.setdefault(index, []).append(
            (
                name,
                f"holds the control character {label} at character {position}",
                "Remove the control character from the cell (an export or a copy from a "
                "terminal left it there); until then the item is not written",
            )
        )
        out[index] = _scrubbed(value)
    return out


def _first_control(value: Any) -> tuple[str, int] | None:
    if isinstance(value, str):
        match = CONTROL.search(value)
        return (match.group(), match.start() + 1) if match else None
    if hasattr(value, "tolist") and not isinstance(value, str):  # numpy arrays from Parquet
        value = value.tolist()
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list | tuple):
        for part in value:
            found = _first_control(part)
            if found:
                return found
    return None


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return CONTROL.sub("\ufffd", value)
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {_scrubbed(k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(part) for part in value]
    return value
