"""lean run storage: one key index instead of a key and an index, partial cell indexes

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-02 11:00:00

`key_outcomes` loses its primary key: the (key, final, codes) index already serves
every lookup by key, and classification writes one row per key. The gap-cell indexes
keep only the keys that have a cause (every cell but `targeted`, which pages by key),
and the (final, key) index only the keys not targeted. Stored runs keep their rows; their
partitions' indexes are rebuilt here (this takes a few seconds per million keys).
Runs classified since store only the anomaly list's rare groups; going down gives
`anomalies` the rest back from the per-key stages, as the code before reads it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0004"
branch_labels = None
depends_on = None

CELL_INDEXES = {
    "ix_key_outcomes_traced": (
        ["traced", "entered", "targeted", "cause_stage", "cause_outcome", "key"],
        "NOT (entered AND targeted AND NOT traced)",
    ),
    "ix_key_outcomes_traced_reported": (
        ["traced_reported", "entered", "targeted", "reporting_cause_stage",
         "reporting_cause_outcome", "key"],
        "NOT (entered AND targeted AND NOT traced_reported)",
    ),
    "ix_key_outcomes_final": (["final", "key"], "final <> 1"),  # 1: Final.TARGETED
}  # fmt: skip


def upgrade() -> None:
    op.drop_constraint("pk_key_outcomes", "key_outcomes", type_="primary")
    for name, (columns, where) in CELL_INDEXES.items():
        op.drop_index(name, table_name="key_outcomes")
        op.create_index(name, "key_outcomes", columns, postgresql_where=sa.text(where))


# Runs classified since keep only the anomaly list's rare groups (tracer.classify.dense_groups);
# the code before reads the whole list from `anomalies`: give it back from the per-key stages
# ("outcome,in,out,drop_rep,drop_ops,grain" per stage). 1, 2: entered, passed; 13: grain.
RESTORE_ANOMALIES = """
INSERT INTO anomalies (run_pk, outcome, stage, key, rows_in, rows_out, rows_dropped)
SELECT k.run_pk, o.outcome, c.stage, k.key, c.rows_in, c.rows_out, c.dropped
FROM key_outcomes k
CROSS JOIN LATERAL (
    SELECT (u.i - 1)::smallint AS stage,
        split_part(u.cell, ',', 1)::smallint AS code,
        split_part(u.cell, ',', 2)::int AS rows_in,
        split_part(u.cell, ',', 3)::int AS rows_out,
        split_part(u.cell, ',', 4)::int + split_part(u.cell, ',', 5)::int AS dropped,
        split_part(u.cell, ',', 6) = '1' AS grain
    FROM unnest(string_to_array(k.stages, ';')) WITH ORDINALITY AS u(cell, i)
    WHERE u.cell <> ''
) c
CROSS JOIN LATERAL (
    SELECT c.code AS outcome WHERE c.code NOT IN (1, 2)
    UNION ALL SELECT 13::smallint WHERE c.grain
) o
ON CONFLICT DO NOTHING
"""


def downgrade() -> None:
    op.execute(RESTORE_ANOMALIES)
    for name, (columns, _) in CELL_INDEXES.items():
        op.drop_index(name, table_name="key_outcomes")
        op.create_index(name, "key_outcomes", columns)
    op.create_primary_key("pk_key_outcomes", "key_outcomes", ["run_pk", "key"])
