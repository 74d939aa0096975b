"""Writes products.csv: 200 products, 10 of them bad in the ways a real export is.

Deterministic (seeded), so the example's counts stay the same: 7 rows the dry-run blocks, 1 row
the database's CHECK constraint refuses at write time. Usage: python generate.py [OUT.csv]
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

CATEGORIES = ["Kitchen", "Garden", "Office", "Outdoor", "Toys"]
NOUNS = ["Kettle", "Trowel", "Stapler", "Lantern", "Kite", "Mug", "Planter", "Desk lamp"]
COLUMNS = ["sku", "name", "price", "stock", "category", "launched", "image_url"]


def rows() -> list[dict[str, str]]:
    rng = random.Random(19)
    out = []
    for n in range(1, 201):
        noun = NOUNS[n % len(NOUNS)]
        out.append({
            "sku": f"SKU-{n:04d}", "name": f"{rng.choice(['Classic', 'Pro', 'Mini'])} {noun} {n}",
            "price": f"{rng.uniform(2, 250):.2f}", "stock": str(rng.randint(0, 500)),
            "category": CATEGORIES[n % len(CATEGORIES)],
            "launched": f"2024-{1 + n % 12:02d}-{1 + n % 28:02d}",
            "image_url": f"https://cdn.example.com/products/{n:04d}.jpg",
        })  # fmt: skip
    out[4]["price"] = "-33.26"  # the rule price > 0 blocks it
    out[9]["price"] = "twelve"  # not a number
    out[14]["stock"] = "3.5"  # not a whole number
    out[19]["sku"] = ""  # no id
    out[24]["sku"] = "SKU-0024"  # the same sku as row 24: both blocked
    out[29]["image_url"] = "cdn.example.com/30.jpg"  # not a URL
    out[34]["stock"] = "250000"  # passes the dry-run; the table's CHECK (stock <= 100000) refuses it
    return out


def main() -> None:
    target = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).with_name("products.csv"))
    with target.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows())


if __name__ == "__main__":
    main()
