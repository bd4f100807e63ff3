"""Arrow/numpy helpers and the seeded planter the demo's stages share.

Split from `tracer.demo_story` (the stages) and `tracer.demo_run` (the run and its answer
key), which both use them: table plumbing in one place, so each stage reads as its rule.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: Fixed seed: the choice of planted clients is part of the demo's contract.
SEED = 20261125


# --------------------------------------------------------------------------- helpers


def np_of(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A pyarrow column as a numpy array (booleans and integers without nulls)."""
    return np.asarray(values.to_numpy())


def ids_of(table: pa.Table) -> np.ndarray:
    return np_of(table["client_id"]).astype(np.int64)


def _pick(rng: np.random.Generator, pool: np.ndarray, n: int, avoid: set[int]) -> set[int]:
    """n distinct keys from pool (minus avoid), reproducibly for a given rng state."""
    candidates = np.setdiff1d(np.unique(pool), np.fromiter(avoid, np.int64, len(avoid)))
    if len(candidates) < n:
        raise RuntimeError(f"only {len(candidates)} candidates to plant {n} keys")
    return {int(k) for k in rng.choice(candidates, size=n, replace=False)}


def isin(ids: np.ndarray, keys: set[int]) -> np.ndarray:
    return np.isin(ids, np.fromiter(keys, np.int64, len(keys)))


def const(value: Any, n: int, type_: pa.DataType) -> pa.Array:
    return pa.array([value] * n, type_)


def with_columns(table: pa.Table, **columns: pa.Array) -> pa.Table:
    """Append (or replace) columns, keeping the order they are given in."""
    for name, values in columns.items():
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, values)
        else:
            table = table.append_column(name, values)
    return table


def sorted_by(table: pa.Table, *keys: str) -> pa.Table:
    """Stable sort: rows tied on every key keep their order (determinism)."""
    return table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys]))


def rows_of(ids: np.ndarray, keys: set[int]) -> np.ndarray:
    """Positions of the rows whose key is in keys."""
    return np.flatnonzero(isin(ids, keys))


def trace_rows(stage: str, client_ids: Any, reason: str, offer_ids: Any = None) -> pa.Table:
    """Rows of trace_main (trace_id is numbered once everything is collected)."""
    ids = pa.array(np.asarray(client_ids, dtype=np.int64), pa.int64())
    n = len(ids)
    offers = pa.array(offer_ids, pa.string()) if offer_ids is not None else pa.nulls(n, pa.string())
    return pa.table(
        {
            "client_id": ids,
            "reason": const(reason, n, pa.string()),
            "offer_id": offers,
            "stage": const(stage, n, pa.string()),
        }
    )


def offer_masks(table: pa.Table) -> dict[str, np.ndarray]:
    """Eligibility per offer, from the clients' real attributes."""
    balance = np_of(table["balance"])
    age = np_of(table["age"])
    housing_no = np_of(pc.equal(table["housing"], "no"))
    loan_no = np_of(pc.equal(table["loan"], "no"))
    return {
        "TERM_DEPOSIT": np.ones(table.num_rows, dtype=bool),
        "MORTGAGE": housing_no & (age < 50),
        "PERSONAL_LOAN": loan_no & (balance > 1000) & (balance < 20000),
        "PRIVATE_BANKING": balance >= 20000,
    }


# --------------------------------------------------------------------------- planting


class Planter:
    """The seeded choice of planted clients: the same seed always plants the same keys.

    Every deliberately planted client carries one anomaly only, so each planted journey
    tells one story; the order of the draws is part of the demo's contract.
    """

    def __init__(self, seed: int = SEED) -> None:
        self.rng = np.random.default_rng(seed)
        self.used: set[int] = set()

    def pick(self, pool: np.ndarray, n: int) -> set[int]:
        """n keys of pool never planted on before; they are then taken."""
        keys = _pick(self.rng, pool, n, self.used)
        self.used |= keys
        return keys

    def spare(self, keys: set[int]) -> None:
        """Never plant on keys that already carry a natural anomaly."""
        self.used |= keys
