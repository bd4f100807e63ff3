"""The seven stages chained into one run, and its answer key.

Split from `tracer.demo_story` (each stage on its own) because the run is the one
place that sees every stage at once: it fixes their order, numbers trace_main and
derives the final outcomes and totals the answer key needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tracer.demo_answer import AnswerKey
from tracer.demo_story import (
    STAGES,
    SelectionRun,
    StageRun,
    buffer_selection,
    buffer_update,
    exclusions,
    load_bank_clients,
    offer_enrichment,
    offer_selection,
    output,
    selection,
)
from tracer.demo_tables import Planter, ids_of, np_of

#: Final outcomes of keys that entered and left (the residual subtracts these).
_LEFT = ("dropped", "dropped_unreported", "orphaned")


@dataclass(frozen=True)
class DemoRun:
    """The tables of one demo run, built in memory, and its answer key."""

    #: every stage's result, in pipeline order (``stages[0]`` is ``selection``).
    stages: tuple[StageRun, ...]
    selection: SelectionRun
    #: trace_main of the whole run, trace_id numbered.
    trace_main: pa.Table
    trace_buffer: pa.Table
    answer: AnswerKey

    @property
    def outputs(self) -> dict[str, pa.Table]:
        """stage -> its output table."""
        return {stage.name: stage.output for stage in self.stages}


def build_run() -> DemoRun:
    """Run the campaign pipeline over the bank clients, stage by stage, planting each
    root cause; the stages must run in this order, as they share the seeded planter."""
    planter = Planter()
    bank = load_bank_clients()
    selected = selection(bank, planter)
    excluded = exclusions(selected.keyed, bank, planter)
    offered = offer_selection(excluded.output, planter)
    enriched = offer_enrichment(offered)
    updated = buffer_update(enriched, planter)
    best = buffer_selection(updated, planter)
    targeted = output(best, bank, excluded.keys["dropped"], planter)
    stages = (selected, excluded, offered, enriched, updated, best, targeted)
    assert tuple(stage.name for stage in stages) == STAGES
    traces = pa.concat_tables([s.trace_main for s in stages if s.trace_main is not None])
    trace_main = traces.add_column(
        0, "trace_id", pa.array(np.arange(1, traces.num_rows + 1), pa.int64())
    )
    assert updated.trace_buffer is not None
    answer = _answer_key(stages, selected.keyed, trace_main, updated.trace_buffer)
    return DemoRun(stages, selected, trace_main, updated.trace_buffer, answer)


def _answer_key(
    stages: tuple[StageRun, ...], entered: pa.Table, trace_main: pa.Table, trace_buffer: pa.Table
) -> AnswerKey:
    """Each stage's planted keys, plus the final outcomes and the business's count check
    (reconciliation of a run), which need the whole run."""
    keys = {stage.name: stage.keys for stage in stages}
    targeted = {int(k) for k in ids_of(stages[-1].output)}
    final = _final_outcomes(keys, targeted)
    return AnswerKey(
        keys=keys,
        rows={stage.name: dict(stage.rows) for stage in stages},
        final=final,
        schema_drift={stage.name: stage.schema_drift for stage in stages if stage.schema_drift},
        summary=_summary(entered, targeted, final, trace_main, trace_buffer),
        datasets={
            **{stage.name: stage.output.num_rows for stage in stages},
            "trace_main": trace_main.num_rows,
            "trace_buffer": trace_buffer.num_rows,
        },
    )


def _final_outcomes(
    keys: dict[str, dict[str, set[int]]], targeted: set[int]
) -> dict[str, set[int]]:
    """A client's journey ends at its last exit, unless it is in the output after all."""
    return {
        "dropped": keys["exclusions"]["dropped"] - targeted,
        "dropped_unreported": keys["buffer_update"]["dropped_unreported"] - targeted,
        "orphaned": keys["exclusions"]["orphaned"] - targeted,
        "never_entered": set(keys["exclusions"]["phantom_drop"]),
    }


def _summary(
    entered: pa.Table,
    targeted: set[int],
    final: dict[str, set[int]],
    trace_main: pa.Table,
    trace_buffer: pa.Table,
) -> dict[str, int]:
    """Run totals in distinct keys; the residual subtracts the keys that entered and left."""
    entered_keys = {int(k) for k in ids_of(entered)}
    reported = {int(k) for k in ids_of(trace_main)}
    traced = reported | {int(k) for k in np_of(trace_buffer["cid"])}
    return {
        "entered": len(entered_keys),
        "targeted": len(targeted),
        "traced": len(traced),
        "traced_reported": len(reported),
        "gap": len(entered_keys) - len(targeted) - len(traced),
        "reporting_gap": len(entered_keys) - len(targeted) - len(reported),
        "residual": len(entered_keys) - len(targeted) - sum(len(final[o]) for o in _LEFT),
    }
