"""Any batch job: the items' own fields, the user's own table, the user's own transform.

Products (not blog posts) into SQLite and PostgreSQL: every field lands in its column exactly as
the plan froze it, and whatever cannot land is said by the dry-run before anything is written.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from batchgate.config import load_job
from batchgate.planner import thaw
from batchgate.records import META
from blocks.ledger import open_ledger

pytestmark = pytest.mark.prefect
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "products"
BATCHGATE = str(Path(sys.executable).with_name("batchgate"))
FIELDS = """\
fields: {sku: string, name: string, price: number, stock: integer, category: string,
         launched: date, tags: list, meta: json, image_url: url}
id_field: sku
title_field: name
"""


def products(n: int = 30) -> list[dict[str, str]]:
    return [
        {"sku": f"P{i:03d}", "name": f"Product {i}", "price": f"{i * 1.25:.2f}",
         "stock": str(i * 3), "category": ["Kitchen", "Garden"][i % 2],
         "launched": f"2024-03-{1 + i % 28:02d}", "tags": f"t{i}, shared",
         "meta": f'{{"color": "c{i}", "sizes": [{i}, {i + 1}]}}',
         "image_url": f"https://cdn.example.com/{i}.png"}
        for i in range(1, n + 1)
    ]  # fmt: skip


def write(tmp_path: Path, rows: list[dict[str, str]], name: str = "products.csv") -> Path:
    path = tmp_path / name
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def job_file(tmp_path: Path, url: str, destination: str = "", extra: str = "") -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(
        "name: products\nsource: {type: file, path: products.csv}\n" + FIELDS + extra
        + f"destination: {{type: sql, url: '{url}', table: catalog{destination}}}\n"
        f"ledger: {{path: {tmp_path / 'ledger.db'}}}\n"
    )  # fmt: skip
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shop.db'}"
    else:
        yield request.getfixturevalue("pg_schema_url")


def table_rows(url: str, table: str = "catalog", key: str = "sku") -> dict[str, dict[str, Any]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(f"SELECT * FROM {table}")).mappings().all()
    finally:
        engine.dispose()
    return {str(r[key]): dict(r) for r in rows}


def frozen(tmp_path: Path, plan_id: str) -> dict[str, dict[str, Any]]:
    ledger = open_ledger(load_job(tmp_path / "job.yaml").ledger)
    rows = ledger.frozen_plan_slice(plan_id, -1, 100_000)
    return {r["item_id"]: thaw(r["data"]) for r in rows if r["data"]}


def stored(value: Any) -> Any:
    """A column's value in the record's terms (SQLite keeps a date as text, a list as JSON)."""
    if isinstance(value, Decimal):
        return float(value)
    return value


def same(column_value: Any, record_value: Any) -> bool:
    import json

    if isinstance(record_value, list | dict):
        value = json.loads(column_value) if isinstance(column_value, str) else column_value
        return bool(value == record_value)
    if isinstance(record_value, date) and isinstance(column_value, str):
        return column_value == record_value.isoformat()
    return bool(stored(column_value) == record_value)


def test_a_products_job_writes_every_field_into_its_column_exactly_as_frozen(
    prefect_api: str, tmp_path: Path, db_url: str
) -> None:
    from flows.dry_run import dry_run
    from flows.full import full

    write(tmp_path, products())
    job = load_job(job_file(tmp_path, db_url))
    checked = dry_run(job)
    assert (checked["ready"], checked["blocked"]) == (30, 0)
    summary = full(job, plan_id=checked["run_id"])
    assert (summary["succeeded"], summary["failed"], summary["status"]) == (30, 0, "complete")

    plan, table = frozen(tmp_path, checked["run_id"]), table_rows(db_url)
    assert sorted(table) == sorted(plan) == [f"P{i:03d}" for i in range(1, 31)]
    fields = ["name", "price", "stock", "category", "launched", "tags", "meta", "image_url"]
    for sku, record in plan.items():
        assert META not in record and set(record) == {"sku", *fields}
        for name in fields:  # column by column: nothing dropped, nothing changed
            assert same(table[sku][name], record[name]), (sku, name, table[sku][name], record[name])
    p7 = plan["P007"]
    assert (p7["price"], p7["stock"], p7["launched"]) == (8.75, 21, date(2024, 3, 8))
    assert p7["tags"] == ["t7", "shared"] and p7["meta"] == {"color": "c7", "sizes": [7, 8]}


def test_the_created_table_has_a_typed_column_for_every_field(
    prefect_api: str, tmp_path: Path, db_url: str
) -> None:
    from flows.full import full

    write(tmp_path, products(3))
    assert full(load_job(job_file(tmp_path, db_url)))["succeeded"] == 3
    engine = sa.create_engine(db_url)
    try:
        columns = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("catalog")}
        pk = sa.inspect(engine).get_pk_constraint("catalog")["constrained_columns"]
    finally:
        engine.dispose()
    assert pk == ["sku"]
    kinds = {name: type(kind) for name, kind in columns.items()}
    assert issubclass(kinds["stock"], sa.types.Integer) and issubclass(kinds["launched"], sa.Date)
    assert issubclass(kinds["price"], sa.types.Float | sa.types.Numeric)
    assert {"draft", "created_at", "updated_at"} <= set(columns)


def own_table(url: str, ddl: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(ddl))
    engine.dispose()


def dry(prefect_api: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    return subprocess.run([BATCHGATE, "dry-run", "--job", "job.yaml", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)  # fmt: skip


CATALOG = """CREATE TABLE catalog (sku varchar(20) PRIMARY KEY, name varchar(12) NOT NULL,
    price numeric(10, 2), stock integer, category varchar(20), launched date, tags text,
    meta text, image_url text{extra})"""


@pytest.mark.parametrize(
    ("extra", "destination", "job_error"),
    [
        # a field with nowhere to go: the table has no image_url column
        ("", "", None),
        (", warehouse text NOT NULL", "", "NOT NULL column(s) warehouse"),
        (", code text", ", create: never, key: code", "neither its primary key nor unique"),
    ],
    ids=["too-long-name", "not-null-unfilled", "key-not-unique"],
)  # fmt: skip
def test_what_cannot_land_is_said_by_the_dry_run_before_any_write(
    prefect_api: str, tmp_path: Path, db_url: str, extra: str, destination: str,
    job_error: str | None,
) -> None:  # fmt: skip
    rows = products(5)
    rows[2]["name"] = "A name far too long for twelve"
    write(tmp_path, rows)
    own_table(db_url, CATALOG.format(extra=extra))
    job_file(tmp_path, db_url, destination)
    result = dry(prefect_api, tmp_path)
    assert "Traceback" not in result.stdout + result.stderr
    if job_error:
        assert result.returncode == 1 and job_error in result.stdout + result.stderr
    else:
        assert result.returncode == 2, result.stdout + result.stderr  # blocked items
        out = " ".join(result.stdout.split())
        assert "P003" in out and "field 'name' is 30 characters, longer than the column's 12" in out
        assert "(column name)" in out and "Shorten it to 12 characters" in out
    assert table_rows(db_url) == {}  # nothing written


def test_a_field_with_no_column_is_a_job_error_and_ignore_leaves_it_out_on_purpose(
    prefect_api: str, tmp_path: Path, db_url: str
) -> None:
    from flows.full import full

    write(tmp_path, products(4))
    own_table(db_url, CATALOG.format(extra="").replace(", image_url text", ""))
    job_file(tmp_path, db_url)
    result = dry(prefect_api, tmp_path)
    message = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1 and "Traceback" not in message
    assert "table catalog has no column for the field(s) image_url" in message
    assert "destination.ignore" in message and "destination.columns" in message
    assert table_rows(db_url) == {}

    job = load_job(job_file(tmp_path, db_url, ", ignore: [image_url]"))
    assert full(job)["succeeded"] == 4
    assert "image_url" not in table_rows(db_url)["P001"]


def test_columns_map_fields_to_columns_of_other_names_and_key_names_the_key_column(
    prefect_api: str, tmp_path: Path, db_url: str
) -> None:
    from flows.full import full

    write(tmp_path, products(4))
    own_table(db_url, """CREATE TABLE catalog (code varchar(20) PRIMARY KEY, title text NOT NULL,
        price numeric(10, 2), stock integer, category text, launched date, tags text, meta text,
        image_url text)""")  # fmt: skip
    columns = ", columns: {sku: code, name: title}, create: never"
    assert full(load_job(job_file(tmp_path, db_url, columns)))["succeeded"] == 4
    row = table_rows(db_url, key="code")["P002"]
    assert (row["title"], stored(row["price"]), row["stock"]) == ("Product 2", 2.5, 6)


def test_a_rule_on_a_field_the_source_lacks_is_a_job_error(
    prefect_api: str, tmp_path: Path
) -> None:
    write(tmp_path, products(3))
    extra = "validation: {add: [{rule: min, field: prize, value: 0}]}\n"
    job_file(tmp_path, f"sqlite:///{tmp_path / 'shop.db'}", extra=extra)
    result = dry(prefect_api, tmp_path)
    message = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 1 and "Traceback" not in message
    assert "the field 'prize' is not in" in message and "Did you mean 'price'?" in message
    assert "sku, name, price, stock" in message  # the fields found
    assert not (tmp_path / "shop.db").exists()


TRANSFORM = '''\
import itertools
import uuid

_calls = itertools.count()


def to_record(fields):
    if fields["sku"] == "P003":
        raise ValueError("no price list for P003")
    # not deterministic on purpose: what was frozen is what must be written
    return {"sku": fields["sku"], "label": fields["name"].upper(), "cents": round(fields["price"] * 100),
            "batch_tag": uuid.uuid4().hex, "call": next(_calls)}


def not_a_dict(fields):
    return [fields["sku"]]
'''


def test_a_transform_of_the_users_own_blocks_in_the_dry_run_and_its_frozen_output_is_written(
    prefect_api: str, tmp_path: Path
) -> None:
    from flows.dry_run import dry_run
    from flows.full import full

    (tmp_path / "my_prices").mkdir()
    (tmp_path / "my_prices" / "__init__.py").write_text(TRANSFORM)
    url = f"sqlite:///{tmp_path / 'shop.db'}"
    own_table(url, "CREATE TABLE catalog (sku text PRIMARY KEY, label text, cents integer, "
                   "batch_tag text, call integer)")  # fmt: skip
    write(tmp_path, products(5))
    job = load_job(job_file(tmp_path, url, ", create: never",
                            extra="transform: my_prices:to_record\n"))  # fmt: skip
    checked = dry_run(job)
    assert (checked["ready"], checked["blocked"]) == (4, 1)
    report = " ".join(checked["report"].split())
    assert "P003" in report and "the transform my_prices:to_record raised ValueError: no price list for P003" in report
    assert full(job, plan_id=checked["run_id"])["succeeded"] == 4
    plan, table = frozen(tmp_path, checked["run_id"]), table_rows(url)
    assert sorted(table) == ["P001", "P002", "P004", "P005"]
    for sku, record in plan.items():  # the write did not run the transform again
        assert {k: table[sku][k] for k in record} == record
    assert table["P002"]["cents"] == 250 and table["P002"]["label"] == "PRODUCT 2"

    bad = load_job(job_file(tmp_path, url, ", create: never", extra="transform: my_prices:not_a_dict\n"))
    assert dry_run(bad)["blocked"] == 5
    missing = job_file(tmp_path, url, extra="transform: my_prices:nope\n")
    result = dry(prefect_api, tmp_path)
    assert result.returncode == 1 and "'my_prices' has no 'nope'" in result.stderr, missing
    assert "Traceback" not in result.stdout + result.stderr


def test_a_job_without_fields_writes_every_column_and_says_so(
    prefect_api: str, tmp_path: Path
) -> None:
    from flows.dry_run import dry_run
    from flows.full import full

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    own_table(url, "CREATE TABLE catalog (sku text PRIMARY KEY, name text, price text, "
                   "stock text, category text, launched text, tags text, meta text, "
                   "image_url text)")  # fmt: skip
    write(tmp_path, products(3))
    path = job_file(tmp_path, url)
    path.write_text(path.read_text().replace(FIELDS, "id_field: sku\nvalidation: {preset: none}\n"))
    job = load_job(path)
    checked = dry_run(job)
    assert "No fields are declared" in checked["report"]
    assert full(job)["succeeded"] == 3
    assert table_rows(url)["P003"]["price"] == "3.75"


@pytest.mark.postgres
def test_the_products_example_end_to_end_through_the_cli(
    prefect_api: str, tmp_path: Path, pg_schema_url: str
) -> None:
    """examples/products: dry-run, the pipeline (sample, approval, full), every column checked,
    the refused row in the DLQ with the database's message, then a rollback."""
    for name in ("products.csv", "job.yaml", "create_table.py"):
        (tmp_path / name).write_bytes((EXAMPLE / name).read_bytes())
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PRODUCTS_DB_URL": pg_schema_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([BATCHGATE, *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip

    subprocess.run([sys.executable, "create_table.py"], cwd=tmp_path, env=env, check=True)
    dry_run = cli("dry-run", "--job", "job.yaml")
    assert dry_run.returncode == 2 and "❌ Blocked: 7" in dry_run.stdout, dry_run.stderr
    assert "price is -33.26; it must be above 0" in dry_run.stdout
    piped = cli("pipeline", "--job", "job.yaml", "--allow-blocked", "--yes")
    out = piped.stdout
    assert piped.returncode == 3, piped.stdout + piped.stderr  # partial success: one refused
    assert "Successful: 192/193" in out and 'violates check constraint "catalog_stock_check"' in out
    assert "Database Constraint Errors" in out and "Traceback" not in out + piped.stderr

    table = table_rows(pg_schema_url)
    with (EXAMPLE / "products.csv").open(newline="") as source:
        expected = {r["sku"]: r for r in csv.DictReader(source)}
    refused = {"SKU-0005", "SKU-0010", "SKU-0015", "SKU-0024", "SKU-0030", "SKU-0035"}
    assert sorted(table) == sorted(k for k in expected if k and k not in refused)
    for sku, row in table.items():  # all six columns, as the CSV had them
        want = expected[sku]
        assert (row["name"], str(row["price"]), str(row["stock"])) == (
            want["name"], want["price"], want["stock"])  # fmt: skip
        assert (row["category"], row["launched"].isoformat(), row["image_url"]) == (
            want["category"], want["launched"], want["image_url"])  # fmt: skip

    runs = cli("runs", "--limit", "10").stdout.splitlines()
    full_run = next(line.split()[0] for line in runs if line.split()[1:2] == ["full"])
    rolled = cli("rollback", full_run)
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    left = table_rows(pg_schema_url)
    assert len(left) == 3  # the approved sample's rows, written by the sample run, stay
    assert textwrap.dedent("") == ""


SHAPES = '''\
def to_record(fields):
    if fields["sku"] == "P002":  # no note: the row's note column must keep what it holds
        return {"sku": fields["sku"], "qty": fields["stock"]}
    if fields["sku"] == "P004":  # no qty, which the table needs
        return {"sku": fields["sku"], "note": "x"}
    return {"sku": fields["sku"], "qty": fields["stock"], "note": fields["name"],
            "price": fields["price"] * 1000}
'''


def test_a_transforms_records_are_checked_one_by_one_and_never_blank_a_column_they_lack(
    prefect_api: str, tmp_path: Path, db_url: str
) -> None:
    """A transform decides the fields item by item: a record missing a NOT NULL column or with
    a number its numeric(p, s) cannot hold is blocked in the dry-run, and a record without a
    column leaves that column as it was."""
    from flows.dry_run import dry_run
    from flows.full import full

    (tmp_path / "shapes.py").write_text(SHAPES)
    own_table(db_url, "CREATE TABLE catalog (sku varchar(20) PRIMARY KEY, qty integer NOT NULL, "
                      "note text, price numeric(7, 2))")  # fmt: skip
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO catalog VALUES ('P002', 1, 'kept', NULL)"))
    engine.dispose()
    rows = products(5)
    rows[4]["price"] = "99999.5"  # x 1000: over numeric(7, 2)
    write(tmp_path, rows)
    job = load_job(job_file(tmp_path, db_url, ", create: never", extra="transform: shapes:to_record\n"))
    checked = dry_run(job)
    report = " ".join(checked["report"].split())
    assert (checked["ready"], checked["blocked"]) == (3, 2), report
    assert "column qty is NOT NULL with no default, and the record has no 'qty'" in report
    assert "too large for numeric(7, 2)" in report
    assert full(job, plan_id=checked["run_id"])["succeeded"] == 3
    table = table_rows(db_url)
    assert sorted(table) == ["P001", "P002", "P003"]
    assert (table["P002"]["qty"], table["P002"]["note"]) == (6, "kept")
    assert (table["P001"]["note"], stored(table["P001"]["price"])) == ("Product 1", 1250.0)


def test_a_row_of_the_users_own_is_recorded_as_updated_and_a_rollback_restores_it(
    prefect_api: str, tmp_path: Path, db_url: str
) -> None:
    """A row the table held before batchgate ever wrote it is looked up before the first write:
    snapshotted, recorded as an update, and put back by a rollback, never deleted."""
    from flows.full import full
    from flows.rollback import rollback

    own_table(db_url, CATALOG.format(extra=""))
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO catalog (sku, name, price, stock) "
                             "VALUES ('P002', 'precious', 99.5, 1)"))  # fmt: skip
    engine.dispose()
    write(tmp_path, products(3))
    job = load_job(job_file(tmp_path, db_url, ", create: never"))
    summary = full(job)
    assert summary["succeeded"] == 3 and table_rows(db_url)["P002"]["name"] == "Product 2"
    ledger = open_ledger(job.ledger)
    actions = {r["item_id"]: r["action"] for r in ledger.item_rows(summary["run_id"])}
    assert actions == {"P001": "created", "P002": "updated", "P003": "created"}
    rollback(summary["run_id"], job=job)
    table = table_rows(db_url)
    assert sorted(table) == ["P002"]
    assert (table["P002"]["name"], stored(table["P002"]["price"]), table["P002"]["stock"]) == (
        "precious", 99.5, 1)  # fmt: skip


@pytest.mark.parametrize(
    ("ddl", "destination", "rows", "said"),
    [
        ("sku varchar(20) PRIMARY KEY, name text, alt text", ", columns: {alt: name}", None,
         "sends several fields into one column (name, alt -> name)"),
        ("sku varchar(4) PRIMARY KEY, name text, alt text", "", None,
         "key is 7 characters, longer than the column's 4 (varchar(4)) (key column sku)"),
        ("sku integer PRIMARY KEY, name text, alt text", "", ["007", "8"],
         "key '007' would be stored as 7 in the key column sku"),
    ],
    ids=["two-fields-one-column", "key-too-long", "key-changed-by-its-column"],
)  # fmt: skip
def test_a_key_or_a_mapping_the_table_would_change_is_said_before_any_write(
    prefect_api: str, tmp_path: Path, db_url: str, ddl: str, destination: str,
    rows: list[str] | None, said: str,
) -> None:  # fmt: skip
    skus = rows or ["P1", "P2-LONG"]
    write(tmp_path, [{"sku": s, "name": f"n{s}", "alt": f"a{s}"} for s in skus])
    own_table(db_url, f"CREATE TABLE catalog ({ddl})")
    path = tmp_path / "job.yaml"
    path.write_text(
        "source: {type: file, path: products.csv}\n"
        "fields: {sku: string, name: string, alt: string}\nid_field: sku\n"
        f"destination: {{type: sql, url: '{db_url}', table: catalog, create: never{destination}}}\n"
        f"ledger: {{path: {tmp_path / 'ledger.db'}}}\n"
    )
    result = dry(prefect_api, tmp_path)
    out = " ".join((result.stdout + result.stderr).split())
    assert result.returncode in (1, 2) and said in out, out
    assert "Traceback" not in out and table_rows(db_url) == {}


def test_a_full_run_whose_job_needs_a_fix_exits_1_with_the_fix_and_no_report_of_success(
    prefect_api: str, tmp_path: Path
) -> None:
    write(tmp_path, products(3))
    job_file(tmp_path, f"sqlite:///{tmp_path / 'shop.db'}", ", create: never")
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    result = subprocess.run([BATCHGATE, "full", "--job", "job.yaml"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    assert "destination.table catalog does not exist, and destination.create is never" in out
    assert "Success Rate" not in out and "SUCCESSFULLY PROCESSED" not in out
    assert "Traceback" not in out
