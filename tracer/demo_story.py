"""The demo campaign's seven stages: the bank clients through each, anomalies planted.

Split from `tracer.demo` (which writes the files and serves the answer key) so each
module holds one concept; see that module for the story stage by stage. Here each
stage is one function, named after it, that takes what the stage before produced and
returns a `StageRun`: its output, the traceability rows it wrote and its share of the
`AnswerKey`. The helpers and the seeded planter they share are in `tracer.demo_tables`;
`tracer.demo_run` chains the stages into one run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tracer.demo_tables import (
    Planter,
    const,
    ids_of,
    isin,
    np_of,
    offer_masks,
    rows_of,
    sorted_by,
    trace_rows,
    with_columns,
)

PIPELINE_NAME = "bank_campaign"
DEFAULT_RUN_ID = "demo-2026-11-25"
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
#: ``offer_masks`` (tracer.demo_tables); a client gets 1 to 3 of them.
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


def load_bank_clients() -> pa.Table:
    """The packaged bank clients, with a nullable key (stage outputs may hold nulls)."""
    resource = files("tracer") / "data" / "bank_clients.parquet"
    with resource.open("rb") as fh:
        table = pq.read_table(fh)
    schema = pa.schema([field.with_nullable(True) for field in table.schema])
    return pa.Table.from_arrays(table.columns, schema=schema)


# --------------------------------------------------------------------------- the stages


@dataclass(frozen=True)
class StageRun:
    """What one stage produced and what was planted there (its share of the answer key)."""

    name: str
    output: pa.Table
    #: outcome or flag (``grain_violation``) -> client_ids, complete for the stage.
    keys: dict[str, set[int]] = field(default_factory=dict)
    #: row flag -> rows.
    rows: dict[str, int] = field(default_factory=dict)
    #: rows of trace_main (reported) this stage wrote, trace_id not yet numbered.
    trace_main: pa.Table | None = None
    #: rows of trace_buffer (operational, unreported) this stage wrote.
    trace_buffer: pa.Table | None = None
    #: columns of the parent's output this stage's output lacks.
    schema_drift: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class SelectionRun(StageRun):
    """The first stage also says how its output is split into part files."""

    #: the output as written, one part file each.
    parts: tuple[pa.Table, ...]
    #: the selected rows with a key, in order: null keys do not flow on to exclusions.
    keyed: pa.Table


def selection(bank: pa.Table, planter: Planter) -> SelectionRun:
    """Clients reachable by phone (contact known) enter; planted: 3 rows lose their key."""
    selected = bank.filter(pc.not_equal(bank["contact"], "unknown"))
    null_at = np.sort(planter.rng.choice(selected.num_rows, N_NULL_KEY_ROWS, replace=False))
    null_rows = selected.take(null_at).set_column(
        0, "client_id", pa.nulls(N_NULL_KEY_ROWS, pa.int64())
    )
    parts = []
    for i, chunk in enumerate(np.array_split(np.arange(selected.num_rows), N_SELECTION_PARTS)):
        part = selected.slice(int(chunk[0]), len(chunk))
        if i < N_NULL_KEY_ROWS:
            part = pa.concat_tables([part, null_rows.slice(i, 1)])
        parts.append(part)
    return SelectionRun(
        name="selection",
        output=pa.concat_tables(parts),
        rows={"null_key": N_NULL_KEY_ROWS},
        parts=tuple(parts),
        keyed=selected,
    )


def exclusions(selected: pa.Table, bank: pa.Table, planter: Planter) -> StageRun:
    """Real exclusion rules, logged in trace_main (reported).

    Planted: orphaned (removed, no log), conflict (logged, kept) and phantom_drop (the
    default rule also logged clients that were never selected).
    """
    ids = ids_of(selected)
    credit_default = np_of(pc.equal(selected["default"], "yes"))
    negative_with_loan = np_of(
        pc.and_(pc.equal(selected["loan"], "yes"), pc.less(selected["balance"], 0))
    )
    excluded = credit_default | negative_with_loan
    orphaned = planter.pick(ids[~excluded], N_ORPHANED)
    conflict = planter.pick(ids[excluded], N_CONFLICT)
    never_entered = _never_selected_defaults(bank, planter)
    keep = (~excluded | isin(ids, conflict)) & ~isin(ids, orphaned)
    traces = [
        trace_rows("exclusions", ids[credit_default], "credit_default"),
        trace_rows("exclusions", ids[negative_with_loan], "negative_balance_with_loan"),
        trace_rows("exclusions", sorted(never_entered), "credit_default"),
    ]
    return StageRun(
        name="exclusions",
        output=selected.filter(pa.array(keep)),
        keys={
            "dropped": {int(k) for k in ids[excluded]} - conflict,
            "orphaned": orphaned,
            "conflict": conflict,
            "phantom_drop": never_entered,
        },
        trace_main=pa.concat_tables(traces),
    )


def _never_selected_defaults(bank: pa.Table, planter: Planter) -> set[int]:
    """Clients without a contact channel the default rule logs anyway (final: never_entered)."""
    unselected_default = np_of(
        pc.and_(pc.equal(bank["contact"], "unknown"), pc.equal(bank["default"], "yes"))
    )
    return planter.pick(ids_of(bank)[unselected_default], N_NEVER_ENTERED)


def offer_selection(clients: pa.Table, planter: Planter) -> StageRun:
    """1-3 offers per client (expected fan-out); planted: 5 clients get TERM_DEPOSIT twice,
    from two rules (multiplied, grain violation)."""
    masks = offer_masks(clients)
    offers = _offers(clients, masks)
    ids = ids_of(offers)
    uniq, per_client = np.unique(ids, return_counts=True)
    # Holders of the multiplied offer are multiplied at offer_enrichment already.
    planter.spare({int(k) for k in ids_of(clients)[masks[MULTIPLIED_OFFER]]})
    twice = planter.pick(uniq, N_DUPLICATED_OFFER)
    td_rows = np.flatnonzero(isin(ids, twice) & np_of(pc.equal(offers["offer_id"], "TERM_DEPOSIT")))
    extra = offers.take(td_rows)
    extra = with_columns(extra, offer_rule=const("reactivation_list", extra.num_rows, pa.string()))
    offers = sorted_by(pa.concat_tables([offers, extra]), "_pos", "_rank")
    # extra rows = out - in: all of such a client's offers count, not just the copy
    per_client_of = dict(zip(uniq.tolist(), per_client.tolist(), strict=True))
    return StageRun(
        name="offer_selection",
        output=offers.drop_columns(["_pos", "_rank"]),
        keys={
            "expanded": {int(k) for k in uniq[per_client > 1]} - twice,
            "multiplied": twice,
            "grain_violation": set(twice),
        },
        rows={"multiplied_extra_rows": sum(per_client_of[k] for k in twice)},
    )


def _offers(clients: pa.Table, masks: dict[str, np.ndarray]) -> pa.Table:
    """One row per client and eligible offer, in client order then OFFERS order.

    The helper columns ``_pos`` (client position) and ``_rank`` (offer position) keep
    that order through later sorts.
    """
    position = pa.array(np.arange(clients.num_rows), pa.int64())
    pieces = []
    for rank, (offer_id, rule) in enumerate(OFFERS):
        chosen = clients.filter(pa.array(masks[offer_id]))
        n = chosen.num_rows
        pieces.append(
            with_columns(
                chosen,
                offer_id=const(offer_id, n, pa.string()),
                offer_rule=const(rule, n, pa.string()),
                _pos=position.filter(pa.array(masks[offer_id])),
                _rank=const(rank, n, pa.int32()),
            )
        )
    return sorted_by(pa.concat_tables(pieces), "_pos", "_rank")


def offer_enrichment(offered: StageRun) -> StageRun:
    """Join with the offer reference: its PRIVATE_BANKING parent and child rows multiply
    every holder (the production root cause)."""
    offers = offered.output
    offers = with_columns(offers, _row=pa.array(np.arange(offers.num_rows), pa.int64()))
    pieces = []
    for ref_rank, (offer_id, family, product, priority) in enumerate(OFFER_REFERENCE):
        matched = offers.filter(pc.equal(offers["offer_id"], offer_id))
        n = matched.num_rows
        pieces.append(
            with_columns(
                matched,
                offer_family=const(family, n, pa.string()),
                product_name=const(product, n, pa.string()),
                priority=const(priority, n, pa.int32()),
                _ref=const(ref_rank, n, pa.int32()),
            )
        )
    enriched = sorted_by(pa.concat_tables(pieces), "_row", "_ref")
    holders = ids_of(offers)[np_of(pc.equal(offers["offer_id"], MULTIPLIED_OFFER))]
    multiplied = {int(k) for k in holders}
    return StageRun(
        name="offer_enrichment",
        output=enriched.drop_columns(["_row", "_ref"]),
        keys={
            "multiplied": multiplied,
            "grain_violation": multiplied | offered.keys["grain_violation"],
        },
        rows={"multiplied_extra_rows": len(multiplied)},
    )


def buffer_update(enriched_run: StageRun, planter: Planter) -> StageRun:
    """Contact-pressure blocks, logged only in the operational trace_buffer
    (dropped_unreported); planted: 6 rows written twice (duplicate_rows, multiplied)."""
    enriched = enriched_run.output
    ids = ids_of(enriched)
    blocked_rows, reasons = _contact_pressure(enriched)
    blocked = {int(k) for k in ids[blocked_rows]}
    kept = enriched.filter(pa.array(~blocked_rows))
    doubled = planter.pick(ids_of(kept), N_DUPLICATE_ROWS)
    n_blocked = int(blocked_rows.sum())
    trace_buffer = pa.table(
        {
            "block_id": pa.array(np.arange(1, n_blocked + 1), pa.int64()),
            "cid": pa.array(ids[blocked_rows], pa.int64()),
            "offer_id": enriched["offer_id"].filter(pa.array(blocked_rows)),
            "block_reason": pa.array(reasons.tolist(), pa.string()),
        }
    )
    grain_violation = enriched_run.keys["grain_violation"] | doubled
    return StageRun(
        name="buffer_update",
        output=_written_twice(kept, doubled),
        keys={
            "dropped_unreported": blocked,
            "multiplied": doubled,
            "grain_violation": grain_violation - blocked,
        },
        rows={"duplicate_rows": N_DUPLICATE_ROWS, "multiplied_extra_rows": N_DUPLICATE_ROWS},
        trace_buffer=trace_buffer,
    )


def _contact_pressure(enriched: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """The rows blocked (too many contacts, or contacted in the last 30 days) and why."""
    fatigue = np_of(pc.greater_equal(enriched["campaign"], 15))
    pdays = np_of(enriched["pdays"])
    recent = ~fatigue & (pdays >= 0) & (pdays <= 30)
    blocked_rows = fatigue | recent
    reasons = np.where(fatigue, "contact_fatigue", "recently_contacted")[blocked_rows]
    return blocked_rows, reasons


def _written_twice(table: pa.Table, keys: set[int]) -> pa.Table:
    """The table with each key's first TERM_DEPOSIT row repeated right after it."""
    ids = ids_of(table)
    first_td: dict[int, int] = {}
    term_deposit = np_of(pc.equal(table["offer_id"], "TERM_DEPOSIT"))
    for pos in np.flatnonzero(isin(ids, keys) & term_deposit):
        first_td.setdefault(int(ids[pos]), int(pos))
    order = np.concatenate([np.arange(table.num_rows), np.array(sorted(first_td.values()))])
    return table.take(pa.array(np.sort(order, kind="stable")))


def buffer_selection(updated: StageRun, planter: Planter) -> StageRun:
    """Best-priority offer per client, the other offers logged in trace_main
    (partially_dropped); planted: 5 clients collapsed without a log, and offer_family
    left out (schema drift)."""
    ranked = sorted_by(
        updated.output, "client_id", "priority", "offer_id", "product_name", "offer_rule"
    )
    ids = ids_of(ranked)
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    uniq, per_client = np.unique(ids, return_counts=True)
    several = {int(k) for k in uniq[per_client > 1]}
    collapsed = planter.pick(np.fromiter(several, np.int64), N_COLLAPSED)
    logged = ~first & ~isin(ids, collapsed)
    return StageRun(
        name="buffer_selection",
        output=ranked.filter(pa.array(first)).drop_columns(["offer_family"]),
        keys={"partially_dropped": several - collapsed, "collapsed": collapsed},
        trace_main=trace_rows(
            "buffer_selection",
            ids[logged],
            "lower_priority_offer",
            ranked["offer_id"].filter(pa.array(logged)).to_pylist(),
        ),
        schema_drift=["offer_family"],
    )


def output(best: StageRun, bank: pa.Table, excluded: set[int], planter: Planter) -> StageRun:
    """The target list. Planted: a manual override re-adds 4 excluded clients (appeared)
    and the suppression list logs 4 clients gone since exclusions (phantom_drop)."""
    pool = np.fromiter(excluded, np.int64)
    appeared = planter.pick(pool, N_APPEARED)
    phantom = planter.pick(pool, N_PHANTOM_OUTPUT)
    readded = bank.take(pa.array(rows_of(ids_of(bank), appeared)))
    n = readded.num_rows
    readded = with_columns(
        readded,
        offer_id=const("TERM_DEPOSIT", n, pa.string()),
        offer_rule=const("manual_override", n, pa.string()),
        product_name=const(OFFER_REFERENCE[0][2], n, pa.string()),
        priority=const(OFFER_REFERENCE[0][3], n, pa.int32()),
    ).select(best.output.column_names)
    return StageRun(
        name="output",
        output=sorted_by(pa.concat_tables([best.output, readded]), "client_id"),
        keys={"appeared": appeared, "phantom_drop": phantom},
        trace_main=trace_rows("output", sorted(phantom), "suppression_list"),
    )
