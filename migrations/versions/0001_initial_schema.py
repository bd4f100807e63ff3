"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 12:46:43.942138
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "anomalies",
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.SmallInteger(), nullable=False),
        sa.Column("stage", sa.SmallInteger(), nullable=False),
        sa.Column("key", sa.Text(collation="C"), nullable=False),
        sa.Column("rows_in", sa.Integer(), nullable=False),
        sa.Column("rows_out", sa.Integer(), nullable=False),
        sa.Column("rows_drop", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("run_pk", "outcome", "stage", "key", name=op.f("pk_anomalies")),
        postgresql_partition_by="LIST (run_pk)",
    )
    op.create_table(
        "key_outcomes",
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(collation="C"), nullable=False),
        sa.Column("final", sa.SmallInteger(), nullable=False),
        sa.Column("entered", sa.Boolean(), nullable=False),
        sa.Column("targeted", sa.Boolean(), nullable=False),
        sa.Column("traced", sa.Boolean(), nullable=False),
        sa.Column("traced_reported", sa.Boolean(), nullable=False),
        sa.Column("stages", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_pk", "key", name=op.f("pk_key_outcomes")),
        postgresql_partition_by="LIST (run_pk)",
    )
    op.create_table(
        "key_reasons",
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(collation="C"), nullable=False),
        sa.Column("stage", sa.SmallInteger(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=False),
        postgresql_partition_by="LIST (run_pk)",
    )
    op.create_index(op.f("ix_key_reasons_run_pk"), "key_reasons", ["run_pk", "key"], unique=False)
    op.create_table(
        "pipelines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("spec", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipelines")),
        sa.UniqueConstraint("name", name=op.f("uq_pipelines_name")),
    )
    op.create_table(
        "runs",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("rerun_of", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("manifest", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("totals", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("gap_cells", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("classified_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["pipeline_id"], ["pipelines.id"], name=op.f("fk_runs_pipeline_id_pipelines")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_runs")),
        sa.UniqueConstraint("run_id", name=op.f("uq_runs_run_id")),
    )
    op.create_index(op.f("ix_runs_pipeline_id"), "runs", ["pipeline_id"], unique=False)
    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=True),
        sa.Column("row_count", sa.BigInteger(), nullable=True),
        sa.Column("key_count", sa.BigInteger(), nullable=True),
        sa.Column("null_key_rows", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("duplicate_rows", sa.BigInteger(), nullable=True),
        sa.Column("columns", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_pk"], ["runs.pk"], name=op.f("fk_datasets_run_pk_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_datasets")),
        sa.UniqueConstraint("run_pk", "role", "name", name=op.f("uq_datasets_run_pk")),
    )
    op.create_table(
        "stage_summaries",
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("stage_index", sa.SmallInteger(), nullable=False),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("outcomes", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("rows", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("flags", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("totals", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_pk"], ["runs.pk"], name=op.f("fk_stage_summaries_run_pk_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_pk", "stage_index", name=op.f("pk_stage_summaries")),
    )
    op.create_table(
        "dataset_chunks",
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("dataset_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("keys", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name=op.f("fk_dataset_chunks_dataset_id_datasets"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("run_pk", "dataset_id", "seq", name=op.f("pk_dataset_chunks")),
        postgresql_partition_by="LIST (run_pk)",
    )
    # The chunks are zstd Parquet already: TOAST compressing them again is wasted work.
    # (Set per partition too, by tracer.partitions.ensure_chunk_partition.)
    op.execute("ALTER TABLE dataset_chunks ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("dataset_chunks")
    op.drop_table("stage_summaries")
    op.drop_table("datasets")
    op.drop_index(op.f("ix_runs_pipeline_id"), table_name="runs")
    op.drop_table("runs")
    op.drop_table("pipelines")
    op.drop_index(op.f("ix_key_reasons_run_pk"), table_name="key_reasons")
    op.drop_table("key_reasons")
    op.drop_table("key_outcomes")
    op.drop_table("anomalies")
