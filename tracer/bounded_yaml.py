"""YAML read without trusting its shape, for manifests and pipeline definitions alike.

PyYAML's composer recurses once per level of nesting, so a document of 100,000 `[`
exhausts the stack deep inside the parser; this loader stops at a depth limit while it
composes. Aliases stay shared objects: whoever walks the result must bound its walk
(tracer.manifest.check_size), or a few hundred bytes expand into billions of values.
"""

from __future__ import annotations

from typing import Any

import yaml


class NestedTooDeep(yaml.YAMLError):
    """Nesting past the limit, at `line`, `column` (counted from 1)."""

    def __init__(self, limit: int, line: int, column: int) -> None:
        super().__init__(f"nested more than {limit} levels deep")
        self.limit, self.line, self.column = limit, line, column

    @property
    def where(self) -> str:
        return f" (line {self.line}, column {self.column})"


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing nesting deeper than `max_depth` while composing."""

    max_depth = 64

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                mark = self.peek_event().start_mark
                raise NestedTooDeep(self.max_depth, mark.line + 1, mark.column + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text: str, max_depth: int) -> Any:
    """One YAML document, safe types only, nested at most `max_depth` deep."""
    loader = _BoundedLoader(text)
    loader.max_depth = max_depth
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def yaml_problem(exc: yaml.YAMLError) -> str:
    """' (line L, column C): what' from PyYAML's marks, counted from 1 like editors do (its
    str() spans several lines, with a snippet)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    words = [getattr(exc, "context", None), getattr(exc, "problem", None)]
    what = ", ".join(w for w in words if w) or str(exc).splitlines()[0]
    return f"{where}: {what}"
