"""openlineage events and the runs they assemble

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-05 09:00:00

`POST /api/v1/lineage` receives OpenLineage RunEvents. Events of jobs a pipeline
maps to its stages and sources are kept, grouped by parent run, until each stage
and source has an output; `openlineage_runs` says what each such run still waits
for, or why it could not be registered (tracer.openlineage_in).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "openlineage_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("parent_run_id", sa.Text(), nullable=False),
        sa.Column("parent_namespace", sa.Text(), nullable=True),
        sa.Column("parent_name", sa.Text(), nullable=True),
        sa.Column("job_namespace", sa.Text(), nullable=False),
        sa.Column("job_name", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=True),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outputs", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_openlineage_events")),
    )
    op.create_index(
        op.f("ix_openlineage_events_parent_run_id"), "openlineage_events", ["parent_run_id"]
    )
    op.create_table(
        "openlineage_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("parent_run_id", sa.Text(), nullable=False),
        sa.Column("pipeline", sa.Text(), nullable=False),
        sa.Column("parent_namespace", sa.Text(), nullable=True),
        sa.Column("parent_name", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("missing", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("errors", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("submitted", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'invalid', 'queued')", name=op.f("ck_openlineage_runs_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_openlineage_runs")),
        sa.UniqueConstraint(
            "parent_run_id", "pipeline", name=op.f("uq_openlineage_runs_parent_run_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("openlineage_runs")
    op.drop_index(op.f("ix_openlineage_events_parent_run_id"), table_name="openlineage_events")
    op.drop_table("openlineage_events")
