"""Generated blog exports for the benchmarks (deterministic for a given row count)."""

from __future__ import annotations

import csv
import random
from pathlib import Path

from batchgate.schema import BLOG

CATEGORIES = ["Engineering", "Data", "Cloud", "Security", "AI"]
WORDS = [
    "data",
    "cloud",
    "team",
    "model",
    "query",
    "deploy",
    "cost",
    "schema",
    "event",
    "cache",
    "index",
    "token",
    "review",
]


def make_csv(path: Path, rows: int, body_words: int = 150, problems: bool = True) -> None:
    """One row per post. With problems: 3% hero images off 16:9 (warnings), 1% unknown category
    and 1% missing hero image (blocked); the rest ready."""
    rng = random.Random(rows)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(BLOG.columns)
        for n in range(rows):
            roll = rng.random() if problems else 1.0
            width, height = (1600, 1200) if roll < 0.03 else (1600, 900)
            category = "DevOps" if 0.03 <= roll < 0.04 else rng.choice(CATEGORIES)
            hero = "" if 0.04 <= roll < 0.05 else f"https://img.example.com/{n}.jpg"
            body = " ".join(rng.choice(WORDS) for _ in range(body_words))
            writer.writerow([
                f"post-{n}", f"Post {n} about {rng.choice(WORDS)}", f"post-{n}", "Published",
                category, "python, data", "false", "2025-10-28", hero, width, height,
                "A short summary of the post.", f"# Post {n}\n\n{body}", "2025-10-28T10:00:00Z",
            ])  # fmt: skip
