"""The file source block: CSV, JSON and Parquet, the filter, typing, and bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import pandas as pd
import pytest

from batchgate.errors import SourceError
from batchgate.schema import BLOG
from blocks.file_source import FileSource
from tests.conftest import BLOG_COLUMNS, blog_row


def read(path: Path, **kwargs) -> list:
    return FileSource(path=str(path), **kwargs).read(BLOG).items


def test_csv_types_tags_and_missing(write_csv: Callable[..., Path]) -> None:
    path = write_csv(
        [blog_row(1, tags="python,  data ,", featured="yes", hero_width="", summary="")]
    )
    (item,) = read(path)
    assert item.id == "p-001"
    assert item.data["tags"] == ["python", "data"]
    assert item.data["featured"] is True
    assert item.data["hero_width"] is None  # empty cell means missing
    assert item.data["summary"] is None
    assert item.data["hero_height"] == 900
    assert item.data["publish_date"] == date(2025, 10, 28)
    assert item.data["last_edited"] == datetime.fromisoformat("2025-10-28T10:00:00+00:00")
    assert item.location == "posts.csv row 1"
    assert item.type_errors == []


def test_json_list_of_objects_with_null_and_tag_list(tmp_path: Path) -> None:
    rows = [
        blog_row(1, tags=["python", "data"], hero_width=1600, featured=True),
        {**blog_row(2), "tags": None, "hero_width": None},
    ]
    path = tmp_path / "posts.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    first, second = read(path)
    assert first.data["tags"] == ["python", "data"]
    assert first.data["hero_width"] == 1600
    assert first.data["featured"] is True
    assert second.data["tags"] is None and second.data["hero_width"] is None
    assert second.location == "posts.json item 2"


def test_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        [
            blog_row(1, hero_width=1600, hero_height=900),
            blog_row(2, hero_width=None, hero_height=900),
        ]
    )
    path = tmp_path / "posts.parquet"
    frame.to_parquet(path)
    first, second = read(path)
    assert first.data["hero_width"] == 1600 and first.data["title"] == "Post number 1"
    assert second.data["hero_width"] is None


def test_filter_keeps_matching_rows_and_counts_the_rest(write_csv: Callable[..., Path]) -> None:
    path = write_csv([blog_row(1), blog_row(2, status="Draft"), blog_row(3, featured="true")])
    batch = FileSource(path=str(path), filter={"status": "Published"}).read(BLOG)
    assert [i.id for i in batch.items] == ["p-001", "p-003"]
    assert batch.total_rows == 3 and batch.filtered_out == 1
    featured = FileSource(path=str(path), filter={"featured": True}).read(BLOG)
    assert [i.id for i in featured.items] == ["p-003"]
    either = FileSource(path=str(path), filter={"status": ["Draft", "Published"]}).read(BLOG)
    assert len(either.items) == 3


def test_wrong_type_is_kept_as_an_item_with_a_type_error(write_csv: Callable[..., Path]) -> None:
    path = write_csv([blog_row(1), blog_row(2, hero_width="wide", publish_date="last tuesday")])
    items = read(path)
    assert len(items) == 2  # no item lost
    errors = {column: message for column, message, _ in items[1].type_errors}
    assert "whole number" in errors["hero_width"] and "'wide'" in errors["hero_width"]
    assert "YYYY" not in errors["publish_date"] and "date" in errors["publish_date"]


# --- bad input: one paragraph naming the file, row and column --------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"posts\.csv does not exist.*Fix:"):
        read(tmp_path / "posts.csv")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "posts.csv"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match=r"posts\.csv is empty"):
        read(path)


def test_header_only_file(write_csv: Callable[..., Path]) -> None:
    with pytest.raises(SourceError, match="has a header but no rows"):
        read(write_csv([]))


def test_missing_columns_names_them_and_the_columns_found(write_csv: Callable[..., Path]) -> None:
    columns = [c for c in BLOG_COLUMNS if c not in ("category", "hero_image_url")]
    path = write_csv([blog_row(1)], columns=columns)
    with pytest.raises(SourceError) as err:
        read(path)
    message = str(err.value)
    assert "category, hero_image_url" in message and "Columns found: id, title" in message
    assert "Fix:" in message


def test_filter_on_a_missing_column(write_csv: Callable[..., Path]) -> None:
    with pytest.raises(SourceError, match="lacks the column.*state"):
        FileSource(path=str(write_csv([blog_row(1)])), filter={"state": "x"}).read(BLOG)


def test_non_utf8_bytes_name_line_and_column(write_csv: Callable[..., Path]) -> None:
    path = write_csv([blog_row(1), blog_row(2, summary="caf\u00e9")])
    path.write_bytes(path.read_bytes().replace("café".encode(), b"caf" + b"\xe9"))
    with pytest.raises(SourceError) as err:
        read(path)
    message = str(err.value)
    assert "(row 2), column 'summary'" in message
    assert "not valid UTF-8" in message and "Fix:" in message


def test_huge_cell_is_refused_with_row_and_column(write_csv: Callable[..., Path]) -> None:
    path = write_csv([blog_row(1), blog_row(2, body_markdown="x" * 10_000_000)])
    with pytest.raises(SourceError) as err:
        read(path)
    message = str(err.value)
    assert "row 2, column 'body_markdown'" in message and "10,000,000 characters" in message
    assert "unclosed quote" in message


def test_row_with_extra_fields(write_csv: Callable[..., Path]) -> None:
    path = write_csv([blog_row(1), blog_row(2, body_markdown="one line")])
    path.write_text(path.read_text().rstrip("\n") + ",surplus\n")
    with pytest.raises(
        SourceError, match=r"row 2 \(line \d+\) has 15 fields where the header has 14"
    ):
        read(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"id": 1}', "holds a JSON dict; a list of objects is needed"),
        ('[{"id": 1}, 7]', "item 2 is a JSON int"),
        ('[{"id": 1},', r"line 1, column \d+ is not valid JSON"),
        ("[]", "empty list"),
    ],
)
def test_bad_json(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "posts.json"
    path.write_text(content)
    with pytest.raises(SourceError, match=expected):
        read(path)


def test_damaged_parquet(tmp_path: Path) -> None:
    path = tmp_path / "posts.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(SourceError, match="cannot be read as Parquet"):
        read(path)


def test_unknown_extension(tmp_path: Path) -> None:
    path = tmp_path / "posts.xlsx"
    path.write_text("x")
    with pytest.raises(SourceError, match="set source.format"):
        read(path)


def test_block_fields_are_documented() -> None:
    schema = FileSource.model_json_schema()
    assert all(field.get("description") for field in schema["properties"].values())


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_a_big_file_is_read_a_chunk_at_a_time_numbered_across_chunks(
    tmp_path: Path, fmt: str
) -> None:
    """CSV through pandas' chunks, Parquet through its row batches, JSON-lines a page of lines at a
    time: 1,234 rows in chunks of 500 arrive as 500, 500 and 234, each item numbered and located
    as one read of the whole file would, the filter counted per chunk. And JSON-lines and CSV
    hand over their first chunks before a damaged line further down is ever parsed."""
    rows = [blog_row(n, status="Draft" if n % 10 == 0 else "Published") for n in range(1, 1235)]
    path = tmp_path / f"posts.{fmt}"
    if fmt == "csv":
        pd.DataFrame(rows, columns=BLOG_COLUMNS).to_csv(path, index=False)
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        pd.DataFrame(rows, columns=BLOG_COLUMNS).to_parquet(path)
    source = FileSource(path=str(path), filter={"status": "Published"})
    chunks = list(source.iter_chunks(BLOG, chunk_size=500))
    assert [c.total_rows for c in chunks] == [500, 500, 234]
    assert [c.filtered_out for c in chunks] == [50, 50, 23]
    items = [i for c in chunks for i in c.items]
    kept = [n for n in range(1, 1235) if n % 10]
    assert [i.id for i in items] == [f"p-{n:03d}" for n in kept]
    assert [i.seq for i in items] == list(range(len(kept)))
    unit = {"csv": "row", "jsonl": "line", "parquet": "row"}[fmt]
    assert items[-1].location == f"posts.{fmt} {unit} 1234"
    if fmt == "parquet":
        return
    # a damaged row 1,099: the first two chunks arrive, the error names it at the third
    if fmt == "jsonl":
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        lines.insert(1098, '{"id": "broken", "title": \n')
        path.write_text("".join(lines), encoding="utf-8")
    else:  # a body holds line breaks inside its quotes: rows are not lines
        pd.DataFrame(rows[:1098], columns=BLOG_COLUMNS).to_csv(path, index=False)
        with path.open("a", encoding="utf-8") as out:
            out.write("p-x" + "," * 30 + "\n")  # 31 fields where the header has 14
        pd.DataFrame(rows[1098:], columns=BLOG_COLUMNS).to_csv(
            path, index=False, header=False, mode="a"
        )
    got = []
    with pytest.raises(SourceError) as raised:
        for chunk in FileSource(path=str(path)).iter_chunks(BLOG, chunk_size=500):
            got.append(chunk.total_rows)
    assert got == [500, 500]
    said = str(raised.value)
    assert ("line 1099" if fmt == "jsonl" else "row 1099 (line") in said, said
    assert fmt == "jsonl" or "has 31 fields where the header has 14" in said, said
