"""Rules for any data (issue 19): bounds, a set of values, a type, the id field, missing fields."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import pytest

from batchgate.config import ValidationConfig
from batchgate.errors import ConfigError
from batchgate.models import Issue, Item
from batchgate.validation.engine import build_rules, check_rule_fields, validate_items
from batchgate.validation.rules import Context


def issues(
    values: list[Any], rule: dict[str, Any], field: str = "price", id_field: str = "id"
) -> list[list[Issue]]:
    """Each item's issues after the builtin rules and one added rule, items holding `values`."""
    config = ValidationConfig.model_validate({"preset": "none", "add": [rule]})
    items = [
        Item(f"p-{n}", n, f"items.csv row {n + 2}", {id_field: f"p-{n}", field: value})
        for n, value in enumerate(values)
    ]
    results = validate_items(items, build_rules(config, id_field=id_field), Context())
    return [result.issues for result in results]


def one(cell: Any, /, **rule: Any) -> Issue | None:
    """The one issue an item holding `cell` in `rule['field']` (price) gets, if any."""
    rule = {"field": "price", **rule}
    (found,) = issues([cell], rule, rule["field"])
    assert len(found) <= 1, found
    return found[0] if found else None


D = date(2024, 1, 1)

# (rule, value, message or None when the value passes)
CASES: list[tuple[dict[str, Any], Any, str | None]] = [
    ({"rule": "min", "value": 0}, -33.26, "price is -33.26, below the minimum of 0"),
    ({"rule": "min", "value": 0}, 0, None),
    ({"rule": "min", "value": 0}, 0.01, None),
    ({"rule": "min", "value": 0, "exclusive": True}, 0, "price is 0; it must be above 0"),
    ({"rule": "min", "value": 0, "exclusive": True}, 0.01, None),
    ({"rule": "max", "value": 100}, 100, None),
    ({"rule": "max", "value": 100}, 100.5, "price is 100.5, above the maximum of 100"),
    ({"rule": "max", "value": 100, "exclusive": True}, 100, "price is 100; it must be below 100"),
    ({"rule": "max", "value": 100, "exclusive": True}, 99, None),
    ({"rule": "max", "value": "2.5"}, 3, "price is 3, above the maximum of 2.5"),
    # not this rule's problem: text in a number field is field_type's, and None is skipped
    ({"rule": "min", "value": 0}, "abc", None),
    ({"rule": "min", "value": 0}, None, None),
    ({"rule": "min", "value": 0}, True, None),
    ({"rule": "min", "value": 0}, D, None),
    # dates, date-times, and a date bound on a date-time field (whole days)
    ({"rule": "min", "value": "2024-01-01"}, date(2023, 12, 31),
     "price is 2023-12-31, earlier than the minimum of 2024-01-01"),
    ({"rule": "min", "value": "2024-01-01"}, D, None),
    ({"rule": "min", "value": "2024-01-01", "exclusive": True}, D,
     "price is 2024-01-01; it must be after 2024-01-01"),
    ({"rule": "max", "value": D}, date(2024, 1, 2),
     "price is 2024-01-02, later than the maximum of 2024-01-01"),
    ({"rule": "max", "value": "2024-01-01"}, datetime(2024, 1, 1, 23, 59), None),
    ({"rule": "max", "value": "2024-01-01T12:00:00"}, datetime(2024, 1, 1, 12, 1),
     "price is 2024-01-01T12:01:00, later than the maximum of 2024-01-01T12:00:00"),
    ({"rule": "min", "value": "2024-01-01T12:00:00Z"}, datetime(2024, 1, 1, 11),
     "price is 2024-01-01T11:00:00, earlier than the minimum of 2024-01-01T12:00:00+00:00"),
    ({"rule": "min", "value": "2024-01-01"}, 5, None),
    # one_of: typed comparison, any scalars
    ({"rule": "one_of", "values": ["draft", "live"]}, "archived",
     "price is 'archived', which is not one of: draft, live"),
    ({"rule": "one_of", "values": ["draft", "live"]}, "live", None),
    ({"rule": "one_of", "values": [1, 2]}, 2, None),
    ({"rule": "one_of", "values": [1, 2]}, True, "price is True, which is not one of: 1, 2"),
    ({"rule": "one_of", "values": [1, 2]}, "1", "price is '1', which is not one of: 1, 2"),
    ({"rule": "one_of", "values": [True]}, False, "price is False, which is not one of: true"),
    ({"rule": "allowed_values", "values": ["draft"]}, "x", "price 'x' is not one of: draft"),
    # type, on the typed value
    ({"rule": "type", "type": "number"}, "abc", "price is 'abc', not a number"),
    ({"rule": "type", "type": "number"}, 1.5, None),
    ({"rule": "type", "type": "number"}, 2, None),
    ({"rule": "type", "type": "number"}, True, "price is True, not a number"),
    ({"rule": "type", "type": "integer"}, 2.5, "price is 2.5, not a whole number"),
    ({"rule": "type", "type": "integer"}, 2, None),
    ({"rule": "type", "type": "string"}, 12, "price is 12, not text"),
    ({"rule": "type", "type": "string"}, "12", None),
    ({"rule": "type", "type": "boolean"}, "yes", "price is 'yes', not true or false"),
    ({"rule": "type", "type": "boolean"}, False, None),
    ({"rule": "type", "type": "date"}, datetime(2024, 1, 1), "price is 2024-01-01T00:00:00, "
     "not a date"),
    ({"rule": "type", "type": "date"}, D, None),
    ({"rule": "type", "type": "datetime"}, D, "price is 2024-01-01, not a date and time"),
    ({"rule": "type", "type": "list"}, "a, b", "price is 'a, b', not a list"),
    ({"rule": "type", "type": "list"}, ["a"], None),
    ({"rule": "type", "type": "url"}, "ftp://x.org/a", "price is 'ftp://x.org/a', not an http(s) URL"),
    ({"rule": "type", "type": "url"}, "https:///nohost", "not an http(s) URL"),
    ({"rule": "type", "type": "url"}, "https://example.com/a", None),
    ({"rule": "type", "type": "json"}, {"a": [1, None]}, None),
    ({"rule": "type", "type": "json"}, {1, 2}, "price is {1, 2}, not JSON"),
    ({"rule": "type", "type": "number"}, None, None),
    # a pattern's hint is any phrase, and the message stays English
    ({"rule": "pattern", "regex": r"\d+", "hint": "a price above 0"}, "-33.26",
     "price is '-33.26', which does not match the pattern \\d+ (a price above 0)"),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "value", "message"), CASES)
def test_rule_kinds(rule: dict[str, Any], value: Any, message: str | None) -> None:
    found = one(value, **rule)
    if message is None:
        assert found is None
        return
    assert found is not None and message in found.message
    assert (found.field, found.severity) == ("price", "blocked")
    assert "items.csv row 2, column 'price'" in found.fix
    assert "does not be" not in found.message + found.fix


@pytest.mark.parametrize(
    ("rule", "value", "fix"),
    [
        ({"rule": "min", "value": 0}, -1, "Set price to 0 or more in items.csv row 2, column"),
        ({"rule": "min", "value": 0, "exclusive": True}, 0, "Set price to more than 0 in"),
        ({"rule": "max", "value": -40}, 0, "Set price to -40 or less in"),
        ({"rule": "max", "value": -40, "exclusive": True}, -40, "Set price to less than -40 in"),
        ({"rule": "min", "value": "2030-01-01"}, D, "Set price to 2030-01-01 or later in"),
        ({"rule": "max", "value": "2020-01-01", "exclusive": True}, D,
         "Set price to a date earlier than 2020-01-01 in"),
        ({"rule": "one_of", "values": ["a", "b"]}, "c", "to one of: a, b."),
        ({"rule": "type", "type": "integer"}, 1.5, "to a whole number, e.g. 12."),
    ],
)  # fmt: skip
def test_each_problem_names_its_fix(rule: dict[str, Any], value: Any, fix: str) -> None:
    found = one(value, **rule)
    assert found is not None and fix in found.fix


def test_the_message_names_the_rule_and_a_warning_carries_its_impact() -> None:
    found = one(-1, rule="min", value=0, name="price_positive", severity="warning")
    assert found is not None
    assert (found.rule, found.severity) == ("price_positive", "warning") and found.impact


def test_a_long_text_value_is_cut_short_in_the_message() -> None:
    found = one("x" * 500, rule="type", type="number")
    assert found is not None and len(found.message) < 100 and "..." in found.message


def test_the_length_rules_count_a_lists_items() -> None:
    found = one(["a", "b", "c"], rule="max_length", max=2, field="tags")
    assert found is not None and found.message == "tags has 3 items (limit 2)"
    assert "to 2 items or fewer" in found.fix


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"rule": "min", "field": "price"}, "validation.add[0].value: missing"),
        ({"rule": "min", "field": "price", "value": "soon"}, "found 'soon'"),
        ({"rule": "max", "field": "price", "value": True}, "found True"),
        ({"rule": "min", "field": "price", "value": 0, "exclusiv": True}, "unknown key"),
        ({"rule": "type", "field": "price", "type": "money"}, "validation.add[0].type"),
        ({"rule": "one_of", "field": "price", "values": []}, "validation.add[0].values"),
    ],
)
def test_bad_settings_of_the_new_kinds_are_config_errors(
    rule: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        build_rules(ValidationConfig.model_validate({"preset": "none", "add": [rule]}))
    assert expected in str(err.value)


# --- the id field -------------------------------------------------------------------------------


def test_the_builtin_rules_check_the_jobs_id_field() -> None:
    found = issues(["A1", "A1", "", "B2"], {"rule": "min", "field": "price", "value": 0}, "sku",
                   id_field="sku")  # fmt: skip
    assert [[i.rule for i in item] for item in found] == [
        ["id_unique"],
        ["id_unique"],
        ["id_required"],
        [],
    ]
    assert found[0][0].message == "sku 'A1' is also used by item(s) p-1"
    assert found[2][0].message == "Item has no sku (shown here as p-2)"
    assert "Set a unique, stable sku in items.csv row 4, column 'sku'" in found[2][0].fix


@pytest.mark.parametrize(
    ("rule", "values", "builtin"),
    [
        ({"rule": "unique", "field": "sku"}, ["A1", "A1"], "id_unique"),
        ({"rule": "unique", "field": "sku", "name": "sku_once"}, ["A1", "A1"], "id_unique"),
        ({"rule": "required", "field": "sku"}, ["", "A1"], "id_required"),
    ],
)
def test_a_jobs_rule_on_the_id_field_lists_each_problem_once(
    rule: dict[str, Any], values: list[str], builtin: str
) -> None:
    found = issues(values, rule, "sku", id_field="sku")
    (first,) = found[0]
    assert first.rule == builtin


def test_a_rule_on_the_id_field_of_another_kind_still_runs() -> None:
    rule = {"rule": "pattern", "field": "sku", "regex": "A\\d"}
    found = issues(["X1"], rule, "sku", id_field="sku")
    assert [i.rule for i in found[0]] == ["pattern_sku"]


def test_a_skipped_duplicate_is_still_checked_for_mistakes() -> None:
    config = ValidationConfig.model_validate(
        {"preset": "none", "add": [{"rule": "required", "field": "sku", "lable": "x"}]}
    )
    with pytest.raises(ConfigError, match=r"validation.add\[0\].lable: unknown key"):
        build_rules(config, id_field="sku")


# --- a rule on a field the source lacks ---------------------------------------------------------


def rules_for(config: dict[str, Any], **kwargs: Any) -> Any:
    return build_rules(ValidationConfig.model_validate(config), **kwargs)


def test_a_rule_on_a_missing_field_is_a_job_error() -> None:
    rules = rules_for(
        {
            "preset": "none",
            "add": [{"rule": "min", "field": "nmae", "value": 0, "name": "min_price"}],
        }
    )
    with pytest.raises(ConfigError) as err:
        check_rule_fields(rules, ["sku", "name", "price"], "the source")
    assert str(err.value) == (
        "validation.add[0] (min_price): the field 'nmae' is not in the source; its fields are: "
        "sku, name, price. Did you mean 'name'? Fix: correct the field name in the job file."
    )


def test_every_missing_field_is_named_once_with_one_fix() -> None:
    added = [
        {"rule": "min", "field": "price", "value": 0},
        {"rule": "required", "field": "colour"},
        {"rule": "type", "field": "zzz", "type": "url"},
    ]
    rules = rules_for({"preset": "none", "add": added})
    with pytest.raises(ConfigError) as err:
        check_rule_fields(rules, ["sku", "color"], "products.csv")
    message = str(err.value)
    assert "validation.add[0] (min_price): the field 'price' is not in products.csv" in message
    assert "validation.add[1] (required_colour)" in message and "Did you mean 'color'?" in message
    assert "validation.add[2] (type_zzz)" in message
    assert message.count("Fix:") == 1


def test_rules_on_fields_found_pass() -> None:
    rules = rules_for({"preset": "none", "add": [{"rule": "min", "field": "price", "value": 0}]})
    check_rule_fields(rules, iter(["sku", "price"]), "the source")


def test_builtin_preset_and_destination_rules_are_not_checked() -> None:
    from batchgate.destinations import DestinationCheck

    check = DestinationCheck(missing_required=["sku"])
    rules = rules_for({"preset": "blog"}, check=check, id_field="sku")
    assert {rule.origin for rule in rules} == {""}
    check_rule_fields(rules, ["price"], "the source")  # no id, title, slug... and no error


def test_an_override_of_a_preset_rule_is_checked() -> None:
    rules = rules_for({"preset": "blog", "rules": {"title_length": {"max": 80}}})
    assert [r.origin for r in rules if r.origin] == ["validation.rules.title_length"]
    with pytest.raises(ConfigError, match=r"validation.rules.title_length \(title_length\)"):
        check_rule_fields(rules, ["id", "slug"], "posts.csv")


def test_the_rule_constructor_keeps_its_positional_signature() -> None:
    from batchgate.validation.rules import Minimum

    rule = Minimum("m", "price", "blocked", Minimum.Params.model_validate({"value": 1}))
    assert (rule.name, rule.field, rule.severity, rule.origin) == ("m", "price", "blocked", "")
