"""run layout column, status and role checks, one name for row counts

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 07:00:00

The read side took a run's key types and stages from an untyped "resolved"
block inside the stored manifest; they now have their own column, written from
tracer.model.RunLayout. Existing runs are carried over. Row counts are named
rows_in / rows_out / rows_dropped in every answer, stored summaries included.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen here: a later change of the enums comes with its own migration.
RUN_STATUSES = ("queued", "ingesting", "classified", "failed")
DATASET_STATUSES = ("pending", "ingested", "failed")
DATASET_ROLES = ("output", "traceability")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.add_column("runs", sa.Column("layout", postgresql.JSONB(), nullable=True))
    op.execute(
        """
UPDATE runs SET layout = jsonb_build_object(
    'key', manifest->'pipeline'->'key',
    'key_types', (
        SELECT jsonb_agg(manifest->'resolved'->'key_types'->(k.column_name) ORDER BY k.position)
        FROM jsonb_array_elements_text(manifest->'pipeline'->'key')
             WITH ORDINALITY AS k(column_name, position)
    ),
    'stages', manifest->'resolved'->'stages',
    'finals', manifest->'resolved'->'finals',
    'reported', coalesce((
        SELECT jsonb_object_agg(t->>'name', t->'reported')
        FROM jsonb_array_elements(manifest->'pipeline'->'traceability') AS t
    ), '{}'::jsonb)
), manifest = manifest - 'resolved'
"""
    )
    op.alter_column("runs", "layout", nullable=False)
    op.create_check_constraint(op.f("ck_runs_status"), "runs", _in("status", RUN_STATUSES))
    op.create_check_constraint(
        op.f("ck_datasets_status"), "datasets", _in("status", DATASET_STATUSES)
    )
    op.create_check_constraint(op.f("ck_datasets_role"), "datasets", _in("role", DATASET_ROLES))
    op.drop_column("dataset_chunks", "keys")
    op.alter_column("anomalies", "rows_drop", new_column_name="rows_dropped")
    _rename_row_counts(("in", "rows_in"), ("out", "rows_out"), ("drop", "rows_dropped"))
    op.execute(
        "UPDATE stage_summaries SET totals = "
        "(totals - 'rows_drop') || jsonb_build_object('rows_dropped', totals->'rows_drop')"
    )


def _rename_row_counts(*renames: tuple[str, str]) -> None:
    """Rename the keys of every {outcome: {count: n}} object in stage_summaries.rows."""
    pairs = ", ".join(f"'{new}', v->'{old}'" for old, new in renames)
    op.execute(
        "UPDATE stage_summaries SET rows = coalesce((SELECT jsonb_object_agg(k, "
        f"jsonb_build_object({pairs})) FROM jsonb_each(rows) AS e(k, v)), '{{}}'::jsonb)"
    )


def downgrade() -> None:
    op.execute(
        "UPDATE stage_summaries SET totals = "
        "(totals - 'rows_dropped') || jsonb_build_object('rows_drop', totals->'rows_dropped')"
    )
    _rename_row_counts(("rows_in", "in"), ("rows_out", "out"), ("rows_dropped", "drop"))
    op.alter_column("anomalies", "rows_dropped", new_column_name="rows_drop")
    op.add_column(
        "dataset_chunks", sa.Column("keys", sa.Integer(), nullable=False, server_default="0")
    )
    op.alter_column("dataset_chunks", "keys", server_default=None)
    op.drop_constraint(op.f("ck_datasets_role"), "datasets", type_="check")
    op.drop_constraint(op.f("ck_datasets_status"), "datasets", type_="check")
    op.drop_constraint(op.f("ck_runs_status"), "runs", type_="check")
    op.execute(
        """
UPDATE runs SET manifest = manifest || jsonb_build_object('resolved', jsonb_build_object(
    'key_types', (
        SELECT jsonb_object_agg(k.column_name, layout->'key_types'->((k.position - 1)::int))
        FROM jsonb_array_elements_text(layout->'key') WITH ORDINALITY AS k(column_name, position)
    ),
    'stages', layout->'stages',
    'finals', layout->'finals'
))
"""
    )
    op.drop_column("runs", "layout")
