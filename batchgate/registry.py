"""Connectors of the user's own, found the Python way: a `class:` path in the job, or an entry
point an installed package registers (groups `batchgate.destinations`, `batchgate.sources`), as
pytest and dlt find their plugins. Every failure is one ConfigError line naming the class and the
fix. The package must be installed wherever the flow runs: on every worker of a deployment.
"""

from __future__ import annotations

import difflib
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from batchgate.config import PluginConfig, expand_env
from batchgate.connectors import (
    DestinationBase,
    SourceBase,
    missing_core,
    undefined_capabilities,
)
from batchgate.errors import ConfigError
from batchgate.plugins import load_object
from batchgate.secrets import MASKED, SecretText, secret_values

GROUPS = {"destination": "batchgate.destinations", "source": "batchgate.sources"}
BASES: dict[str, type] = {"destination": DestinationBase, "source": SourceBase}
BUILT_IN = {
    "destination": ("sql", "webflow", "block", "python"),
    "source": ("file", "notion", "block", "python"),
}


def build(section: str, config: PluginConfig) -> Any:
    """The connector a plugin section names, constructed with its options and checked."""
    cls, name = connector_class(section, config)
    options = plain_options(section, config.options)
    make = getattr(cls, "from_options", None) or cls
    try:
        connector = make(**options)
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's constructor refused the options
        raise ConfigError(
            f"{section}.options are refused by {name}: {_why(exc, config)}. Fix: "
            f"give {section}.options the keyword arguments {name} takes."
        ) from None
    checked(section, name, cls, connector)
    undeclared = undefined_capabilities(connector) if section == "destination" else []
    if undeclared:
        raise ConfigError(
            f"{name} declares capabilities it does not implement: "
            f"{', '.join(undeclared)}. Fix: define those methods, or leave the "
            "capabilities undeclared."
        )
    return connector


def connector_class(section: str, config: PluginConfig) -> tuple[type, str]:
    """The class a plugin section names, and how to name it in messages."""
    if config.type == "python":
        if not config.class_:
            raise ConfigError(
                f"{section}.class is missing: type python names the connector's "
                f"class. Fix: add class: my_pkg.module:ClassName to {section}."
            )
        ref = config.class_
        return checked(section, ref, load_object(ref, f"{section}.class", "connector class"))
    point = entry_point(section, config.type)
    try:
        loaded = point.load()
    except Exception as exc:  # noqa: BLE001 - the installed package failed while importing
        raise ConfigError(
            f"{section}.type {config.type!r}: loading {point.value} (entry point "
            f"of {_dist(point)}) failed: {type(exc).__name__}: {exc}. Fix: "
            f"reinstall that package where the flow runs."
        ) from None
    return checked(section, f"{config.type} ({point.value})", loaded)


def entry_point(section: str, name: str) -> EntryPoint:
    """The entry point an installed package registers under `name`, or one clear refusal."""
    points = {p.name: p for p in entry_points(group=GROUPS[section])}
    if name in points:
        return points[name]
    near = difflib.get_close_matches(name, [*points, *BUILT_IN[section]], n=1)
    maybe = f" Did you mean {near[0]!r}?" if near else ""
    installed = ", ".join(sorted(points)) or "none"
    raise ConfigError(
        f"{section}.type {name!r} is not a connector batchgate knows: built in "
        f"{', '.join(BUILT_IN[section])}; installed ({GROUPS[section]}): "
        f"{installed}.{maybe} Fix: pip install the package that provides it where "
        f"the flow runs, or write type: python with class: my_pkg.module:Class."
    )


def checked(section: str, name: str, cls: Any, connector: Any = None) -> tuple[type, str]:
    """The class, once it is a subclass of the section's base that defines the required core
    (its `key` or `path` too, once the `connector` is constructed)."""
    base = BASES[section]
    if not isinstance(cls, type) or not issubclass(cls, base):
        kind = (
            type(cls).__name__
            if not isinstance(cls, type)
            else f"class not derived from {base.__name__}"
        )
        raise ConfigError(
            f"{section} {name} is a {kind}, not a {base.__name__} subclass. Fix: "
            f"derive the connector from batchgate.connectors.{base.__name__}."
        )
    missing = missing_core(cls, connector)
    if missing:
        raise ConfigError(
            f"{section} {name} does not define {', '.join(missing)}, the required "
            f"core of a {base.__name__}. Fix: define them in {cls.__name__}."
        )
    return cls, name


def installed(section: str) -> list[str]:
    """The connector names installed packages register for a section."""
    return sorted(p.name for p in entry_points(group=GROUPS[section]))


def import_registered(section: str) -> None:
    """Import every registered connector, so Prefect knows their block types (`type: block`)."""
    for point in entry_points(group=GROUPS[section]):
        try:
            point.load()
        except Exception:  # noqa: BLE001, S112 - a broken one only matters when a job names it
            continue


def plain_options(section: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options as the class takes them: secrets as plain text, a `${VAR}` left unexpanded
    (a job from a flow run's parameters, on a worker) read from this machine's environment."""
    return {key: _plain(value, f"{section}.options.{key}") for key, value in options.items()}


def _plain(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    if not isinstance(value, SecretText):
        return value
    text = value.get_secret_value()
    if text == MASKED:
        raise ConfigError(
            f"{where} was recorded masked (the job file wrote the secret itself). "
            f"Fix: write it as ${{VAR}} in the job file and set VAR where the flow "
            "runs, or pass --job JOB.yaml."
        )
    return expand_env(text, where) if "${" in text else text


def _why(exc: BaseException, config: PluginConfig) -> str:
    """The refusal in one line, never echoing an option's value (it may be a secret)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors())
        except Exception:  # noqa: BLE001, S110 - not pydantic's: the message below
            pass
    text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    for secret in secret_values(config):
        text = text.replace(secret, MASKED)
    return text


def _dist(point: EntryPoint) -> str:
    dist = getattr(point, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an installed package"


def check_classes(job: Any) -> None:
    """Import the connector classes a job names (without building them): a ConfigError first."""
    for section in ("source", "destination"):
        config = getattr(job, section, None)
        if isinstance(config, PluginConfig):
            connector_class(section, config)
