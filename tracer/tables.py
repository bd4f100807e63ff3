"""Postgres schema: SQLAlchemy Core tables on one MetaData with a naming convention.

Per-key tables are partitioned so that a run, or one dataset of it, is replaced
or dropped as a unit (DROP TABLE, not DELETE) and queries prune to it:

* `dataset_keys` (LIST by dataset_id): what ingestion keeps of a dataset,
  rows per key (and per stage and reason for traceability);
* `key_outcomes`, `anomalies`, `key_reasons` (LIST by run_pk): what
  classification derives for a run.

Partitions are created by `tracer.partitions`; Alembic creates the parents.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


def _timestamp(name: str, nullable: bool = True) -> Column:
    return Column(name, DateTime(timezone=True), nullable=nullable)


pipelines = Table(
    "pipelines",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("spec", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    _timestamp("updated_at"),
)

runs = Table(
    "runs",
    metadata,
    Column("pk", Integer, primary_key=True),
    Column("run_id", Text, nullable=False, unique=True),
    Column("pipeline_id", ForeignKey("pipelines.id"), nullable=False, index=True),
    Column("label", Text),
    Column("rerun_of", Text),
    Column("status", Text, nullable=False),
    Column("error", Text),
    Column("manifest", JSONB, nullable=False),
    Column("totals", JSONB),
    Column("gap_cells", JSONB),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    _timestamp("classified_at"),
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
    Column("null_key_rows", JSONB),  # {stage name: rows} (traceability may feed several stages)
    Column("duplicate_rows", BigInteger),
    Column("columns", JSONB),
    Column("status", Text, nullable=False),
    Column("error", Text),
    _timestamp("ingested_at"),
    UniqueConstraint("run_pk", "role", "name"),
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

dataset_keys = Table(
    "dataset_keys",
    metadata,
    Column("dataset_id", Integer, nullable=False),
    Column("kind", SmallInteger, nullable=False),  # 0 output, 1 reported trace, 2 operational trace
    Column("stage", SmallInteger, nullable=False),
    Column("key", Text, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("grains", Integer, nullable=False),  # distinct grain values among the rows
    Column("reason", Text),
    postgresql_partition_by="LIST (dataset_id)",
)

key_outcomes = Table(
    "key_outcomes",
    metadata,
    Column("run_pk", Integer, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("final", SmallInteger, nullable=False),
    Column("entered", Boolean, nullable=False),
    Column("targeted", Boolean, nullable=False),
    Column("traced", Boolean, nullable=False),
    Column("traced_reported", Boolean, nullable=False),
    # One element per stage, in pipeline order (0 where the key has no outcome).
    Column("outcomes", ARRAY(SmallInteger), nullable=False),
    Column("rows_in", ARRAY(Integer), nullable=False),
    Column("rows_out", ARRAY(Integer), nullable=False),
    Column("drop_rep", ARRAY(Integer), nullable=False),
    Column("drop_ops", ARRAY(Integer), nullable=False),
    Column("grain_violations", ARRAY(SmallInteger), nullable=False),  # stage indexes
    postgresql_partition_by="LIST (run_pk)",
)

anomalies = Table(
    "anomalies",
    metadata,
    Column("run_pk", Integer, primary_key=True),
    Column("outcome", SmallInteger, primary_key=True),
    Column("stage", SmallInteger, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("rows_in", Integer, nullable=False),
    Column("rows_out", Integer, nullable=False),
    Column("rows_drop", Integer, nullable=False),
    postgresql_partition_by="LIST (run_pk)",
)

key_reasons = Table(
    "key_reasons",
    metadata,
    Column("run_pk", Integer, nullable=False),
    Column("key", Text, nullable=False),
    Column("stage", SmallInteger, nullable=False),
    Column("dataset_id", Integer, nullable=False),
    Column("reason", Text),
    Column("rows", Integer, nullable=False),
    Index(None, "run_pk", "key"),
    postgresql_partition_by="LIST (run_pk)",
)

PARTITIONED_BY_RUN = (key_outcomes, anomalies, key_reasons)
