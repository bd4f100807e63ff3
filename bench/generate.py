"""Deterministic synthetic campaign runs for benchmarking and cross-checking tracer.

A linear 7-stage pipeline

    selection -> exclusions -> offer_selection -> offer_enrichment
              -> buffer_update -> buffer_selection -> output

with every anomaly of docs/semantics.md injected at a known rate, so the
outcome counts are non-trivial at every stage. Clients are generated in
chunks of client-id ranges with numpy (no Python loop over rows) and each
chunk is written straight to Parquet, so memory stays flat however many
clients are asked for.

Clients that enter have odd ids (``BASE_ID + 2*slot + 1``); the even id of
each slot is free for keys that never enter (``appeared`` at output,
``phantom_drop`` traceability rows), so those can never collide with a real
client. Each client draws one fate (mutually exclusive), which keeps the
injected counts readable; the reference counters in ``reference.py`` classify
from the files, never from these fates. Besides the anomalies, a few keys sit
on the edges of the outcome table's first-match order (a trace row at the
first stage, fan-out plus a drop, a partial drop that does not add up, a drop
logged in both sources, a key that appears and is logged): that is where an
implementation is most likely to differ from the contract.

Usage::

    python bench/generate.py --clients 1000000 --out bench/data/clients-1000000
    python bench/generate.py --clients 20000 --out /tmp/run --rates excluded=0.1,orphaned=0.01
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

BASE_ID = 1_000_000
DEFAULT_SEED = 20261125
DEFAULT_CHUNK = 250_000
N_OFFERS = 40
OFFER_STRIDE = 7  # coprime with N_OFFERS: a client's 1-3 offers are always distinct

STAGES = (
    "selection",
    "exclusions",
    "offer_selection",
    "offer_enrichment",
    "buffer_update",
    "buffer_selection",
    "output",
)
SEGMENTS = np.array(["mass", "young", "family", "affluent", "senior", "private"])
SEGMENT_P = np.array([0.45, 0.15, 0.2, 0.1, 0.08, 0.02])
EXCLUSION_REASONS = np.array(["opt_out", "no_consent", "blacklist", "deceased", "under_age"])
EXCLUSION_P = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
BUFFER_REASONS = np.array(["recently_contacted", "contact_limit", "buffer_full"])
PHANTOM_REASON = "contact_block"
PARTIAL_REASON = "offer_not_selected"
OFFER_VALUE = np.round(np.linspace(5.0, 120.0, N_OFFERS + 1), 2)  # indexed by offer_id

# Per-client fates, in the order their probabilities are cumulated.
(
    EXCLUDED,
    EXCLUDED_PHANTOM,
    ORPHAN,
    CONFLICT,
    DUP_OFFER,
    MULTIPLIED,
    UNREPORTED,
    COLLAPSED,
    # Edge cases of the outcome table's ordering, each at edge_cases / 4:
    EDGE_FIRST_TRACE,  # logged at the first stage, yet continues: still `entered`
    EDGE_EXPANDED_DROP,  # fan-out plus a trace row at offer_selection: `multiplied`
    EDGE_PARTIAL_CONFLICT,  # 3 rows in, 1 out, 1 logged at buffer_selection: `conflict`
    EDGE_DROPPED_BOTH,  # removed at buffer_update, logged in both sources: `dropped`
    NORMAL,
) = range(13)
FATE_NAMES = (
    "excluded",
    "excluded_then_phantom",
    "orphaned",
    "conflict",
    "duplicate_offer",
    "multiplied",
    "dropped_unreported",
    "collapsed",
    "edge_first_stage_trace",
    "edge_expanded_with_drop",
    "edge_partial_conflict",
    "edge_dropped_both_sources",
    "normal",
)


@dataclass(frozen=True)
class Rates:
    """Anomaly rates; per client unless said otherwise."""

    excluded: float = 0.05  # dropped at exclusions, reason in trace_main (reported)
    orphaned: float = 0.001  # vanish with no reason, at a stage drawn uniformly (2nd..last)
    conflict: float = 0.0005  # kept at exclusions and also logged as excluded
    offers2: float = 0.2  # share of clients given 2 offers at offer_selection
    offers3: float = 0.1  # share given 3 offers (the rest get 1): ~1.4 rows per client
    duplicate_offer: float = 0.0002  # same offer twice at offer_selection: not `expanded`
    multiplied: float = 0.002  # one-to-many reference join at offer_enrichment (+1 row)
    dropped_unreported: float = 0.01  # removed at buffer_update, logged only in trace_buffer
    partial: float = 0.8  # share of multi-row clients cut to one offer at buffer_selection
    collapsed: float = 0.0005  # multi-row clients merged to one row at output, no reason
    appeared: float = 0.0005  # per client slot: an unknown key shows up at output
    phantom: float = 0.0002  # traceability rows for keys that never reached the stage
    edge_cases: float = 0.001  # split over the 4 EDGE_* fates (see their comments)
    appeared_logged: float = 0.0001  # per slot: appears at output *and* is logged there
    null_key_rows: int = 3  # null client_id rows in selection, offer_enrichment, trace_main

    @classmethod
    def parse(cls, text: str | None) -> Rates:
        """`excluded=0.1,orphaned=0.01` (or a JSON object) over the defaults."""
        if not text:
            return cls()
        text = text.strip()
        if text.startswith("{"):
            pairs: dict[str, Any] = json.loads(text)
        else:
            pairs = dict(item.split("=", 1) for item in text.split(",") if item.strip())
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for name, value in pairs.items():
            name = name.strip()
            if name not in known:
                raise ValueError(f"unknown rate {name!r}; known: {', '.join(known)}")
            values[name] = int(value) if name == "null_key_rows" else float(value)
        return cls(**values)

    def check(self) -> None:
        fates = self.fate_probabilities()
        if fates.sum() > 1 or (fates < 0).any():
            raise ValueError(f"per-client fate rates must be >= 0 and sum to <= 1: {self}")
        if self.offers2 + self.offers3 > 1:
            raise ValueError("offers2 + offers3 must be <= 1")
        if self.appeared + self.phantom / 2 + self.appeared_logged > 1:
            raise ValueError("appeared + phantom/2 + appeared_logged must be <= 1")

    def fate_probabilities(self) -> np.ndarray:
        """Probabilities of the fates EXCLUDED..EDGE_DROPPED_BOTH (NORMAL takes the rest)."""
        return np.array(
            [
                self.excluded,
                self.phantom / 2,  # excluded, then logged again at buffer_selection
                self.orphaned,
                self.conflict,
                self.duplicate_offer,
                self.multiplied,
                self.dropped_unreported,
                self.collapsed,
                *[self.edge_cases / 4] * 4,
            ]
        )


# --------------------------------------------------------------------------- arrays


def _group_positions(owner: np.ndarray) -> np.ndarray:
    """0, 1, 2... within each run of equal values of a sorted `owner` array."""
    if len(owner) == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    lengths = np.diff(np.r_[starts, len(owner)])
    return np.arange(len(owner)) - np.repeat(starts, lengths)


def _strings(values: np.ndarray, index: np.ndarray) -> pa.Array:
    return pa.array(values[index], type=pa.string())


@dataclass
class _Rows:
    """Rows of one stage inside a chunk: the owning client (chunk-local) and an offer."""

    client: np.ndarray  # int64 chunk-local client index, sorted
    offer: np.ndarray  # int32 offer_id (0 where the stage has no offer yet)
    child: np.ndarray  # bool: a child reference row added by the enrichment join

    def take(self, mask: np.ndarray) -> _Rows:
        return _Rows(self.client[mask], self.offer[mask], self.child[mask])

    def repeat(self, counts: np.ndarray) -> _Rows:
        return _Rows(
            np.repeat(self.client, counts), np.repeat(self.offer, counts), self.child.repeat(counts)
        )


class _Chunk:
    """Everything drawn for one client-id range; deterministic in (seed, chunk index)."""

    def __init__(self, seed: int, index: int, lo: int, hi: int, rates: Rates) -> None:
        rng = np.random.default_rng([seed, index])
        n = hi - lo
        self.n = n
        slots = np.arange(lo, hi, dtype=np.int64)
        self.ids = BASE_ID + 2 * slots + 1
        self.spare_ids = BASE_ID + 2 * slots  # never enter: for appeared / phantom keys
        # Draw every array in a fixed order so a seed always gives the same run.
        cum = np.cumsum(rates.fate_probabilities())
        self.fate = np.searchsorted(cum, rng.random(n), side="right").astype(np.int8)
        self.orphan_stage = rng.integers(1, len(STAGES), n)
        u = rng.random(n)
        offers = 1 + (u < rates.offers2 + rates.offers3) + (u < rates.offers3)
        needs_two = np.isin(self.fate, (COLLAPSED, EDGE_EXPANDED_DROP))
        offers[needs_two & (offers < 2)] = 2  # collapsing or expanding needs >= 2 rows
        offers[self.fate == EDGE_PARTIAL_CONFLICT] = 3
        self.offers = offers.astype(np.int64)
        self.first_offer = rng.integers(0, N_OFFERS, n)
        self.partial = rng.random(n) < rates.partial
        self.segment = rng.choice(len(SEGMENTS), n, p=SEGMENT_P)
        self.score = np.round(rng.random(n), 4)
        self.exclusion_reason = rng.choice(len(EXCLUSION_REASONS), n, p=EXCLUSION_P)
        self.buffer_reason = rng.integers(0, len(BUFFER_REASONS), n)
        spare = rng.random(n)
        self.appeared = spare < rates.appeared
        self.phantom = (~self.appeared) & (spare < rates.appeared + rates.phantom / 2)
        top = rates.appeared + rates.phantom / 2
        self.appeared_logged = (spare >= top) & (spare < top + rates.appeared_logged)
        self.phantom_stage = rng.integers(1, len(STAGES), n)
        self.appeared_offer = rng.integers(1, N_OFFERS + 1, n).astype(np.int32)
        self.null_rows = rates.null_key_rows if index == 0 else 0

    def orphaned_at(self, stage: int) -> np.ndarray:
        return (self.fate == ORPHAN) & (self.orphan_stage == stage)


_TraceRows = tuple[np.ndarray, str, np.ndarray, np.ndarray]  # ids, stage, reasons, offers


def _build_chunk(c: _Chunk) -> dict[str, pa.Table]:
    """All datasets of one chunk; each step derives a stage's rows from its parent's."""
    n = c.n
    everyone = np.arange(n)
    tables: dict[str, pa.Table] = {}
    trace_main: list[_TraceRows] = []

    def log(ids: np.ndarray, stage: str, reason: np.ndarray | str, offer: Any = None) -> None:
        """Rows for trace_main; no offer (written as NULL) unless given."""
        reasons = np.full(len(ids), reason) if isinstance(reason, str) else reason
        offers = np.zeros(len(ids), np.int32) if offer is None else offer
        trace_main.append((ids, stage, reasons, offers))

    # selection: every client, one row.
    tables["selection"] = _client_table(c, everyone, null_rows=c.null_rows)

    # exclusions: reported exclusions leave; conflicts stay *and* are logged.
    left = np.isin(c.fate, (EXCLUDED, EXCLUDED_PHANTOM)) | c.orphaned_at(1)
    alive = ~left
    tables["exclusions"] = _client_table(c, everyone[alive])
    early = everyone[c.fate == EDGE_FIRST_TRACE]
    log(c.ids[early], "selection", EXCLUSION_REASONS[c.exclusion_reason[early]])
    logged = everyone[np.isin(c.fate, (EXCLUDED, EXCLUDED_PHANTOM, CONFLICT))]
    log(c.ids[logged], "exclusions", EXCLUSION_REASONS[c.exclusion_reason[logged]])

    # offer_selection: 1-3 distinct offers per client (fan-out expected); a few
    # clients get one offer twice, which is not distinct on the grain.
    alive &= ~c.orphaned_at(2)
    kept = everyone[alive]
    per_client = c.offers[kept] + (c.fate[kept] == DUP_OFFER)
    owner = np.repeat(kept, per_client)
    j = _group_positions(owner) % c.offers[owner]
    offer = ((c.first_offer[owner] + j * OFFER_STRIDE) % N_OFFERS + 1).astype(np.int32)
    rows = _Rows(owner, offer, np.zeros(len(owner), bool))
    tables["offer_selection"] = _offer_table(c, rows)
    blocked = kept[c.fate[kept] == EDGE_EXPANDED_DROP]
    log(c.ids[blocked], "offer_selection", "offer_blocked")

    # offer_enrichment: a one-to-many reference join doubles one row of a few clients.
    rows = rows.take(~c.orphaned_at(3)[rows.client])
    first = _group_positions(rows.client) == 0
    rows = rows.repeat(1 + (first & (c.fate[rows.client] == MULTIPLIED)))
    rows.child = np.r_[
        False, (rows.client[1:] == rows.client[:-1]) & (rows.offer[1:] == rows.offer[:-1])
    ]
    rows.child &= c.fate[rows.client] == MULTIPLIED
    tables["offer_enrichment"] = _offer_table(c, rows, enrichment=True, null_rows=c.null_rows)

    # buffer_update: drops the reference column (multiplied rows become identical) and
    # removes buffered clients, logged only in the operational trace_buffer.
    rows = rows.take(~c.orphaned_at(4)[rows.client])
    buffered = np.isin(c.fate[rows.client], (UNREPORTED, EDGE_DROPPED_BOTH))
    gone = rows.take(buffered)
    tables["trace_buffer"] = pa.table(
        {
            "client_id": pa.array(c.ids[gone.client], pa.int64()),
            "offer_id": pa.array(gone.offer, pa.int32()),
            "reason": _strings(BUFFER_REASONS, c.buffer_reason[gone.client]),
        }
    )
    both = everyone[c.fate == EDGE_DROPPED_BOTH]
    log(c.ids[both], "buffer_update", BUFFER_REASONS[c.buffer_reason[both]])
    rows = rows.take(~buffered)
    tables["buffer_update"] = _offer_table(c, rows)

    # buffer_selection: most multi-offer clients keep their first offer; the others
    # are logged in trace_main (partially_dropped). Stale blocks of excluded
    # clients are logged here too (phantom drops).
    rows = rows.take(~c.orphaned_at(5)[rows.client])
    count = np.bincount(rows.client, minlength=n)
    cut_client = c.partial & (count >= 2) & ~np.isin(c.fate, (COLLAPSED, EDGE_PARTIAL_CONFLICT))
    cut_client |= c.fate == EDGE_PARTIAL_CONFLICT  # cut to one row, but only one extra logged
    position = _group_positions(rows.client)
    extra = cut_client[rows.client] & (position > 0)
    logged = extra & ~((c.fate[rows.client] == EDGE_PARTIAL_CONFLICT) & (position > 1))
    cut = rows.take(logged)
    log(c.ids[cut.client], "buffer_selection", PARTIAL_REASON, cut.offer)
    stale = everyone[c.fate == EXCLUDED_PHANTOM]
    log(c.ids[stale], "buffer_selection", PHANTOM_REASON)
    rows = rows.take(~extra)
    tables["buffer_selection"] = _offer_table(c, rows)

    # output: a few multi-row clients are merged to one row without a reason, and
    # a few keys nobody selected appear.
    rows = rows.take(~c.orphaned_at(6)[rows.client])
    position = _group_positions(rows.client)
    rows = rows.take(~((c.fate[rows.client] == COLLAPSED) & (position > 0)))
    tables["output"] = _output_table(c, rows)

    # keys that never entered, logged as removed at some stage: phantom drops.
    late = everyone[c.appeared_logged]
    log(c.spare_ids[late], "output", PHANTOM_REASON)
    ghosts = everyone[c.phantom]
    for s in range(1, len(STAGES)):
        at = ghosts[c.phantom_stage[ghosts] == s]
        log(c.spare_ids[at], STAGES[s], PHANTOM_REASON)
    tables["trace_main"] = _trace_main_table(trace_main, c.null_rows)
    return tables


def _client_table(c: _Chunk, who: np.ndarray, null_rows: int = 0) -> pa.Table:
    ids = pa.array(
        np.r_[c.ids[who], np.zeros(null_rows, np.int64)],
        pa.int64(),
        mask=_nulls(len(who), null_rows),
    )
    seg = np.r_[c.segment[who], np.zeros(null_rows, np.int64)]
    score = np.r_[c.score[who], np.zeros(null_rows)]
    return pa.table(
        {"client_id": ids, "segment": _strings(SEGMENTS, seg), "score": pa.array(score)}
    )


def _offer_table(c: _Chunk, rows: _Rows, enrichment: bool = False, null_rows: int = 0) -> pa.Table:
    who = rows.client
    mask = _nulls(len(who), null_rows)
    offer = np.r_[rows.offer, np.ones(null_rows, np.int32)]
    seg = np.r_[c.segment[who], np.zeros(null_rows, np.int64)]
    columns: dict[str, pa.Array] = {
        "client_id": pa.array(
            np.r_[c.ids[who], np.zeros(null_rows, np.int64)], pa.int64(), mask=mask
        ),
        "offer_id": pa.array(offer, pa.int32()),
        "segment": _strings(SEGMENTS, seg),
        "score": pa.array(np.r_[c.score[who], np.zeros(null_rows)]),
    }
    if enrichment:
        child = np.r_[rows.child, np.zeros(null_rows, bool)]
        columns["ref_level"] = _strings(np.array(["parent", "child"]), child.astype(np.int64))
        columns["offer_value"] = pa.array(OFFER_VALUE[offer] * np.where(child, 0.5, 1.0))
    return pa.table(columns)


def _output_table(c: _Chunk, rows: _Rows) -> pa.Table:
    """Stage rows plus the appeared keys, in client-id order like the other outputs."""
    spare = np.flatnonzero(c.appeared | c.appeared_logged)
    ids = np.r_[c.ids[rows.client], c.spare_ids[spare]]
    order = np.argsort(ids, kind="stable")
    seg = np.r_[c.segment[rows.client], c.segment[spare]][order]
    return pa.table(
        {
            "client_id": pa.array(ids[order], pa.int64()),
            "offer_id": pa.array(np.r_[rows.offer, c.appeared_offer[spare]][order], pa.int32()),
            "segment": _strings(SEGMENTS, seg),
            "score": pa.array(np.r_[c.score[rows.client], c.score[spare]][order]),
        }
    )


def _trace_main_table(parts: list[_TraceRows], null_rows: int) -> pa.Table:
    ids = np.concatenate([p[0] for p in parts] + [np.zeros(null_rows, np.int64)])
    stage = np.concatenate(
        [np.full(len(p[0]), p[1]) for p in parts] + [np.full(null_rows, "exclusions")]
    )
    reason = np.concatenate([p[2] for p in parts] + [np.full(null_rows, "opt_out")])
    offer = np.concatenate([p[3] for p in parts] + [np.zeros(null_rows, np.int32)])
    return pa.table(
        {
            "client_id": pa.array(ids, pa.int64(), mask=_nulls(len(ids) - null_rows, null_rows)),
            "stage": pa.array(stage, pa.string()),
            "reason": pa.array(reason, pa.string()),
            "offer_id": pa.array(offer, pa.int32(), mask=offer == 0),
        }
    )


def _nulls(valid: int, null: int) -> np.ndarray | None:
    return np.r_[np.zeros(valid, bool), np.ones(null, bool)] if null else None


# --------------------------------------------------------------------------- files


SINGLE_FILES = ("trace_main", "trace_buffer")  # everything else: a directory of part files


def manifest_dict(clients: int, seed: int) -> dict[str, Any]:
    """The run manifest in architecture.md's format, paths relative to the manifest."""
    stages: list[dict[str, Any]] = []
    for name in STAGES:
        stage: dict[str, Any] = {"name": name}
        if name == "offer_selection":
            stage.update(grain=["client_id", "offer_id"], fanout="expected")
        elif name == "offer_enrichment":
            stage["grain"] = ["client_id", "offer_id"]  # a fresh list: no YAML anchors
        stages.append(stage)
    return {
        "pipeline": {
            "name": "campaign",
            "key": ["client_id"],
            "key_types": {"client_id": "int64"},
            "stages": stages,
            "traceability": [
                {
                    "name": "trace_main",
                    "reported": True,
                    "stage_column": "stage",
                    "reason_column": "reason",
                },
                {
                    "name": "trace_buffer",
                    "reported": False,
                    "stage": "buffer_update",
                    "reason_column": "reason",
                },
            ],
        },
        "run": {
            "id": f"bench-{clients}-seed-{seed}",
            "label": f"synthetic campaign run, {clients} clients, seed {seed}",
            "rerun_of": None,
            "outputs": {name: f"data/{name}/" for name in STAGES},
            "traceability": {name: f"data/{name}.parquet" for name in SINGLE_FILES},
        },
    }


def generate(
    clients: int,
    out: str | os.PathLike[str],
    seed: int = DEFAULT_SEED,
    rates: Rates | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> dict[str, Any]:
    """Write the run to `out` (built aside, then renamed, so a half-written run never counts).

    Returns the summary also written to `out/generation.json`: rows per dataset
    and how many clients got each injected fate.
    """
    rates = rates or Rates()
    rates.check()
    if clients < 1:
        raise ValueError("clients must be >= 1")
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it first")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    try:
        summary = _write(clients, tmp, seed, rates, chunk_size)
        summary["seconds"] = round(time.perf_counter() - started, 3)
        summary["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        (tmp / "generation.json").write_text(json.dumps(summary, indent=2) + "\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return summary


def _write(clients: int, root: Path, seed: int, rates: Rates, chunk_size: int) -> dict[str, Any]:
    data = root / "data"
    for name in STAGES:
        (data / name).mkdir(parents=True)
    writers: dict[str, pq.ParquetWriter] = {}
    rows = dict.fromkeys((*STAGES, *SINGLE_FILES), 0)
    fates = np.zeros(len(FATE_NAMES), np.int64)
    orphans = np.zeros(len(STAGES), np.int64)
    phantom_at = np.zeros(len(STAGES), np.int64)
    appeared = appeared_logged = 0
    chunks = range((clients + chunk_size - 1) // chunk_size)
    try:
        for index in chunks:
            lo, hi = index * chunk_size, min(clients, (index + 1) * chunk_size)
            chunk = _Chunk(seed, index, lo, hi, rates)
            fates += np.bincount(chunk.fate, minlength=len(FATE_NAMES))
            orphans += np.bincount(chunk.orphan_stage[chunk.fate == ORPHAN], minlength=len(STAGES))
            appeared += int(chunk.appeared.sum())
            appeared_logged += int(chunk.appeared_logged.sum())
            phantom_at += np.bincount(chunk.phantom_stage[chunk.phantom], minlength=len(STAGES))
            for name, table in _build_chunk(chunk).items():
                rows[name] += table.num_rows
                if name in SINGLE_FILES:
                    if name not in writers:
                        writers[name] = pq.ParquetWriter(data / f"{name}.parquet", table.schema)
                    writers[name].write_table(table)
                else:
                    pq.write_table(table, data / name / f"part-{index:05d}.parquet")
    finally:
        for writer in writers.values():
            writer.close()
    for name in STAGES:
        (data / name / "_SUCCESS").touch()
    (root / "manifest.yaml").write_text(
        yaml.safe_dump(manifest_dict(clients, seed), sort_keys=False)
    )
    return {
        "clients": clients,
        "seed": seed,
        "chunk_size": chunk_size,
        "rates": asdict(rates),
        "rows": rows,
        "stage_rows": sum(rows[s] for s in STAGES),
        "trace_rows": sum(rows[s] for s in SINGLE_FILES),
        "injected": {
            "fates": dict(zip(FATE_NAMES, fates.tolist(), strict=True)),
            "orphaned_at": {STAGES[s]: int(orphans[s]) for s in range(1, len(STAGES))},
            "appeared_keys": appeared,
            "appeared_and_logged_keys": appeared_logged,
            "phantom_never_entered_at": {
                STAGES[s]: int(phantom_at[s]) for s in range(1, len(STAGES))
            },
        },
        "bytes": sum(f.stat().st_size for f in data.rglob("*.parquet")),
    }


ANOMALIES = (
    "entered",
    "multiplied",
    "collapsed",
    "dropped",
    "dropped_unreported",
    "orphaned",
    "conflict",
    "appeared",
    "phantom_drop",
)


def expected_counts(summary: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Exact counts the injected fates imply, per stage, for every outcome but the bulk ones.

    `passed`, `expanded` and `partially_dropped` depend on the offer draws, so
    they are left out; everything else is known by construction and gives the
    reference counters a check that does not come from another counter.
    """
    injected = summary["injected"]
    fates = injected["fates"]
    expected = {s: dict.fromkeys(ANOMALIES, 0) for s in STAGES}
    expected["selection"]["entered"] = summary["clients"]
    for stage in STAGES[1:]:
        expected[stage]["orphaned"] = injected["orphaned_at"][stage]
        expected[stage]["phantom_drop"] = injected["phantom_never_entered_at"][stage]
    expected["exclusions"]["dropped"] = fates["excluded"] + fates["excluded_then_phantom"]
    expected["exclusions"]["conflict"] = fates["conflict"]
    expected["offer_selection"]["multiplied"] = fates["duplicate_offer"]
    expected["offer_enrichment"]["multiplied"] = fates["multiplied"]
    expected["buffer_update"]["dropped_unreported"] = fates["dropped_unreported"]
    expected["buffer_selection"]["phantom_drop"] += fates["excluded_then_phantom"]
    expected["output"]["collapsed"] = fates["collapsed"]
    expected["output"]["appeared"] = injected["appeared_keys"]
    # The edge cases of the table's ordering.
    expected["offer_selection"]["multiplied"] += fates["edge_expanded_with_drop"]
    expected["buffer_update"]["dropped"] = fates["edge_dropped_both_sources"]
    expected["buffer_selection"]["conflict"] = fates["edge_partial_conflict"]
    expected["output"]["conflict"] = injected["appeared_and_logged_keys"]
    return expected


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--out", required=True, help="run folder to create (must not exist)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--rates", help="overrides, e.g. 'excluded=0.1,orphaned=0.01' or a JSON object"
    )
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK, help="clients per chunk")
    args = parser.parse_args(argv)
    try:
        summary = generate(
            args.clients, args.out, args.seed, Rates.parse(args.rates), args.chunk_size
        )
    except (ValueError, FileExistsError) as exc:
        print(f"generate.py: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.out}: {summary['clients']} clients, {summary['stage_rows']} stage rows, "
        f"{summary['trace_rows']} trace rows, {summary['bytes'] / 1e6:.1f} MB "
        f"in {summary['seconds']} s (peak RSS {summary['peak_rss_mb']} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
