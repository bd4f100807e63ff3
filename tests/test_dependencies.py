"""Every module the product imports at run time comes from a declared dependency.

The dev extra pulls in pandas (and so numpy) for the tests: without this check an
import that only the dev tools provide passes every test and fails a user's first
command. `.ci/run` proves the same from the other side, running the demo from the
bare wheel.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("tracer", "api", "workers", "migrations")
# Imported inside `try: ... except ImportError` with a fallback, and declared in this extra.
OPTIONAL = {"gunicorn": "server"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_runtime_imports_are_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    extras = {k: {_name(r) for r in v} for k, v in project["optional-dependencies"].items()}
    modules = {
        name
        for package in PRODUCT
        for path in (ROOT / package).rglob("*.py")
        for name in _imports(path)
    }
    third_party = modules - set(sys.stdlib_module_names) - set(PRODUCT)
    distributions = packages_distributions()
    missing = []
    for module in sorted(third_party):
        dists = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        allowed = extras[OPTIONAL[module]] if module in OPTIONAL else declared
        if not dists & allowed:
            missing.append(f"{module} (from {', '.join(sorted(dists))})")
    assert not missing, f"imported at run time but not a declared dependency: {missing}"


def test_the_dev_extra_is_not_needed_at_run_time() -> None:
    """The check above is only as good as its view of the tree: it must see the product."""
    seen = {n for p in (ROOT / "tracer").rglob("*.py") for n in _imports(p)}
    assert {"duckdb", "pyarrow", "sqlalchemy"} <= seen
