"""Code of the user's own named in a job: `package.module:attribute`, imported with a clear error."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from batchgate.errors import ConfigError

_SEARCH: list[str] = []  # folders of the job files loaded (a package beside its job file)


def add_search_path(folder: str | Path) -> None:
    """Let a job's own code live beside its job file (an installed package needs nothing)."""
    folder = str(Path(folder).resolve())
    if folder not in _SEARCH:
        _SEARCH.append(folder)


@contextmanager
def _searching() -> Iterator[None]:
    extra = [f for f in _SEARCH if f not in sys.path]
    sys.path[:0] = extra
    try:
        yield
    finally:
        for folder in extra:
            if folder in sys.path:
                sys.path.remove(folder)


def load_object(ref: str, where: str, what: str = "callable") -> Any:
    """The object `ref` names ('pkg.module:name'); a ConfigError of one line when it cannot be."""
    module_name, _, attribute = ref.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{where}: {ref!r} is not 'package.module:name'. Fix: name the {what} "
                          "as module path, a colon, then its name, e.g. my_pkg.prices:to_record.")  # fmt: skip
    try:
        with _searching():
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"{where}: the module '{exc.name or module_name}' of {ref!r} cannot be found. Fix: "
            f"install the package that provides it (pip install ...) where the flow runs, or put "
            f"it beside the job file."
        ) from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise ConfigError(f"{where}: importing '{module_name}' failed: {type(exc).__name__}: "
                          f"{_first_line(exc)}. Fix: run python -c 'import {module_name}' and "
                          "correct the module.") from None  # fmt: skip
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"{where}: '{module_name}' has no '{attribute}'. Fix: check the "
                              f"{what}'s name in {ref!r}.")  # fmt: skip
        target = getattr(target, part)
    return target


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
