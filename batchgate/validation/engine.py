"""Builds the rule set from a preset plus the job's overrides, and runs it over a batch."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError

from batchgate.config import Job, ValidationConfig
from batchgate.destinations import DestinationCheck
from batchgate.errors import ConfigError
from batchgate.images import ImageProbe
from batchgate.models import Item, ItemResult
from batchgate.schema import SCHEMAS
from batchgate.validation.presets import PRESETS, RuleSpec, builtin
from batchgate.validation.rules import (
    KINDS,
    Context,
    FieldTypes,
    IdPresent,
    Params,
    Rule,
    Unique,
    UnmappedRequired,
)

_BUILTIN_KINDS: dict[str, type[Rule]] = {
    "id": IdPresent,
    "unique": Unique,
    "field_type": FieldTypes,
}


def build_rules(
    config: ValidationConfig, check: DestinationCheck | None = None, id_field: str = "id"
) -> list[Rule]:
    """The builtin rules on the job's id field, the preset's rules with the job's overrides
    applied, the job's added rules, and the destination's required fields."""
    specs = {spec.name: spec for spec in PRESETS[config.preset]}
    _check_overrides(config, specs)
    builtins = builtin(id_field)
    rules = [_make(_BUILTIN_KINDS[s.kind], s.name, s.field, s.severity, {}, "") for s in builtins]
    rules += _preset_rules(config, specs)
    covered = {(s.kind, s.field) for s in builtins}
    rules += _added_rules(config, {rule.name for rule in rules}, covered)
    for slug in check.missing_required if check else []:
        rules.append(UnmappedRequired("destination_required_field", slug, "blocked", Params()))
    return rules


def _check_overrides(config: ValidationConfig, specs: dict[str, RuleSpec]) -> None:
    for name in config.rules:
        if name not in specs:
            known = ", ".join(specs) or "(none)"
            close = difflib.get_close_matches(name, list(specs), n=1)
            maybe = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"validation.rules.{name}: unknown rule; the '{config.preset}' preset has: "
                f"{known}.{maybe} To add a new rule, list it under validation.add."
            )


def _preset_rules(config: ValidationConfig, specs: dict[str, RuleSpec]) -> list[Rule]:
    schema = SCHEMAS.get(config.preset)
    optional = set(schema.columns) - set(schema.required) if schema else set()
    rules = []
    for spec in specs.values():
        settings = config.rules.get(spec.name)
        if settings is not None and not settings.enabled:
            continue
        severity = (settings.severity if settings else None) or spec.severity
        params = {**spec.params, **(settings.params() if settings else {})}
        where = f"validation.rules.{spec.name}"
        rule = _make(KINDS[spec.kind], spec.name, spec.field, severity, params, where)
        # an override names the rule's field too; a field the preset declares optional may be absent
        if settings is not None and spec.field not in optional:
            rule.origin = where
        rules.append(rule)
    return rules


# An added rule of this kind checks what the builtin rule of that kind checks on the same field.
_SAME_AS_BUILTIN = {"required": "id", "unique": "unique"}


def _added_rules(
    config: ValidationConfig, names: set[str], covered: set[tuple[str, str]]
) -> list[Rule]:
    rules = []
    for index, added in enumerate(config.add):
        where = f"validation.add[{index}]"
        if added.rule not in KINDS:
            raise ConfigError(
                f"{where}.rule: unknown rule kind {added.rule!r}; allowed: {', '.join(sorted(KINDS))}."
            )
        name = added.name or f"{added.rule}_{added.field}"
        if name in names:
            raise ConfigError(
                f"{where}.name: a rule named {name!r} already exists; give it another name."
            )
        names.add(name)
        kind, severity = KINDS[added.rule], added.severity or "blocked"
        rule = _make(kind, name, added.field, severity, added.params(), where)
        if (_SAME_AS_BUILTIN.get(added.rule), added.field) in covered:
            continue  # checked (its settings too) but not run: each problem is listed once
        rule.origin = where
        rules.append(rule)
    return rules


def check_rule_fields(rules: list[Rule], fields_found: Iterable[str], where: str) -> None:
    """Refuse (ConfigError) a rule the job file set on a field the source does not have.

    `where` names the source in the message, e.g. "the source" or "products.csv". Builtin and
    preset rules (origin ""), and the destination's required fields, are not checked."""
    found = list(dict.fromkeys(fields_found))
    problems = [
        _missing_field(rule, found, where)
        for rule in rules
        if rule.origin and rule.field not in found
    ]
    if problems:
        raise ConfigError(" ".join(problems) + " Fix: correct the field name in the job file.")


def _missing_field(rule: Rule, found: list[str], where: str) -> str:
    close = difflib.get_close_matches(rule.field, found, n=1)
    maybe = f" Did you mean '{close[0]}'?" if close else ""
    return (
        f"{rule.origin} ({rule.name}): the field '{rule.field}' is not in {where}; its fields "
        f"are: {', '.join(found) or '(none)'}.{maybe}"
    )


def _make(kind: type[Rule], name: str, field: str, severity: Any, params: dict, where: str) -> Rule:
    try:
        checked = kind.Params.model_validate(params)
    except ValidationError as exc:
        allowed = ", ".join(["enabled", "severity", *kind.Params.model_fields]) if where else ""
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                problems.append(
                    f"{where}.{key}: unknown key (value {err['input']!r}); allowed: {allowed}."
                )
            elif err["type"] == "missing":
                problems.append(f"{where}.{key}: missing; the {kind.kind} rule needs it.")
            else:
                problems.append(f"{where}.{key}: value {err.get('input')!r}: {err['msg']}.")
        raise ConfigError(" ".join(problems)) from None
    try:
        return kind(name, field, severity, checked)
    except Exception as exc:  # e.g. a regex that does not compile
        raise ConfigError(f"{where}: {exc}.") from None


def validate_items(items: list[Item], rules: list[Rule], context: Context) -> list[ItemResult]:
    """Run every rule over every item; each item gets its full list of issues."""
    for rule in rules:
        rule.prepare(items, context)
    results = []
    for item in items:
        issues = [issue for rule in rules for issue in rule.check(item, context)]
        results.append(ItemResult(item.id, item.seq, item.title, item.location, issues))
    return results


def category_options(
    job: Job, check: DestinationCheck | None = None
) -> tuple[list[str] | None, str]:
    """The allowed categories and where they came from: the destination's own, else the job file's."""
    if check is not None and check.categories is not None:
        return list(check.categories), f"the {job.destination.type} destination"  # type: ignore[union-attr]
    destination = job.destination
    reported = getattr(destination, "categories", None) if destination else None
    if reported is not None:
        return list(reported), f"the {destination.type} destination"  # type: ignore[union-attr]
    return job.validation.allowed_categories, "the job file (validation.allowed_categories)"


def make_context(
    job: Job, probe: ImageProbe | None = None, check: DestinationCheck | None = None
) -> Context:
    """The validation context for a job, with an image probe using the job's timeout and its
    network setting (item URLs reach private addresses only if network.allow_private_hosts)."""
    categories, origin = category_options(job, check)
    timeout = job.validation.image_timeout_s
    probe = probe or ImageProbe(
        timeout=timeout,
        deadline=3 * timeout,
        allow_private_hosts=job.network.allow_private_hosts,
    )
    return Context(allowed_categories=categories, categories_from=origin, probe=probe)
