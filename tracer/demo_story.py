"""The demo campaign itself: the bank clients through 7 stages, anomalies planted, in memory.

Split from `tracer.demo` (which writes the files and serves the answer key) so each
module holds one concept; see that module for the story stage by stage.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

PIPELINE_NAME = "bank_campaign"
DEFAULT_RUN_ID = "demo-2026-11-25"
#: Fixed seed: the choice of planted clients is part of the demo's contract.
SEED = 20261125
STAGES: tuple[str, ...] = (
    "selection",
    "exclusions",
    "offer_selection",
    "offer_enrichment",
    "buffer_update",
    "buffer_selection",
    "output",
)
MANIFEST_NAME = "manifest.yaml"
PLANTED_NAME = "planted.json"

#: Where each dataset lands, relative to the manifest's directory.
OUTPUT_PATHS: dict[str, str] = {
    "selection": "selection/",
    "exclusions": "exclusions.parquet",
    "offer_selection": "offer_selection.parquet",
    "offer_enrichment": "offer_enrichment/",
    "buffer_update": "buffer_update.parquet",
    "buffer_selection": "buffer_selection.parquet",
    "output": "output.parquet",
}
TRACE_PATHS: dict[str, str] = {
    "trace_main": "trace_main/",
    "trace_buffer": "trace_buffer.parquet",
}

# Sizes of the planted sets (the natural flows are as large as the rules make them).
N_NULL_KEY_ROWS = 3
N_ORPHANED = 8
N_CONFLICT = 6
N_NEVER_ENTERED = 2
N_DUPLICATED_OFFER = 5
N_DUPLICATE_ROWS = 6
N_COLLAPSED = 5
N_APPEARED = 4
N_PHANTOM_OUTPUT = 4
N_SELECTION_PARTS = 4

#: Offers, in offer_selection order: (offer_id, offer_rule). Eligibility is in
#: ``_offer_masks``; a client gets 1 to 3 of them.
OFFERS: tuple[tuple[str, str], ...] = (
    ("TERM_DEPOSIT", "all_clients"),
    ("MORTGAGE", "no_housing_loan_under_50"),
    ("PERSONAL_LOAN", "no_personal_loan_balance_1k_to_20k"),
    ("PRIVATE_BANKING", "balance_20k_plus"),
)
#: The offer reference table joined at offer_enrichment: (offer_id, offer_family,
#: product_name, priority; 1 = best). PRIVATE_BANKING has a parent and a child
#: row: the planted one-to-many join.
OFFER_REFERENCE: tuple[tuple[str, str, str, int], ...] = (
    ("TERM_DEPOSIT", "savings", "Term deposit 12 months", 3),
    ("MORTGAGE", "credit", "Mortgage", 2),
    ("PERSONAL_LOAN", "credit", "Personal loan", 4),
    ("PRIVATE_BANKING", "wealth", "Private banking", 1),
    ("PRIVATE_BANKING", "wealth", "Private banking - Premier", 1),
)
MULTIPLIED_OFFER = "PRIVATE_BANKING"
#: Final outcomes of keys that entered and left (the residual subtracts these).
_LEFT = ("dropped", "dropped_unreported", "orphaned")


def load_bank_clients() -> pa.Table:
    """The packaged bank clients, with a nullable key (stage outputs may hold nulls)."""
    resource = files("tracer") / "data" / "bank_clients.parquet"
    with resource.open("rb") as fh:
        table = pq.read_table(fh)
    schema = pa.schema([field.with_nullable(True) for field in table.schema])
    return pa.Table.from_arrays(table.columns, schema=schema)


# --------------------------------------------------------------------------- helpers


def _np(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A pyarrow column as a numpy array (booleans and integers without nulls)."""
    return np.asarray(values.to_numpy())


def _ids(table: pa.Table) -> np.ndarray:
    return _np(table["client_id"]).astype(np.int64)


def _pick(rng: np.random.Generator, pool: np.ndarray, n: int, avoid: set[int]) -> set[int]:
    """n distinct keys from pool (minus avoid), reproducibly for a given rng state."""
    candidates = np.setdiff1d(np.unique(pool), np.fromiter(avoid, np.int64, len(avoid)))
    if len(candidates) < n:
        raise RuntimeError(f"only {len(candidates)} candidates to plant {n} keys")
    return {int(k) for k in rng.choice(candidates, size=n, replace=False)}


def _isin(ids: np.ndarray, keys: set[int]) -> np.ndarray:
    return np.isin(ids, np.fromiter(keys, np.int64, len(keys)))


def _const(value: Any, n: int, type_: pa.DataType) -> pa.Array:
    return pa.array([value] * n, type_)


def _with(table: pa.Table, **columns: pa.Array) -> pa.Table:
    """Append (or replace) columns, keeping the order they are given in."""
    for name, values in columns.items():
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, values)
        else:
            table = table.append_column(name, values)
    return table


def _sorted_by(table: pa.Table, *keys: str) -> pa.Table:
    """Stable sort: rows tied on every key keep their order (determinism)."""
    return table.take(pc.sort_indices(table, sort_keys=[(k, "ascending") for k in keys]))


def _rows_of(ids: np.ndarray, keys: set[int]) -> np.ndarray:
    """Positions of the rows whose key is in keys."""
    return np.flatnonzero(_isin(ids, keys))


def _trace(stage: str, client_ids: Any, reason: str, offer_ids: Any = None) -> pa.Table:
    """Rows of trace_main (trace_id is numbered once everything is collected)."""
    ids = pa.array(np.asarray(client_ids, dtype=np.int64), pa.int64())
    n = len(ids)
    offers = pa.array(offer_ids, pa.string()) if offer_ids is not None else pa.nulls(n, pa.string())
    return pa.table(
        {
            "client_id": ids,
            "reason": _const(reason, n, pa.string()),
            "offer_id": offers,
            "stage": _const(stage, n, pa.string()),
        }
    )


def _offer_masks(table: pa.Table) -> dict[str, np.ndarray]:
    """Eligibility per offer, from the clients' real attributes."""
    balance = _np(table["balance"])
    age = _np(table["age"])
    housing_no = _np(pc.equal(table["housing"], "no"))
    loan_no = _np(pc.equal(table["loan"], "no"))
    return {
        "TERM_DEPOSIT": np.ones(table.num_rows, dtype=bool),
        "MORTGAGE": housing_no & (age < 50),
        "PERSONAL_LOAN": loan_no & (balance > 1000) & (balance < 20000),
        "PRIVATE_BANKING": balance >= 20000,
    }


# --------------------------------------------------------------------------- the run


class _Run:
    """The tables of one demo run, built in memory, and the answer key."""

    def __init__(self) -> None:
        self.selection_parts: list[pa.Table] = []
        self.outputs: dict[str, pa.Table] = {}
        self.trace_main: pa.Table | None = None
        self.trace_buffer: pa.Table | None = None
        self.keys: dict[str, dict[str, set[int]]] = {s: {} for s in STAGES}
        self.rows: dict[str, dict[str, int]] = {s: {} for s in STAGES}
        self.final: dict[str, set[int]] = {}
        self.schema_drift: dict[str, list[str]] = {}
        self.summary: dict[str, int] = {}


def _construct() -> _Run:
    """Run the campaign pipeline over the bank clients, planting each root cause."""
    rng = np.random.default_rng(SEED)
    run = _Run()
    bank = load_bank_clients()
    traces: list[pa.Table] = []

    # selection: clients reachable by phone (contact known) enter the campaign.
    selected = bank.filter(pc.not_equal(bank["contact"], "unknown"))
    sel_ids = _ids(selected)
    null_at = np.sort(rng.choice(selected.num_rows, N_NULL_KEY_ROWS, replace=False))
    null_rows = selected.take(null_at).set_column(
        0, "client_id", pa.nulls(N_NULL_KEY_ROWS, pa.int64())
    )
    for i, chunk in enumerate(np.array_split(np.arange(selected.num_rows), N_SELECTION_PARTS)):
        part = selected.slice(int(chunk[0]), len(chunk))
        if i < N_NULL_KEY_ROWS:
            part = pa.concat_tables([part, null_rows.slice(i, 1)])
        run.selection_parts.append(part)
    run.outputs["selection"] = pa.concat_tables(run.selection_parts)
    run.rows["selection"]["null_key"] = N_NULL_KEY_ROWS

    # exclusions: real rules, logged in trace_main (reported).
    credit_default = _np(pc.equal(selected["default"], "yes"))
    negative_with_loan = _np(
        pc.and_(pc.equal(selected["loan"], "yes"), pc.less(selected["balance"], 0))
    )
    excluded = credit_default | negative_with_loan
    # Every deliberately planted client carries one anomaly only (readable journeys).
    used: set[int] = set()
    orphaned = _pick(rng, sel_ids[~excluded], N_ORPHANED, used)
    used |= orphaned
    conflict = _pick(rng, sel_ids[excluded], N_CONFLICT, used)
    used |= conflict
    keep = (~excluded | _isin(sel_ids, conflict)) & ~_isin(sel_ids, orphaned)
    exclusions = selected.filter(pa.array(keep))
    traces.append(_trace("exclusions", sel_ids[credit_default], "credit_default"))
    traces.append(_trace("exclusions", sel_ids[negative_with_loan], "negative_balance_with_loan"))
    # The default rule also ran on clients that were never selected: phantom drops.
    bank_ids = _ids(bank)
    unselected_default = _np(
        pc.and_(pc.equal(bank["contact"], "unknown"), pc.equal(bank["default"], "yes"))
    )
    never_entered = _pick(rng, bank_ids[unselected_default], N_NEVER_ENTERED, used)
    used |= never_entered
    traces.append(_trace("exclusions", sorted(never_entered), "credit_default"))
    dropped_at_exclusions = {int(k) for k in sel_ids[excluded]} - conflict
    run.outputs["exclusions"] = exclusions
    run.keys["exclusions"] = {
        "dropped": dropped_at_exclusions,
        "orphaned": orphaned,
        "conflict": conflict,
        "phantom_drop": never_entered,
    }

    # offer_selection: 1-3 offers per client (expected fan-out).
    masks = _offer_masks(exclusions)
    position = pa.array(np.arange(exclusions.num_rows), pa.int64())
    pieces = []
    for rank, (offer_id, rule) in enumerate(OFFERS):
        chosen = exclusions.filter(pa.array(masks[offer_id]))
        n = chosen.num_rows
        pieces.append(
            _with(
                chosen,
                offer_id=_const(offer_id, n, pa.string()),
                offer_rule=_const(rule, n, pa.string()),
                _pos=position.filter(pa.array(masks[offer_id])),
                _rank=_const(rank, n, pa.int32()),
            )
        )
    offers = _sorted_by(pa.concat_tables(pieces), "_pos", "_rank")
    offer_ids = _ids(offers)
    uniq, per_client = np.unique(offer_ids, return_counts=True)
    private = {int(k) for k in _ids(exclusions)[masks[MULTIPLIED_OFFER]]}
    # Planted: the same offer selected twice by two rules (grain violation).
    twice = _pick(rng, uniq, N_DUPLICATED_OFFER, used | private)
    used |= twice
    td_rows = np.flatnonzero(
        _isin(offer_ids, twice) & _np(pc.equal(offers["offer_id"], "TERM_DEPOSIT"))
    )
    extra = offers.take(td_rows)
    extra = _with(extra, offer_rule=_const("reactivation_list", extra.num_rows, pa.string()))
    offers = _sorted_by(pa.concat_tables([offers, extra]), "_pos", "_rank")
    run.outputs["offer_selection"] = offers.drop_columns(["_pos", "_rank"])
    run.keys["offer_selection"] = {
        "expanded": {int(k) for k in uniq[per_client > 1]} - twice,
        "multiplied": twice,
        "grain_violation": set(twice),
    }
    # extra rows = out - in: all of such a client's offers count, not just the copy
    per_client_of = dict(zip(uniq.tolist(), per_client.tolist(), strict=True))
    run.rows["offer_selection"]["multiplied_extra_rows"] = sum(per_client_of[k] for k in twice)

    # offer_enrichment: join with the offer reference; PRIVATE_BANKING has 2 rows.
    offers = offers.drop_columns(["_rank"])
    offers = _with(offers, _row=pa.array(np.arange(offers.num_rows), pa.int64()))
    pieces = []
    for ref_rank, (offer_id, family, product, priority) in enumerate(OFFER_REFERENCE):
        matched = offers.filter(pc.equal(offers["offer_id"], offer_id))
        n = matched.num_rows
        pieces.append(
            _with(
                matched,
                offer_family=_const(family, n, pa.string()),
                product_name=_const(product, n, pa.string()),
                priority=_const(priority, n, pa.int32()),
                _ref=_const(ref_rank, n, pa.int32()),
            )
        )
    enriched = _sorted_by(pa.concat_tables(pieces), "_row", "_ref")
    enriched = enriched.drop_columns(["_pos", "_row", "_ref"])
    run.outputs["offer_enrichment"] = enriched
    run.keys["offer_enrichment"] = {
        "multiplied": set(private),
        "grain_violation": private | twice,
    }
    run.rows["offer_enrichment"]["multiplied_extra_rows"] = len(private)

    # buffer_update: contact-pressure blocks, logged only in the operational table.
    enr_ids = _ids(enriched)
    fatigue = _np(pc.greater_equal(enriched["campaign"], 15))
    pdays = _np(enriched["pdays"])
    recent = ~fatigue & (pdays >= 0) & (pdays <= 30)
    blocked_rows = fatigue | recent
    blocked = {int(k) for k in enr_ids[blocked_rows]}
    reasons = np.where(fatigue, "contact_fatigue", "recently_contacted")[blocked_rows]
    n_blocked = int(blocked_rows.sum())
    run.trace_buffer = pa.table(
        {
            "block_id": pa.array(np.arange(1, n_blocked + 1), pa.int64()),
            "cid": pa.array(enr_ids[blocked_rows], pa.int64()),
            "offer_id": enriched["offer_id"].filter(pa.array(blocked_rows)),
            "block_reason": pa.array(reasons.tolist(), pa.string()),
        }
    )
    kept = enriched.filter(pa.array(~blocked_rows))
    kept_ids = _ids(kept)
    # Planted: a few rows written twice, identical in every column.
    doubled = _pick(rng, kept_ids, N_DUPLICATE_ROWS, used | private)
    used |= doubled
    first_td = {}
    for pos in np.flatnonzero(
        _isin(kept_ids, doubled) & _np(pc.equal(kept["offer_id"], "TERM_DEPOSIT"))
    ):
        first_td.setdefault(int(kept_ids[pos]), int(pos))
    order = np.concatenate([np.arange(kept.num_rows), np.array(sorted(first_td.values()))])
    buffer_update = kept.take(pa.array(np.sort(order, kind="stable")))
    run.outputs["buffer_update"] = buffer_update
    run.keys["buffer_update"] = {
        "dropped_unreported": blocked,
        "multiplied": doubled,
        "grain_violation": (private | twice | doubled) - blocked,
    }
    run.rows["buffer_update"]["duplicate_rows"] = N_DUPLICATE_ROWS
    run.rows["buffer_update"]["multiplied_extra_rows"] = N_DUPLICATE_ROWS

    # buffer_selection: best-priority offer per client; the rest logged (reported).
    ranked = _sorted_by(
        buffer_update, "client_id", "priority", "offer_id", "product_name", "offer_rule"
    )
    ranked_ids = _ids(ranked)
    first = np.ones(len(ranked_ids), dtype=bool)
    first[1:] = ranked_ids[1:] != ranked_ids[:-1]
    uniq, per_client = np.unique(ranked_ids, return_counts=True)
    several = {int(k) for k in uniq[per_client > 1]}
    collapsed = _pick(rng, np.fromiter(several, np.int64), N_COLLAPSED, used | private)
    used |= collapsed
    logged = ~first & ~_isin(ranked_ids, collapsed)
    traces.append(
        _trace(
            "buffer_selection",
            ranked_ids[logged],
            "lower_priority_offer",
            ranked["offer_id"].filter(pa.array(logged)).to_pylist(),
        )
    )
    buffer_selection = ranked.filter(pa.array(first)).drop_columns(["offer_family"])
    run.outputs["buffer_selection"] = buffer_selection
    run.keys["buffer_selection"] = {
        "partially_dropped": several - collapsed,
        "collapsed": collapsed,
    }
    run.schema_drift["buffer_selection"] = ["offer_family"]

    # output: the target list; a manual override re-adds excluded clients
    # (appeared) and the suppression list logs clients that were long gone.
    pool = np.fromiter(dropped_at_exclusions, np.int64)
    appeared = _pick(rng, pool, N_APPEARED, used)
    used |= appeared
    phantom = _pick(rng, pool, N_PHANTOM_OUTPUT, used)
    readded = bank.take(pa.array(_rows_of(bank_ids, appeared)))
    n = readded.num_rows
    readded = _with(
        readded,
        offer_id=_const("TERM_DEPOSIT", n, pa.string()),
        offer_rule=_const("manual_override", n, pa.string()),
        product_name=_const(OFFER_REFERENCE[0][2], n, pa.string()),
        priority=_const(OFFER_REFERENCE[0][3], n, pa.int32()),
    ).select(buffer_selection.column_names)
    output = _sorted_by(pa.concat_tables([buffer_selection, readded]), "client_id")
    traces.append(_trace("output", sorted(phantom), "suppression_list"))
    run.outputs["output"] = output
    run.keys["output"] = {"appeared": appeared, "phantom_drop": phantom}

    trace_main = pa.concat_tables(traces)
    run.trace_main = trace_main.add_column(
        0, "trace_id", pa.array(np.arange(1, trace_main.num_rows + 1), pa.int64())
    )

    # Final outcomes and the business's count check (reconciliation of a run).
    targeted = {int(k) for k in _ids(output)}
    run.final = {
        "dropped": dropped_at_exclusions - targeted,
        "dropped_unreported": blocked - targeted,
        "orphaned": orphaned - targeted,
        "never_entered": set(never_entered),
    }
    reported = {int(k) for k in _ids(run.trace_main)}
    traced = reported | {int(k) for k in _np(run.trace_buffer["cid"])}
    entered = {int(k) for k in sel_ids}
    run.summary = {
        "entered": len(entered),
        "targeted": len(targeted),
        "traced": len(traced),
        "traced_reported": len(reported),
        "gap": len(entered) - len(targeted) - len(traced),
        "reporting_gap": len(entered) - len(targeted) - len(reported),
        "residual": len(entered) - len(targeted) - sum(len(run.final[o]) for o in _LEFT),
    }
    return run


def _answer_of(run: _Run) -> dict[str, Any]:
    """The answer key as JSON-ready data (sorted lists), independent of the run id."""
    assert run.trace_main is not None and run.trace_buffer is not None
    return {
        "keys": {
            stage: {name: sorted(keys) for name, keys in sorted(outcomes.items())}
            for stage, outcomes in run.keys.items()
        },
        "rows": run.rows,
        "final": {name: sorted(keys) for name, keys in run.final.items()},
        "schema_drift": run.schema_drift,
        "summary": run.summary,
        "datasets": {
            **{stage: table.num_rows for stage, table in run.outputs.items()},
            "trace_main": run.trace_main.num_rows,
            "trace_buffer": run.trace_buffer.num_rows,
        },
    }
