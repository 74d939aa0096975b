"""Creates the example's own table, as a team's warehouse would have it: `catalog`, keyed by
sku, with CHECK constraints of its own. batchgate writes into it (create: never).

Usage: python create_table.py [DATABASE_URL]   (default: $PRODUCTS_DB_URL, else the local
PostgreSQL, postgresql+psycopg2://postgres@127.0.0.1:5432/test). Drops the table first.
"""

from __future__ import annotations

import os
import sys

import sqlalchemy as sa

DEFAULT_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
TABLE = """CREATE TABLE catalog (
    sku varchar(32) PRIMARY KEY,
    name varchar(120) NOT NULL,
    price numeric(10, 2) NOT NULL CHECK (price > 0),
    stock integer NOT NULL CHECK (stock BETWEEN 0 AND 100000),
    category varchar(50),
    launched date,
    image_url text,
    updated_at timestamp with time zone
)"""


def create(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS catalog"))
        conn.execute(sa.text(TABLE))
    engine.dispose()


if __name__ == "__main__":
    create(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("PRODUCTS_DB_URL", DEFAULT_URL))
