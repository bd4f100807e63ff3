"""key patterns: a key's stages stored once per run and pattern, not once per key

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 15:00:00

A run's keys share a few dozen per-stage patterns (outcome and counts at every stage:
66 at 1M clients), so `key_outcomes` keeps a pattern number and `key_patterns` the
pattern's text (`stages`) and outcome letters (`codes`), per run like the other run
tables. Stored runs get their patterns here, numbered in the byte order of their text
as classification numbers them (so a process that kept a run's patterns stays right);
this rewrites their rows, a few seconds per million keys. Going down gives every key its
text back.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _run_pks() -> list[int]:
    """Runs with a partition of `key_outcomes` (classified at least once)."""
    found = op.get_bind().execute(
        sa.text(
            "SELECT r.pk FROM runs r WHERE to_regclass(format('key_outcomes_r%s', r.pk)) "
            "IS NOT NULL ORDER BY r.pk"
        )
    )
    return list(found.scalars())


def upgrade() -> None:
    op.execute(
        "CREATE TABLE key_patterns (run_pk INTEGER NOT NULL, pattern INTEGER NOT NULL, "
        "stages TEXT NOT NULL, codes TEXT NOT NULL, "
        "CONSTRAINT pk_key_patterns PRIMARY KEY (run_pk, pattern)) PARTITION BY LIST (run_pk)"
    )
    for pk in _run_pks():
        op.execute(
            f"CREATE TABLE key_patterns_r{pk} PARTITION OF key_patterns FOR VALUES IN ({pk})"
        )
        op.execute(f"ALTER INDEX key_patterns_r{pk}_pkey RENAME TO pk_key_patterns_r{pk}")
    op.execute(
        "INSERT INTO key_patterns (run_pk, pattern, stages, codes) "
        'SELECT run_pk, row_number() OVER (PARTITION BY run_pk ORDER BY stages COLLATE "C"), '
        "stages, codes FROM (SELECT DISTINCT run_pk, stages, codes FROM key_outcomes) AS d"
    )
    op.add_column("key_outcomes", sa.Column("pattern", sa.Integer()))
    op.execute(
        "UPDATE key_outcomes AS k SET pattern = p.pattern FROM key_patterns AS p "
        "WHERE p.run_pk = k.run_pk AND p.stages = k.stages AND p.codes = k.codes"
    )
    op.alter_column("key_outcomes", "pattern", nullable=False)
    op.drop_index("ix_key_outcomes_key", table_name="key_outcomes")
    op.create_index("ix_key_outcomes_key", "key_outcomes", ["key", "final", "pattern"])
    op.drop_column("key_outcomes", "stages")
    op.drop_column("key_outcomes", "codes")


def downgrade() -> None:
    op.add_column("key_outcomes", sa.Column("stages", sa.Text()))
    op.add_column("key_outcomes", sa.Column("codes", sa.Text()))
    op.execute(
        "UPDATE key_outcomes AS k SET stages = p.stages, codes = p.codes FROM key_patterns AS p "
        "WHERE p.run_pk = k.run_pk AND p.pattern = k.pattern"
    )
    op.alter_column("key_outcomes", "stages", nullable=False)
    op.alter_column("key_outcomes", "codes", nullable=False)
    op.drop_index("ix_key_outcomes_key", table_name="key_outcomes")
    op.create_index("ix_key_outcomes_key", "key_outcomes", ["key", "final", "codes"])
    op.drop_column("key_outcomes", "pattern")
    op.drop_table("key_patterns")
