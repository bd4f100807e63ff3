"""pipeline versions: every definition posted under a name is kept, each run points at its own

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 09:00:00

The registry kept one definition per pipeline and overwrote it when a run posted
another, so older runs lost the definition they were classified with. Each run
still holds its own copy (manifest->'pipeline'), so the versions are rebuilt
from them: each distinct definition becomes a version, numbered in the order
runs first used it, and the registry's current definition is the latest
version (version 1 where, as usual, every run used it). Downgrade puts the
latest version back into pipelines.spec.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# A run's own copy of its definition (the registry's, should a run somehow lack one).
RUN_SPEC = "coalesce(runs.manifest->'pipeline', p.spec)"


def upgrade() -> None:
    op.create_table(
        "pipeline_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("spec", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["pipeline_id"],
            ["pipelines.id"],
            name=op.f("fk_pipeline_versions_pipeline_id_pipelines"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pipeline_versions")),
        sa.UniqueConstraint(
            "pipeline_id", "version", name=op.f("uq_pipeline_versions_pipeline_id")
        ),
    )
    # Definitions the runs used, by first use, then the registry's own (current) one last.
    op.execute(
        f"""
INSERT INTO pipeline_versions (pipeline_id, version, spec, created_at)
SELECT pipeline_id,
       row_number() OVER (PARTITION BY pipeline_id ORDER BY is_current, first_used, spec),
       spec, first_used
FROM (
    SELECT pipeline_id, spec, bool_or(is_current) AS is_current, min(at) AS first_used
    FROM (
        SELECT pipeline_id, {RUN_SPEC} AS spec, false AS is_current, runs.created_at AS at
        FROM runs JOIN pipelines AS p ON p.id = runs.pipeline_id
        UNION ALL
        SELECT id, spec, true, coalesce(updated_at, created_at) FROM pipelines
    ) AS used
    GROUP BY pipeline_id, spec
) AS definitions
"""
    )
    op.add_column("runs", sa.Column("pipeline_version_id", sa.Integer(), nullable=True))
    op.execute(
        f"""
UPDATE runs SET pipeline_version_id = v.id
FROM pipeline_versions AS v JOIN pipelines AS p ON p.id = v.pipeline_id
WHERE v.pipeline_id = runs.pipeline_id AND v.spec = {RUN_SPEC}
"""
    )
    op.alter_column("runs", "pipeline_version_id", nullable=False)
    op.create_index(op.f("ix_runs_pipeline_version_id"), "runs", ["pipeline_version_id"])
    op.create_foreign_key(
        op.f("fk_runs_pipeline_version_id_pipeline_versions"),
        "runs",
        "pipeline_versions",
        ["pipeline_version_id"],
        ["id"],
    )
    op.drop_column("pipelines", "spec")
    op.drop_column("pipelines", "updated_at")


def downgrade() -> None:
    op.add_column("pipelines", sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "pipelines",
        sa.Column("spec", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    # The latest version is what the single-definition registry would hold.
    op.execute(
        """
UPDATE pipelines SET spec = latest.spec,
       updated_at = CASE WHEN latest.version > 1 THEN latest.created_at END
FROM (
    SELECT DISTINCT ON (pipeline_id) pipeline_id, version, spec, created_at
    FROM pipeline_versions ORDER BY pipeline_id, version DESC
) AS latest
WHERE latest.pipeline_id = pipelines.id
"""
    )
    op.alter_column("pipelines", "spec", nullable=False)
    op.drop_constraint(
        op.f("fk_runs_pipeline_version_id_pipeline_versions"), "runs", type_="foreignkey"
    )
    op.drop_index(op.f("ix_runs_pipeline_version_id"), table_name="runs")
    op.drop_column("runs", "pipeline_version_id")
    op.drop_table("pipeline_versions")
