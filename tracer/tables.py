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
)
from sqlalchemy.dialects.postgresql import JSONB

from tracer.model import DatasetRole, DatasetStatus, RunStatus

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

dataset_chunks = Table(
    "dataset_chunks",
    metadata,
    Column("run_pk", Integer, primary_key=True),
    Column("dataset_id", ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True),
    # zstd Parquet of tracer.ingest.CHUNK_SCHEMA; stored EXTERNAL (no second compression).
    Column("data", LargeBinary, nullable=False),
    postgresql_partition_by="LIST (run_pk)",
)

key_outcomes = Table(
    "key_outcomes",
    metadata,
    Column("run_pk", Integer, primary_key=True),
    Column("key", KEY, primary_key=True),
    Column("final", SmallInteger, nullable=False),
    Column("entered", Boolean, nullable=False),
    Column("targeted", Boolean, nullable=False),
    Column("traced", Boolean, nullable=False),
    Column("traced_reported", Boolean, nullable=False),
    # Per stage in pipeline order, ';'-separated: "outcome,in,out,drop_rep,drop_ops,grain"
    # ('' where the key has no outcome); see tracer.outcomes.StageCell. Plain text COPYs
    # several times faster than six Postgres arrays and is half their size.
    Column("stages", Text, nullable=False),
    postgresql_partition_by="LIST (run_pk)",
)

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

PARTITIONED_BY_RUN = (key_outcomes, anomalies, key_reasons)
