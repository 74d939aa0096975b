"""The blog preset's rules, one case at a time, and the job file's power to change them."""

from __future__ import annotations

from typing import Any

import pytest

from batchgate.config import ValidationConfig
from batchgate.errors import ConfigError
from batchgate.models import ItemResult
from batchgate.schema import BLOG, build_items
from batchgate.validation import build_rules, validate_items
from batchgate.validation.rules import Context
from tests.conftest import blog_row

CATEGORIES = ["Engineering", "Data", "Cloud", "Security", "AI"]


def run(
    rows: list[dict[str, Any]], config: dict[str, Any] | None = None, context: Context | None = None
) -> list[ItemResult]:
    config_model = ValidationConfig.model_validate(
        {"allowed_categories": CATEGORIES, **(config or {})}
    )
    items = build_items(((f"posts.csv row {i + 1}", r) for i, r in enumerate(rows)), BLOG)
    context = context or Context(allowed_categories=config_model.allowed_categories)
    return validate_items(items, build_rules(config_model), context)


def only(rows: list[dict[str, Any]], **config: Any) -> ItemResult:
    return run(rows, config)[0]


@pytest.mark.parametrize(
    ("overrides", "status", "rule", "in_message"),
    [
        ({}, "ready", None, None),
        ({"title": ""}, "blocked", "title_required", "Missing title"),
        ({"category": ""}, "blocked", "category_allowed", 'Missing required field "category"'),
        ({"category": "DevOps"}, "blocked", "category_allowed", "'DevOps' not found"),
        ({"category": "data"}, "blocked", "category_allowed", "'data' not found"),
        ({"hero_image_url": ""}, "blocked", "hero_image_required", "Missing hero image"),
        ({"slug": ""}, "blocked", "slug_format", "Slug is empty"),
        ({"slug": "a" * 257}, "blocked", "slug_format", "257 characters (limit 256)"),
        ({"slug": "a" * 256}, "ready", None, None),
        (
            {"slug": "Hello-World"},
            "blocked",
            "slug_format",
            "not lowercase words joined by hyphens",
        ),
        ({"slug": "hello--world"}, "blocked", "slug_format", "not lowercase"),
        ({"slug": "hello_world"}, "blocked", "slug_format", "not lowercase"),
        ({"slug": "-hello"}, "blocked", "slug_format", "not lowercase"),
        ({"slug": "hello-world-2"}, "ready", None, None),
        ({"hero_width": "1600", "hero_height": "1200"}, "warning", "hero_aspect_ratio", "1.33"),
        # within the 0.05 tolerance of 16:9 (1.7778): 1.74 passes, 1.72 warns
        ({"hero_width": "1740", "hero_height": "1000"}, "ready", None, None),
        ({"hero_width": "1720", "hero_height": "1000"}, "warning", "hero_aspect_ratio", "1.72"),
        ({"title": "t" * 100}, "ready", None, None),
        ({"title": "t" * 101}, "warning", "title_length", "101 characters (limit 100)"),
        (
            {"hero_width": "wide"},
            "blocked",
            "field_type",
            "column 'hero_width': expected a whole number",
        ),
        ({"id": ""}, "blocked", "id_required", "no id"),
    ],
)
def test_blog_preset_rule_by_rule(
    overrides: dict[str, str], status: str, rule: str | None, in_message: str | None
) -> None:
    result = only([blog_row(1, **overrides)])
    assert result.status == status
    if rule is None:
        assert result.issues == []
        return
    (issue,) = [i for i in result.issues if i.rule == rule]
    assert in_message in issue.message
    assert issue.fix  # every problem names a concrete fix
    assert (issue.impact is not None) == (issue.severity == "warning")


def test_every_item_sharing_a_slug_is_blocked_and_named() -> None:
    results = run(
        [blog_row(1, slug="same"), blog_row(2, slug="same"), blog_row(3, slug="same"), blog_row(4)]
    )
    assert [r.status for r in results] == ["blocked", "blocked", "blocked", "ready"]
    first = next(i for i in results[0].issues if i.rule == "slug_unique")
    assert "p-002, p-003" in first.message
    second = next(i for i in results[1].issues if i.rule == "slug_unique")
    assert "p-001, p-003" in second.message


def test_duplicate_ids_are_blocked() -> None:
    results = run([blog_row(1), blog_row(1, slug="other"), blog_row(2)])
    assert [r.status for r in results] == ["blocked", "blocked", "ready"]
    for result in results[:2]:
        (issue,) = result.issues
        assert (issue.rule, issue.severity) == ("id_unique", "blocked")
        assert issue.message == "id 'p-001' is also used by item(s) p-001"


def test_destination_categories_take_precedence() -> None:
    context = Context(allowed_categories=["Data"], categories_from="the sql destination")
    result = run([blog_row(1, category="Cloud")], context=context)[0]
    assert result.status == "blocked"
    assert "the sql destination" in result.issues[0].message


def test_no_category_list_means_only_presence_is_checked() -> None:
    config = ValidationConfig()
    items = build_items(
        [("r1", blog_row(1, category="Anything")), ("r2", blog_row(2, category=""))], BLOG
    )
    results = validate_items(items, build_rules(config), Context(allowed_categories=None))
    assert [r.status for r in results] == ["ready", "blocked"]


# --- overrides from the job file -----------------------------------------------------------------


def test_disable_a_rule() -> None:
    result = only(
        [blog_row(1, hero_image_url="")], rules={"hero_image_required": {"enabled": False}}
    )
    assert result.status == "ready"


def test_change_a_rules_severity() -> None:
    result = only(
        [blog_row(1, category="DevOps")], rules={"category_allowed": {"severity": "warning"}}
    )
    assert result.status == "warning"
    assert result.issues[0].impact


def test_set_a_rules_limits() -> None:
    rows = [blog_row(1, title="t" * 70)]
    assert only(rows, rules={"title_length": {"max": 60}}).status == "warning"
    wide = [blog_row(1, hero_width="1600", hero_height="1200")]
    assert only(wide, rules={"hero_aspect_ratio": {"ratio": "4:3"}}).status == "ready"
    assert only(wide, rules={"hero_aspect_ratio": {"tolerance": 0.5}}).status == "ready"
    assert (
        only([blog_row(1, slug="a" * 40)], rules={"slug_format": {"max_length": 30}}).status
        == "blocked"
    )


def test_add_rules() -> None:
    config = {
        "add": [
            {"rule": "required", "field": "summary", "severity": "warning"},
            {"rule": "max_length", "field": "summary", "max": 10},
            {
                "rule": "allowed_values",
                "field": "status",
                "values": ["Published"],
                "name": "published_only",
            },
            {"rule": "pattern", "field": "id", "regex": r"p-\d{3}", "hint": "look like p-001"},
        ]
    }
    results = run(
        [
            blog_row(1, summary=""),
            blog_row(2, summary="much too long a summary"),
            blog_row(3, status="Draft", id="x9"),
        ],
        config,
    )
    assert results[0].status == "warning" and results[0].issues[0].rule == "required_summary"
    assert results[1].status == "blocked" and results[1].issues[0].rule == "max_length_summary"
    rules = {i.rule for i in results[2].issues}
    assert rules == {"published_only", "pattern_id"}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"rules": {"title_lenght": {"max": 5}}},
            ["validation.rules.title_lenght", "unknown rule", "Did you mean 'title_length'?"],
        ),
        (
            {"rules": {"title_length": {"maxx": 5}}},
            [
                "validation.rules.title_length.maxx",
                "unknown key",
                "allowed: enabled, severity, max",
            ],
        ),
        (
            {"rules": {"title_length": {"max": "many"}}},
            ["validation.rules.title_length.max", "'many'"],
        ),
        (
            {"add": [{"rule": "regex", "field": "x"}]},
            ["validation.add[0].rule", "'regex'", "allowed: ", "pattern"],
        ),
        ({"add": [{"rule": "max_length", "field": "x"}]}, ["validation.add[0].max", "missing"]),
        ({"add": [{"rule": "pattern", "field": "x", "regex": "("}]}, ["validation.add[0]"]),
    ],
)
def test_rule_config_errors(config: dict[str, Any], expected: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        build_rules(ValidationConfig.model_validate(config))
    for fragment in expected:
        assert fragment in str(err.value)


def test_severity_value_is_checked_by_the_job_model() -> None:
    with pytest.raises(ValueError, match="blocked"):
        ValidationConfig.model_validate({"rules": {"title_length": {"severity": "fatal"}}})
