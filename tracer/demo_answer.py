"""The demo's answer key: what the tracer must find in the demo run, and nothing else.

Split from `tracer.demo_story` and `tracer.demo_run` (which plant the anomalies and fill
the key in) and `tracer.demo` (which writes it to ``planted.json`` next to the data and
reads it back), so the one thing both sides agree on has one typed definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AnswerKey:
    """The planted anomalies of the demo run; the same for every directory and run id.

    The key is *complete*: ``keys[stage][outcome]`` is exactly the set of client_ids that
    get that outcome at that stage, for every outcome but ``passed`` and ``entered``, and
    ``keys[stage]["grain_violation"]`` every key flagged there; ``rows`` lists every
    non-zero ``null_key`` / ``duplicate_rows`` / ``multiplied_extra_rows`` count.
    """

    #: stage -> outcome or flag (``grain_violation``) -> the client_ids; every stage listed.
    keys: dict[str, dict[str, set[int]]]
    #: stage -> row flag (``null_key``, ``duplicate_rows``, ``multiplied_extra_rows``) -> rows.
    rows: dict[str, dict[str, int]]
    #: final outcome -> client_ids, for every final outcome but ``targeted`` (that is
    #: every key of the output, see ``summary``).
    final: dict[str, set[int]]
    #: stage -> columns its parent's output has and its own lacks.
    schema_drift: dict[str, list[str]]
    #: Run totals in distinct keys: entered, targeted, traced(_reported), gaps, residual.
    summary: dict[str, int]
    #: dataset (stage output or traceability table) -> rows written.
    datasets: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready data (sorted key lists), so the written key is reproducible."""
        return {
            "keys": {
                stage: {name: sorted(keys) for name, keys in sorted(outcomes.items())}
                for stage, outcomes in self.keys.items()
            },
            "rows": {stage: dict(flags) for stage, flags in self.rows.items()},
            "final": {name: sorted(keys) for name, keys in self.final.items()},
            "schema_drift": {stage: list(cols) for stage, cols in self.schema_drift.items()},
            "summary": dict(self.summary),
            "datasets": dict(self.datasets),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AnswerKey:
        """The key back from ``to_json`` data (extra fields such as ``run_id`` ignored)."""
        return cls(
            keys={
                stage: {name: set(keys) for name, keys in outcomes.items()}
                for stage, outcomes in data["keys"].items()
            },
            rows={stage: dict(flags) for stage, flags in data["rows"].items()},
            final={name: set(keys) for name, keys in data["final"].items()},
            schema_drift={stage: list(cols) for stage, cols in data["schema_drift"].items()},
            summary=dict(data["summary"]),
            datasets=dict(data["datasets"]),
        )
