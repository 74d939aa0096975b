"""Writes posts.csv: the pattern document's 52-post blog, plus 3 drafts the job's filter leaves out.

Deterministic; run `python examples/blog/generate.py` to rebuild the committed file.
45 posts are ready, 4 carry warnings (3 hero images off 16:9, 1 title over 100 characters) and
3 are blocked (2 without a hero image, 1 in a category the destination lacks).
"""

from __future__ import annotations

import csv
import random
from datetime import date, datetime, timedelta
from pathlib import Path

from batchgate.schema import BLOG

TITLES = [
    ("Azure Functions Guide", "Cloud"),
    ("Power BI Embedding", "Data"),
    ("Data Pipeline Architecture", "Data"),
    ("Zero Trust in Practice", "Security"),
    ("Prompt Engineering for Analysts", "AI"),
    ("Kubernetes Cost Controls", "Cloud"),
    ("Event Sourcing Without Tears", "Engineering"),
    ("Feature Flags at Scale", "Engineering"),
    ("Data Contracts 101", "Data"),
    ("Secrets Rotation Playbook", "Security"),
    ("Vector Search Explained", "AI"),
    ("Serverless Cold Starts", "Cloud"),
    ("Testing Data Pipelines", "Data"),
    ("Incident Reviews That Work", "Engineering"),
    ("Threat Modeling for Startups", "Security"),
    ("Fine-Tuning Small Models", "AI"),
    ("Multi-Region Failover", "Cloud"),
    ("Dimensional Modeling Today", "Data"),
    ("Code Review Habits", "Engineering"),
    ("Phishing-Resistant MFA", "Security"),
    ("Evaluating LLM Outputs", "AI"),
    ("Terraform Module Design", "Cloud"),
    ("Streaming with Kafka", "Data"),
    ("Monorepo or Polyrepo", "Engineering"),
    ("Supply Chain Security", "Security"),
    ("RAG Pipelines in Production", "AI"),
    ("Cloud Networking Basics", "Cloud"),
    ("Slowly Changing Dimensions", "Data"),
    ("Writing Runbooks", "Engineering"),
    ("Least Privilege IAM", "Security"),
    ("Embeddings for Search", "AI"),
    ("Observability on a Budget", "Cloud"),
    ("Lakehouse Table Formats", "Data"),
    ("API Versioning Strategies", "Engineering"),
    ("Container Image Scanning", "Security"),
    ("Agents and Tool Use", "AI"),
    ("Autoscaling Policies", "Cloud"),
    ("dbt Project Structure", "Data"),
    ("Technical Debt Budgets", "Engineering"),
    ("Audit Logging Done Right", "Security"),
    ("Model Monitoring", "AI"),
    ("Edge Caching Patterns", "Cloud"),
    ("Data Quality Checks", "Data"),
    ("Pairing Remotely", "Engineering"),
    ("Security Best Practices", "Security"),
]
EXTRA = [
    # 3 warnings: hero image not 16:9
    ("Database Optimization Tips", "Data", (1600, 1200)),
    ("Designing Idempotent APIs", "Engineering", (1200, 1200)),
    ("Cloud Migration Checklist", "Cloud", (1500, 1000)),
    # 1 warning: title over 100 characters
    (
        "A Very Long Look at Everything We Learned Moving Forty Services to Kubernetes Over Two Years "
        "of Production",
        "Cloud",
        (1600, 900),
    ),
    # 3 blocked: two without a hero image, one in a category the destination lacks
    ("Getting Started with Copilot", "AI", None),
    ("Query Plans Demystified", "Data", None),
    ("Platform Teams That Scale", "DevOps", (1600, 900)),
]
DRAFTS = ["Unfinished: GraphQL Federation", "Unfinished: Chaos Engineering", "Unfinished: FinOps"]
WORDS = [
    "data",
    "pipeline",
    "cloud",
    "service",
    "team",
    "model",
    "query",
    "security",
    "deploy",
    "latency",
    "cost",
    "schema",
    "event",
    "cluster",
    "cache",
    "index",
    "token",
    "policy",
    "review",
    "metric",
    "signal",
    "batch",
    "stream",
    "table",
    "contract",
]
COLUMNS = list(BLOG.columns)


def slugify(title: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in title.lower()).split())


def body(rng: random.Random, words: int) -> str:
    paragraphs, left = [], words
    while left > 0:
        n = min(left, rng.randint(60, 140))
        paragraphs.append(" ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + ".")
        left -= n
    sections = ["## Why it matters", "## How to do it", "## What to watch"]
    out = []
    for i, paragraph in enumerate(paragraphs):
        if i % 3 == 0 and i // 3 < len(sections):
            out.append(sections[i // 3])
        out.append(paragraph)
    return "\n\n".join(out)


def row(rng: random.Random, n: int, title: str, category: str, size, status: str) -> dict:
    slug = slugify(title)[:80].rstrip("-")
    words = rng.choice([450, 900, 1800, 3200])
    published = date(2025, 1, 6) + timedelta(days=7 * n)
    return {
        "id": f"post-{n:03d}",
        "title": title,
        "slug": slug,
        "status": status,
        "category": category,
        "tags": ", ".join(rng.sample(WORDS, 3)),
        "featured": "true" if n % 9 == 0 else "false",
        "publish_date": published.isoformat(),
        "hero_image_url": f"https://images.example.com/blog/{slug}.jpg" if size else "",
        "hero_width": size[0] if size else "",
        "hero_height": size[1] if size else "",
        "summary": f"What we learned about {title.lower()}, and how to apply it.",
        "body_markdown": f"# {title}\n\n" + body(rng, words),
        "last_edited": (datetime(2025, 10, 1, 9, 0) + timedelta(hours=n)).isoformat() + "Z",
    }


def main() -> None:
    rng = random.Random(52)
    rows = [row(rng, n, t, c, (1600, 900), "Published") for n, (t, c) in enumerate(TITLES, 1)]
    for title, category, size in EXTRA:
        rows.append(row(rng, len(rows) + 1, title, category, size, "Published"))
    for title in DRAFTS:
        rows.append(row(rng, len(rows) + 1, title, "Engineering", (1600, 900), "Draft"))
    rng.shuffle(rows)
    path = Path(__file__).with_name("posts.csv")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
