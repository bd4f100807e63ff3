"""Postgres schema: SQLAlchemy Core tables on one MetaData with a naming convention.

What ingestion keeps of a dataset (rows per key) lives in `dataset_chunks` as
compressed Parquet; what classification derives for a run (`key_outcomes`,
`anomalies`, `key_reasons`) sits beside it. All four are partitioned by run, so
a run is replaced or dropped as a unit (DROP TABLE, not DELETE: the space comes
back at once) and queries prune to it.
Partitions are created by `tracer.partitions`; Alembic creates the parents.
Keys use the "C" collation: byte order sorts and indexes several times faster
than a linguistic collation, and keys are identifiers, not prose.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from tracer.model import DatasetRole, DatasetStatus, RunStatus
from tracer.outcomes import Final

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)
KEY = Text(collation="C")


def _timestamp(name: str, nullable: bool = True) -> Column:
    return Column(name, DateTime(timezone=True), nullable=nullable)


def one_of(column: str, values: type[StrEnum]) -> CheckConstraint:
    """The column holds a value of the enum: the database refuses a misspelt status."""
    listed = ", ".join(f"'{v.value}'" for v in values)
    return CheckConstraint(f"{column} IN ({listed})", name=column)


pipelines = Table(
    "pipelines",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# Each distinct definition posted under a pipeline's name, numbered from 1; never changed,
# so every run keeps the definition it was classified with (tracer.pipelines).
pipeline_versions = Table(
    "pipeline_versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pipeline_id", ForeignKey("pipelines.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("spec", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("pipeline_id", "version"),
)

runs = Table(
    "runs",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("run_id", Text, nullable=False, unique=True),
    Column("pipeline_id", ForeignKey("pipelines.id"), nullable=False, index=True),
    Column("pipeline_version_id", ForeignKey("pipeline_versions.id"), nullable=False, index=True),
    Column("label", Text),
    Column("rerun_of", Text),
    Column("status", Text, nullable=False),
    Column("error", Text),
    Column("manifest", JSONB, nullable=False),
    Column("layout", JSONB, nullable=False),  # tracer.model.RunLayout: what the read side needs
    Column("totals", JSONB),
    Column("gap_cells", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    _timestamp("classified_at"),
    one_of("status", RunStatus),
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_pk", ForeignKey("runs.pk", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("uri", Text, nullable=False),
    Column("fingerprint", Text),
    Column("row_count", BigInteger),
    Column("key_count", BigInteger),
    Column("null_key_rows", JSONB),  # {stage name: rows} (traceability may feed several stages)
    Column("duplicate_rows", BigInteger),
    Column("columns", JSONB),
    Column("status", Text, nullable=False),
    Column("error", Text),
    _timestamp("ingested_at"),
    UniqueConstraint("run_pk", "role", "name"),
    one_of("status", DatasetStatus),
    one_of("role", DatasetRole),
)

stage_summaries = Table(
    "stage_summaries",
    metadata,
    Column("run_pk", ForeignKey("runs.pk", ondelete="CASCADE"), primary_key=True),
    Column("stage_index", SmallInteger, primary_key=True),
    Column("stage", Text, nullable=False),
    Column("outcomes", JSONB, nullable=False),
    Column("rows", JSONB, nullable=False),
    Column("flags", JSONB, nullable=False),
    Column("totals", JSONB, nullable=False),  # keys and rows in/out/dropped at the stage
)

# A comparison of two runs, computed once (tracer.queries.compare) and valid while both
# runs keep the classification it was computed from: a rerun's reconciliation, and the
# same comparison asked again, read one row instead of joining two runs' keys.
comparisons = Table(
    "comparisons",
    metadata,
    Column("run_a_pk", ForeignKey("runs.pk", ondelete="CASCADE"), primary_key=True),
    Column("run_b_pk", ForeignKey("runs.pk", ondelete="CASCADE"), primary_key=True),
    _timestamp("a_classified_at", nullable=False),
    _timestamp("b_classified_at", nullable=False),
    Column("result", JSONB, nullable=False),
    Column("computed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# The keys whose final outcome differs in a kept comparison, by cell: a changed cell's
# page is a range of this index, however few keys it has among a run's million. No foreign
# key (checking one per row doubled the time to keep 100k keys): a trigger on `comparisons`
# (migration 0004) deletes a pair's keys with its row, so they go with either run.
comparison_keys = Table(
    "comparison_keys",
    metadata,
    Column("run_a_pk", Integer, primary_key=True),
    Column("run_b_pk", Integer, primary_key=True),
    Column("a", SmallInteger, primary_key=True),  # final outcome code in A, 0 = absent
    Column("b", SmallInteger, primary_key=True),
    Column("key", KEY, primary_key=True),
    Column("first_stage", SmallInteger),  # where it first differs, in the compared stages
)

dataset_chunks = Table(
    "dataset_chunks",
    metadata,
    Column("run_pk", Integer, primary_key=True),
    Column("dataset_id", ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    # zstd Parquet of tracer.chunks.CHUNK_COLUMNS; stored EXTERNAL (no second compression).
    Column("data", LargeBinary, nullable=False),
    postgresql_partition_by="LIST (run_pk)",
)

key_outcomes = Table(
    "key_outcomes",
    metadata,
    # No primary key: one row per key is what classification writes (a GROUP BY key), and
    # the (key, final, pattern) index below serves every lookup by key; a second unique
    # index over the same keys cost a fifth of the run's storage and of its index builds.
    Column("run_pk", Integer, nullable=False),
    Column("key", KEY, nullable=False),
    Column("final", SmallInteger, nullable=False),
    Column("entered", Boolean, nullable=False),
    Column("targeted", Boolean, nullable=False),
    Column("traced", Boolean, nullable=False),
    Column("traced_reported", Boolean, nullable=False),
    # The key's counts and outcome at every stage, as a number in `key_patterns`: a run's
    # keys share a few dozen such patterns (66 at 1M clients), so each key stores four bytes
    # where the text of its stages took eighty.
    Column("pattern", Integer, nullable=False),
    # The key's cause in its gap cell (docs/semantics.md#causes): stage index in pipeline
    # order and the outcome there; NULL in the `targeted` cell, which has none. Once for
    # the gap and once for the reporting gap (they differ for keys targeted and traced).
    Column("cause_stage", SmallInteger),
    Column("cause_outcome", SmallInteger),
    Column("reporting_cause_stage", SmallInteger),
    Column("reporting_cause_outcome", SmallInteger),
    # Every lookup by key (journeys, history, a page's details), the key order of the
    # `targeted` cell and of the common anomalies, and a comparison's full join: both
    # runs' keys in order, read from this index alone.
    Index(None, "key", "final", "pattern"),
    # Gap-cell pages (cell, then cause, then key) of every cell but `targeted`, the one
    # without causes, which holds most keys and pages by key above: the predicate is the
    # cell's complement, which the cell's own filters imply. Partitions name their indexes
    # after the first column, so each starts with another.
    Index(
        None,
        "traced",
        "entered",
        "targeted",
        "cause_stage",
        "cause_outcome",
        "key",
        postgresql_where=text("NOT (entered AND targeted AND NOT traced)"),
    ),
    Index(
        None,
        "traced_reported",
        "entered",
        "targeted",
        "reporting_cause_stage",
        "reporting_cause_outcome",
        "key",
        postgresql_where=text("NOT (entered AND targeted AND NOT traced_reported)"),
    ),
    # Comparison cells of keys not targeted in run A (a few percent of the keys): the
    # targeted ones page through the key index.
    Index(None, "final", "key", postgresql_where=text(f"final <> {Final.TARGETED.value}")),
    postgresql_partition_by="LIST (run_pk)",
)

# The anomaly list's rare (stage, outcome) groups and grain violations; a group holding a
# large share of the run's keys (tracer.classify.dense_groups: `expanded`,
# `partially_dropped`, a grain declared too narrow) is listed from `key_outcomes` instead,
# so a run never stores most of its keys twice.
anomalies = Table(
    "anomalies",
    metadata,
    Column("run_pk", Integer, primary_key=True),
    Column("outcome", SmallInteger, primary_key=True),
    Column("stage", SmallInteger, primary_key=True),
    Column("key", KEY, primary_key=True),
    Column("rows_in", Integer, nullable=False),
    Column("rows_out", Integer, nullable=False),
    Column("rows_dropped", Integer, nullable=False),
    postgresql_partition_by="LIST (run_pk)",
)

key_reasons = Table(
    "key_reasons",
    metadata,
    Column("run_pk", Integer, nullable=False),
    Column("key", KEY, nullable=False),
    Column("stage", SmallInteger, nullable=False),
    Column("dataset_id", Integer, nullable=False),
    Column("reason", Text),
    Column("rows", Integer, nullable=False),
    Index(None, "run_pk", "key"),
    postgresql_partition_by="LIST (run_pk)",
)

# The distinct per-stage patterns of a run's keys (`key_outcomes.pattern`), numbered from 1.
key_patterns = Table(
    "key_patterns",
    metadata,
    Column("run_pk", Integer, primary_key=True),
    Column("pattern", Integer, primary_key=True),
    # Per stage in pipeline order, ';'-separated: "outcome,in,out,drop_rep,drop_ops,grain"
    # ('' where the key has no outcome); see tracer.outcomes.StageCell.
    Column("stages", Text, nullable=False),
    # The outcome code at each stage as one letter, chr(64 + code) ('@' for none): what a
    # comparison of two runs and the anomaly list's common outcomes select patterns by.
    Column("codes", Text, nullable=False),
    postgresql_partition_by="LIST (run_pk)",
)

PARTITIONED_BY_RUN = (key_outcomes, anomalies, key_reasons, key_patterns)

# OpenLineage COMPLETE/START/... events of jobs some pipeline maps (tracer.openlineage_in),
# grouped by parent run (an Airflow DAG run) until every stage and source has its output.
openlineage_events = Table(
    "openlineage_events",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("parent_run_id", Text, nullable=False, index=True),
    Column("parent_namespace", Text),
    Column("parent_name", Text),
    Column("job_namespace", Text, nullable=False),
    Column("job_name", Text, nullable=False),
    Column("run_id", Text, nullable=False),
    Column("event_type", Text),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("outputs", JSONB, nullable=False),  # [{"namespace": ..., "name": ...}]
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

openlineage_runs = Table(
    "openlineage_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("parent_run_id", Text, nullable=False),  # also the tracer run id
    Column("pipeline", Text, nullable=False),
    Column("parent_namespace", Text),
    Column("parent_name", Text),
    Column("status", Text, nullable=False),
    Column("missing", JSONB, nullable=False),  # what the run still waits for
    Column("errors", JSONB, nullable=False),  # why a complete run could not be registered
    Column("submitted", JSONB),  # the run part last registered: outputs, traceability
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    UniqueConstraint("parent_run_id", "pipeline"),
    CheckConstraint("status IN ('pending', 'invalid', 'queued')", name="status"),
)
