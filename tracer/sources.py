"""Opening a dataset path the way Spark and Glue leave it, and fingerprinting its content.

A path is a Parquet file, a Spark-style directory (`part-*.parquet`,
`_SUCCESS`, `key=value/` partition folders), a glob, or a URI pyarrow's
filesystems understand (`s3://...`). Hive partition columns are columns.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

_GLOB_CHARS = frozenset("*?[")
_HIVE = ds.HivePartitioning.discover(infer_dictionary=False)


def resolve_path(path: str, base_dir: Path) -> str:
    """Make a manifest path absolute against the manifest's folder; URIs pass as they are."""
    if "://" in path:
        return path
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else (base_dir / p))


def open_dataset(uri: str) -> ds.Dataset:
    """Discover the Parquet files behind `uri`; raises FileNotFoundError or pa.ArrowInvalid."""
    if "://" in uri:
        filesystem, root = pafs.FileSystem.from_uri(uri)
        return ds.dataset(root, filesystem=filesystem, format="parquet", partitioning=_HIVE)
    if any(ch in uri for ch in _GLOB_CHARS):
        files = sorted(f for f in glob.glob(uri, recursive=True) if os.path.isfile(f))
        if not files:
            raise FileNotFoundError(f"no file matches {uri}")
        base = glob_base(uri)
        return ds.dataset(files, format="parquet", partitioning=_HIVE, partition_base_dir=base)
    if not os.path.exists(uri):
        raise FileNotFoundError(f"no such file or directory: {uri}")
    dataset = ds.dataset(uri, format="parquet", partitioning=_HIVE)
    if not dataset.files:
        raise FileNotFoundError(f"no Parquet file under {uri}")
    return dataset


def glob_base(pattern: str) -> str:
    """The folder a glob starts from (the path itself when it has no glob characters)."""
    parts = Path(pattern).parts
    fixed = _takewhile_plain(parts)
    return str(Path(*fixed)) if fixed else "."


def _takewhile_plain(parts: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for part in parts:
        if any(ch in part for ch in _GLOB_CHARS):
            break
        out.append(part)
    return out


def fingerprint(dataset: ds.Dataset) -> str:
    """sha256 over every file's relative name and bytes: same content, same fingerprint."""
    digest = hashlib.sha256()
    filesystem = dataset.filesystem
    files = sorted(dataset.files)
    common = os.path.commonpath(files) if len(files) > 1 else os.path.dirname(files[0])
    for name in files:
        digest.update(os.path.relpath(name, common).encode())
        digest.update(b"\0")
        with filesystem.open_input_stream(name) as stream:
            while chunk := stream.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def schema_columns(schema: pa.Schema) -> list[dict[str, str]]:
    """The schema as stored with a dataset: for schema drift and for users to read."""
    return [{"name": f.name, "type": str(f.type)} for f in schema]


@dataclass(frozen=True)
class PartFile:
    """One Parquet file of a dataset, as its footer describes it."""

    path: str
    schema: pa.Schema


def read_footers(dataset: ds.Dataset) -> tuple[list[PartFile], list[str]]:
    """Every file's schema from its footer alone, and what is wrong with any.

    Dataset discovery reads only the first file's footer, so a Spark folder whose other
    part files are empty, truncated or of another schema would only fail (or be cast
    silently) while its data is read. Footers are a few kB each: reading them all costs
    little and lets validation name the part file at fault. A problem is "<file>: <what>".
    """
    parts: list[PartFile] = []
    problems: list[str] = []
    for path in sorted(dataset.files):
        found = read_footer(path, dataset.filesystem)
        if isinstance(found, str):
            problems.append(f"{path}: {found}")
        else:
            parts.append(found)
    return parts, problems


def read_footer(path: str, filesystem: pafs.FileSystem | None = None) -> PartFile | str:
    """One file's footer, or what is wrong with the file (empty, not Parquet, a column twice)."""
    filesystem = filesystem or pafs.LocalFileSystem()
    try:
        with filesystem.open_input_file(path) as stream:
            if stream.size() == 0:  # the one stat, from the open file (one request on S3)
                return "is empty (0 bytes), not a Parquet file"
            schema = pq.read_metadata(stream).schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as exc:
        return f"not readable as Parquet ({exc})"
    twice = sorted(name for name, n in Counter(schema.names).items() if n > 1)
    if twice:
        return f"column {', '.join(map(repr, twice))} appears twice"
    # DuckDB, which reads the files, binds column names regardless of case: `id` would
    # read the values of `ID`.
    by_case: dict[str, list[str]] = {}
    for name in schema.names:
        by_case.setdefault(name.casefold(), []).append(name)
    alike = next((names for names in by_case.values() if len(names) > 1), None)
    if alike:
        return (
            f"columns {', '.join(map(repr, alike))} differ only in case; "
            "tracer reads column names regardless of case"
        )
    return PartFile(path, schema)
