"""Regenerate ``tracer/data/bank_clients.parquet`` from the UCI Bank Marketing CSV.

The demo (``tracer demo``) must run without the raw CSV, so we ship a small,
typed, zstd-compressed Parquet copy with a stable ``client_id`` lineage key.
The output is deterministic: same CSV in, byte-identical Parquet out (for a
given pyarrow version).

Usage (from the repository root)::

    python scripts/make_bank_clients.py [--csv ../shared/data/bank-full.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pv
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CSV = REPO.parent / "shared" / "data" / "bank-full.csv"
DEFAULT_OUT = REPO / "tracer" / "data" / "bank_clients.parquet"

#: First client_id; the key of CSV row i (0-based, header excluded) is FIRST_ID + i.
FIRST_ID = 100_001

#: Column types of bank-full.csv (see bank-full.names.txt): numeric attributes as
#: integers, everything else (including the yes/no flags and ``y``) as strings.
COLUMN_TYPES: dict[str, pa.DataType] = {
    "age": pa.int32(),
    "job": pa.string(),
    "marital": pa.string(),
    "education": pa.string(),
    "default": pa.string(),
    "balance": pa.int32(),
    "housing": pa.string(),
    "loan": pa.string(),
    "contact": pa.string(),
    "day": pa.int32(),
    "month": pa.string(),
    "duration": pa.int32(),
    "campaign": pa.int32(),
    "pdays": pa.int32(),
    "previous": pa.int32(),
    "poutcome": pa.string(),
    "y": pa.string(),
}

EXPECTED_ROWS = 45_211


def read_bank_csv(csv_path: Path) -> pa.Table:
    """Read the ';'-separated CSV with explicit types, so nothing is inferred."""
    table = pv.read_csv(
        csv_path,
        read_options=pv.ReadOptions(use_threads=False),
        parse_options=pv.ParseOptions(delimiter=";", quote_char='"'),
        convert_options=pv.ConvertOptions(
            column_types=COLUMN_TYPES,
            include_columns=list(COLUMN_TYPES),
            strings_can_be_null=False,
        ),
    )
    if table.column_names != list(COLUMN_TYPES):
        raise ValueError(f"unexpected columns in {csv_path}: {table.column_names}")
    return table


def with_client_id(table: pa.Table) -> pa.Table:
    """Prepend the lineage key: 100001 + row index, in file order."""
    ids = pc.add(pa.array(range(table.num_rows), pa.int64()), FIRST_ID)
    return table.add_column(0, pa.field("client_id", pa.int64(), nullable=False), ids)


def write(table: pa.Table, out: Path) -> None:
    """Write one row group, zstd level 19, no volatile metadata (deterministic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(
        table.replace_schema_metadata(None),
        out,
        compression="zstd",
        compression_level=19,
        row_group_size=table.num_rows,
        use_dictionary=True,
        write_statistics=True,
    )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="bank-full.csv")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Parquet to write")
    args = parser.parse_args(argv)

    table = with_client_id(read_bank_csv(args.csv))
    if table.num_rows != EXPECTED_ROWS:
        raise ValueError(f"expected {EXPECTED_ROWS} rows, read {table.num_rows}")
    write(table, args.out)
    print(f"wrote {args.out} ({table.num_rows} rows, {args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
