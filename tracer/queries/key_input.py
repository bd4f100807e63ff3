"""Keys as users write them: values in key-column order, or by column name
(`?branch=LIS&client_no=42`); the run's key columns say which is which."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from tracer.errors import TracerError


def key_values(
    columns: Sequence[str],
    positional: Sequence[object] | None = None,
    named: Mapping[str, object] | None = None,
) -> list[object]:
    """The key's values in key-column order, from one of the two forms; errors name the field."""
    named = dict(named or {})
    if positional and named:
        raise TracerError(
            f"give the key by position (key=...) or by name ({', '.join(columns)}), not both; "
            f"got key and {', '.join(named)}"
        )
    if positional:
        return list(positional)
    unknown = [name for name in named if name not in columns]
    if unknown:
        raise TracerError(
            f"{', '.join(map(repr, unknown))} is not a key column; the key is "
            f"({', '.join(columns)}): give key=... in that order, or each column by name"
        )
    missing = [c for c in columns if c not in named]
    if missing:
        what = "no key given" if not named else f"key column(s) {', '.join(missing)} missing"
        raise TracerError(
            f"{what}: the key is ({', '.join(columns)}); give "
            + "&".join(f"{c}=..." for c in columns)
            + " or key=... in that order"
        )
    return [named[c] for c in columns]


def matches(columns: Sequence[str], named: Mapping[str, object]) -> bool:
    """Does a run whose key is `columns` hold keys written with these names?"""
    return set(columns) == set(named)
