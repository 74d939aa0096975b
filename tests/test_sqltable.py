"""The SQL table layout on its own (no Prefect): values against their columns, tables by name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
import sqlalchemy as sa

from batchgate.errors import ConfigError
from batchgate.records import RecordSpec
from batchgate.sqltable import Misfit, adapt, layout_for

SPEC = RecordSpec("sku", {"sku": "string", "at": "datetime", "price": "number"})


@pytest.mark.parametrize(
    ("column", "value", "wide", "stored"),
    [
        (sa.DateTime(timezone=True), datetime(2020, 2, 2, 10, tzinfo=timezone(timedelta(hours=5))),
         False, datetime(2020, 2, 2, 5, tzinfo=UTC)),  # SQLite drops an offset: stored as UTC
        (sa.DateTime(), "2020-02-02T10:00:00Z", False, datetime(2020, 2, 2, 10, tzinfo=UTC)),
        (sa.Numeric(5, 2), Decimal("999.99"), False, Decimal("999.99")),
        (sa.INTEGER(), 2**40, True, 2**40),  # SQLite: 64 bits
        (sa.Integer(), Decimal("7"), False, 7),
        (sa.Text(), ["a", "b"], False, '["a", "b"]'),
        (sa.Boolean(), True, False, True),
    ],
)  # fmt: skip
def test_a_value_goes_in_as_its_column_stores_it(column, value, wide, stored) -> None:  # noqa: ANN001
    result = adapt(sa.Column("c", column), value, wide)
    assert result == stored
    if isinstance(stored, datetime):  # the instant as UTC itself, since SQLite keeps no offset
        assert result.tzinfo == UTC and result.hour == stored.hour


@pytest.mark.parametrize(
    ("column", "value", "said"),
    [
        (sa.Numeric(5, 2), 1000, "too large for numeric(5, 2)"),
        (sa.INTEGER(), 2**40, "too large for a 32-bit integer column"),
        (sa.String(3), "abcd", "longer than the column's 3"),
        (sa.Text(), "a\x00b", "NUL"),
        (sa.Integer(), "5", "not a whole number"),
        (sa.Boolean(), "yes", "not true or false"),
        (sa.Date(), "soon", "not a date"),
    ],
)  # fmt: skip
def test_a_value_its_column_cannot_hold_is_a_misfit_naming_why(column, value, said) -> None:  # noqa: ANN001
    with pytest.raises(Misfit) as caught:
        adapt(sa.Column("c", column, nullable=True), value)
    assert said in caught.value.args[0]


@pytest.mark.postgres
def test_a_schema_qualified_table_is_the_table_in_that_schema(pg_schema_url: str) -> None:
    schema = pg_schema_url.rsplit("%3D", 1)[1]
    engine = sa.create_engine(pg_schema_url.split("?")[0])  # no search_path: the schema by name
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE TABLE "{schema}".cat (sku text PRIMARY KEY, at timestamptz, '
                             "price numeric)"))  # fmt: skip
    try:
        layout = layout_for(engine, SPEC, f"{schema}.cat", None, {}, [], "never")
        assert layout.exists and layout.table.schema == schema
        with pytest.raises(ConfigError, match="does not exist"):
            layout_for(engine, SPEC, "cat", None, {}, [], "never")  # not on the search path
    finally:
        engine.dispose()
