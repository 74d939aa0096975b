"""Fix the example's 3 blocked posts in a copy of examples/blog, as the dry-run report says.

Usage: python examples/blog/fix_blocked.py DIR   (DIR holds a copy of examples/blog)
Gives post-050 and post-051 a 16:9 hero image, and adds the category DevOps to the destination's
categories (validation.allowed_categories in the job file).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

HEROES = {"post-050": "getting-started-with-copilot", "post-051": "query-plans-demystified"}


def main(folder: Path) -> None:
    posts = folder / "posts.csv"
    with posts.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns, rows = reader.fieldnames or [], list(reader)
    for row in rows:
        if row["id"] in HEROES:
            row["hero_image_url"] = f"https://images.example.com/blog/{HEROES[row['id']]}.jpg"
            row["hero_width"], row["hero_height"] = "1600", "900"
    with posts.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    job = folder / "job.yaml"
    text = job.read_text(encoding="utf-8")
    job.write_text(text.replace("Security, AI]", "Security, AI, DevOps]"), encoding="utf-8")
    print(f"Fixed in {folder}: hero images for {', '.join(HEROES)}; category DevOps allowed.")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
