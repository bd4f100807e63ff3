"""gap causes per key, indexes for gap-cell and comparison pages, kept comparisons

Revision ID: 0004
Revises: 0006
Create Date: 2026-12-05 12:00:00

Every key of a gap cell gets its cause (docs/semantics.md#causes), once for the
gap and once for the reporting gap, so a cell is split by cause and its keys are
paged through an index instead of a scan of the run; and its outcome codes as one
letter per stage (`codes`), what a comparison of two runs joins on. Runs classified
before are given both here, from the per-key stages they already store, and their stored
cells (runs.gap_cells) are rebuilt with the split, zero cells included. A
comparison of two runs is kept in `comparisons` (and its changed keys in
`comparison_keys`) while neither run is classified again.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0006"
branch_labels = None
depends_on = None

# Frozen here: what tracer.reconcile and tracer.outcomes said when this was written.
CELL_NAMES = {
    (True, False, False): "lost",
    (True, True, True): "counted_twice",
    (False, True, False): "targeted_without_entering",
    (False, False, True): "traced_without_entering",
    (False, True, True): "targeted_and_traced_without_entering",
    (True, True, False): "targeted",
    (True, False, True): "traced",
    (False, False, False): "neither",
}
OUTCOMES = (
    "entered", "passed", "expanded", "multiplied", "collapsed", "dropped", "dropped_unreported",
    "partially_dropped", "orphaned", "conflict", "appeared", "phantom_drop",
)  # fmt: skip
SAMPLE_KEYS = 10
CAUSES = ("cause_stage", "cause_outcome", "reporting_cause_stage", "reporting_cause_outcome")
INDEXES = {
    "ix_key_outcomes_traced": [
        "traced", "entered", "targeted", "cause_stage", "cause_outcome", "key"
    ],
    "ix_key_outcomes_traced_reported": [
        "traced_reported", "entered", "targeted", "reporting_cause_stage",
        "reporting_cause_outcome", "key",
    ],
    "ix_key_outcomes_final": ["final", "key"],
    "ix_key_outcomes_key": ["key", "final", "codes"],
}  # fmt: skip

# Each stored key's causes from its stages text ("outcome,in,out,drop_rep,drop_ops,grain"
# per stage in pipeline order, '' where it has none), as tracer.classify computes them.
BACKFILL = """
UPDATE key_outcomes k SET
    codes = c.codes,
    cause_stage = c.cause_stage,
    cause_outcome = c.code_list[c.cause_stage + 1],
    reporting_cause_stage = c.reporting_cause_stage,
    reporting_cause_outcome = c.code_list[c.reporting_cause_stage + 1]
FROM (
    SELECT p.run_pk, p.key,
        CASE WHEN p.entered AND NOT p.targeted
                 THEN max(s.i) FILTER (WHERE s.rows_in >= 1 AND s.rows_out = 0)
             WHEN p.entered AND p.traced THEN min(s.i) FILTER (WHERE s.rep + s.ops > 0)
             WHEN NOT p.entered THEN min(s.i) FILTER (WHERE s.code > 0) END AS cause_stage,
        CASE WHEN p.entered AND NOT p.targeted
                 THEN max(s.i) FILTER (WHERE s.rows_in >= 1 AND s.rows_out = 0)
             WHEN p.entered AND p.traced_reported THEN min(s.i) FILTER (WHERE s.rep > 0)
             WHEN NOT p.entered THEN min(s.i) FILTER (WHERE s.code > 0)
        END AS reporting_cause_stage,
        array_agg(s.code ORDER BY s.i) AS code_list,
        string_agg(chr(64 + s.code), '' ORDER BY s.i) AS codes
    FROM key_outcomes p CROSS JOIN LATERAL (
        SELECT u.i - 1 AS i,
            coalesce(nullif(split_part(u.cell, ',', 1), ''), '0')::int AS code,
            coalesce(nullif(split_part(u.cell, ',', 2), ''), '0')::int AS rows_in,
            coalesce(nullif(split_part(u.cell, ',', 3), ''), '0')::int AS rows_out,
            coalesce(nullif(split_part(u.cell, ',', 4), ''), '0')::int AS rep,
            coalesce(nullif(split_part(u.cell, ',', 5), ''), '0')::int AS ops
        FROM unnest(string_to_array(p.stages, ';')) WITH ORDINALITY AS u(cell, i)
    ) s
    GROUP BY p.run_pk, p.key, p.entered, p.targeted, p.traced, p.traced_reported
) c
WHERE k.run_pk = c.run_pk AND k.key = c.key
"""


def upgrade() -> None:
    op.add_column("key_outcomes", sa.Column("codes", sa.Text(), nullable=True))
    for name in CAUSES:
        op.add_column("key_outcomes", sa.Column(name, sa.SmallInteger(), nullable=True))
    op.execute(BACKFILL)
    op.alter_column("key_outcomes", "codes", nullable=False)
    for name, columns in INDEXES.items():
        op.create_index(name, "key_outcomes", columns, unique=False)
    op.create_table(
        "comparisons",
        sa.Column("run_a_pk", sa.Integer(), nullable=False),
        sa.Column("run_b_pk", sa.Integer(), nullable=False),
        sa.Column("a_classified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("b_classified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "computed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["run_a_pk"], ["runs.pk"], name=op.f("fk_comparisons_run_a_pk_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["run_b_pk"], ["runs.pk"], name=op.f("fk_comparisons_run_b_pk_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_a_pk", "run_b_pk", name=op.f("pk_comparisons")),
    )
    op.create_table(
        "comparison_keys",
        sa.Column("run_a_pk", sa.Integer(), nullable=False),
        sa.Column("run_b_pk", sa.Integer(), nullable=False),
        sa.Column("a", sa.SmallInteger(), nullable=False),
        sa.Column("b", sa.SmallInteger(), nullable=False),
        sa.Column("key", sa.Text(collation="C"), nullable=False),
        sa.Column("first_stage", sa.SmallInteger(), nullable=True),
        sa.PrimaryKeyConstraint(
            "run_a_pk", "run_b_pk", "a", "b", "key", name=op.f("pk_comparison_keys")
        ),
    )
    # A pair's keys go with its row (no per-row foreign key check when they are kept).
    op.execute(
        """
CREATE FUNCTION comparisons_forget_keys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM comparison_keys WHERE run_a_pk = OLD.run_a_pk AND run_b_pk = OLD.run_b_pk;
    RETURN OLD;
END $$
"""
    )
    op.execute(
        "CREATE TRIGGER comparisons_forget_keys AFTER DELETE ON comparisons "
        "FOR EACH ROW EXECUTE FUNCTION comparisons_forget_keys()"
    )
    _rebuild_cells()


def _rebuild_cells() -> None:
    """Every classified run's stored cells, rebuilt with their split by cause."""
    conn = op.get_bind()
    stored = conn.execute(
        sa.text("SELECT pk, layout FROM runs WHERE gap_cells IS NOT NULL ORDER BY pk")
    ).all()
    for pk, layout in stored:
        groups = conn.execute(
            sa.text(
                "SELECT entered, targeted, traced, traced_reported, "
                f"{', '.join(CAUSES)}, count(*) FROM key_outcomes WHERE run_pk = :pk "
                f"GROUP BY entered, targeted, traced, traced_reported, {', '.join(CAUSES)}"
            ),
            {"pk": pk},
        ).all()
        cells = {
            "gap_cells": _cells(conn, pk, layout["stages"], groups, reporting=False),
            "reporting_gap_cells": _cells(conn, pk, layout["stages"], groups, reporting=True),
        }
        conn.execute(
            sa.text("UPDATE runs SET gap_cells = CAST(:cells AS JSONB) WHERE pk = :pk"),
            {"cells": json.dumps(cells), "pk": pk},
        )


def _cells(
    conn: Any, pk: int, stages: list[str], groups: list[Any], reporting: bool
) -> list[dict[str, Any]]:
    by_cell: dict[tuple[bool, bool, bool], dict[tuple[int, int], int]] = {}
    for e, t, r, rr, cs, co, rcs, rco, n in groups:
        cell, stage, outcome = ((e, t, rr), rcs, rco) if reporting else ((e, t, r), cs, co)
        rank = (-1, -1) if stage is None else (stage, outcome or 0)
        causes = by_cell.setdefault(cell, {})
        causes[rank] = causes.get(rank, 0) + n
    traced = "traced_reported" if reporting else "traced"
    out = []
    for (e, t, r), causes in sorted(by_cell.items(), reverse=True):
        n = sum(causes.values())
        per_key = int(e) - int(t) - int(r)
        query = sa.text(
            f"SELECT key FROM key_outcomes WHERE run_pk = :pk AND entered = :e "
            f"AND targeted = :t AND {traced} = :r ORDER BY key LIMIT {SAMPLE_KEYS}"
        )
        params = {"pk": pk, "e": e, "t": t, "r": r}
        sample = list(conn.execute(query, params).scalars()) if per_key else []
        out.append(
            {
                "cell": CELL_NAMES[(e, t, r)],
                "entered": e,
                "targeted": t,
                "traced": r,
                "keys": n,
                "contribution": per_key * n,
                "sample": sample,
                "causes": [
                    {
                        "stage": stages[s] if s >= 0 else None,
                        "outcome": OUTCOMES[o - 1] if s >= 0 else None,
                        "keys": k,
                    }
                    for (s, o), k in sorted(causes.items(), key=lambda c: (c[0][0] < 0, c[0]))
                ],
            }
        )
    return out


def downgrade() -> None:
    # Back to the cells that move a gap, without their split.
    op.execute(
        """
UPDATE runs SET gap_cells = (
    SELECT jsonb_object_agg(part, coalesce((
        SELECT jsonb_agg(cell - 'causes' ORDER BY position)
        FROM jsonb_array_elements(gap_cells->part) WITH ORDINALITY AS e(cell, position)
        WHERE (cell->>'contribution')::int <> 0
    ), '[]'::jsonb))
    FROM unnest(ARRAY['gap_cells', 'reporting_gap_cells']) AS part
) WHERE gap_cells IS NOT NULL
"""
    )
    op.execute("DROP TRIGGER comparisons_forget_keys ON comparisons")
    op.execute("DROP FUNCTION comparisons_forget_keys()")
    op.drop_table("comparison_keys")
    op.drop_table("comparisons")
    for name in INDEXES:
        op.drop_index(name, table_name="key_outcomes")
    for name in reversed(CAUSES):
        op.drop_column("key_outcomes", name)
    op.drop_column("key_outcomes", "codes")
