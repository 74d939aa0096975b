"""The domain package stays plain Python: importing it never imports Prefect."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import batchgate


def test_domain_package_does_not_import_prefect() -> None:
    modules = [m.name for m in pkgutil.walk_packages(batchgate.__path__, "batchgate.")]
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'prefect' or m.startswith('prefect.'))\n"
        "print(','.join(leaked))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "batchgate.cli" in modules and "batchgate.ledger" in modules
    assert result.stdout.strip() == ""
