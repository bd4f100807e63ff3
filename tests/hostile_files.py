"""A corpus of hostile datasets and manifests, generated (no committed blobs).

Every case is a folder holding its Parquet files and `manifest.yaml` (or raw bytes),
plus what tracer must answer: refused at validation (CLI exit 2, HTTP 4xx), refused
by the ingestion job (CLI exit 2, a failed run through the API), or accepted as
docs/semantics.md says: refused key values (#keys, "Refused values"), null keys counted,
not refused (#keys, "Null keys"), a grain column that is a typo refused while one an
earlier stage had is drift (#stage-flags, `grain_violation`). `expect` lists what the
message must name: the manifest field, the file, the column, the row.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

Fails = Literal["manifest", "ingest", "accepted"]
INT64 = pa.int64()


@dataclass(frozen=True)
class Case:
    name: str
    fails: Fails
    expect: tuple[str, ...]  # substrings of the error (CLI stderr, API body, run error)
    folder: Path
    document: dict[str, Any] | None = None  # the manifest, paths relative to `folder`
    raw: bytes | None = None  # or the manifest's bytes as they are
    api: bool = True  # the API sees it (False: a CLI-only matter, e.g. a directory)
    api_expect: tuple[str, ...] | None = None  # where the API words it otherwise
    api_status: int = 422  # a well-formed but invalid manifest; 400 for an unparseable body
    cli: bool = True  # the CLI sees it (False: data roots, which only a server enforces)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def manifest_path(self) -> Path:
        return self.folder / "manifest.yaml"

    def body(self) -> dict[str, Any]:
        """The manifest as a client posts it: paths absolute, the run id of its own."""
        assert self.document is not None
        data = json.loads(json.dumps(self.document))
        run = data["run"]
        for part in ("outputs", "traceability"):
            run[part] = {n: str(self.folder / p) for n, p in run.get(part, {}).items()}
        if self.fails == "ingest" or self.fails == "accepted":
            run["id"] = f"{run['id']}-api"  # the CLI's attempt must not be the same run
        return data


def document(
    case: str,
    outputs: dict[str, str] | None = None,
    stages: list[dict[str, Any]] | None = None,
    run: dict[str, Any] | None = None,
    key_types: dict[str, str] | None = None,
) -> dict[str, Any]:
    pipeline: dict[str, Any] = {
        "name": f"hostile-{case}".replace("_", "-"),
        "key": ["client_id"],
        "stages": stages or [{"name": "a"}, {"name": "b"}],
    }
    if key_types:
        pipeline["key_types"] = key_types
    return {
        "pipeline": pipeline,
        "run": {
            "id": f"hostile-{case}".replace("_", "-"),
            "outputs": outputs or {"a": "a.parquet", "b": "b.parquet"},
            **(run or {}),
        },
    }


def write(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def rows(values: list[Any], type_: pa.DataType = INT64) -> pa.Table:
    return pa.table({"client_id": pa.array(values, type_)})


Builder = Callable[[Path], Case]
CASES: dict[str, Builder] = {}


def case(fn: Builder) -> Builder:
    CASES[fn.__name__] = fn
    return fn


def _good_a(folder: Path, type_: pa.DataType = INT64) -> None:
    values = [1, 2, 3, 4, 5] if type_ == INT64 else ["1", "2", "3", "4", "5"]
    write(folder / "a.parquet", rows(values, type_))


# Files that are not Parquet, or not all of it -------------------------------------------


@case
def truncated(folder: Path) -> Case:
    _good_a(folder)
    data = write(folder / "b.parquet", rows(list(range(1, 500)))).read_bytes()
    (folder / "b.parquet").write_bytes(data[: len(data) // 2])
    expect = ("run.outputs.b", "b.parquet", "not readable as Parquet")
    return Case("truncated", "manifest", expect, folder, document("truncated"))


@case
def random_bytes(folder: Path) -> Case:
    _good_a(folder)
    (folder / "b.parquet").write_bytes(random.Random(10).randbytes(4096))
    expect = ("run.outputs.b", "b.parquet", "not readable as Parquet")
    return Case("random_bytes", "manifest", expect, folder, document("random_bytes"))


@case
def zero_bytes(folder: Path) -> Case:
    _good_a(folder)
    (folder / "b.parquet").write_bytes(b"")
    expect = ("run.outputs.b", "b.parquet", "0 bytes")
    return Case("zero_bytes", "manifest", expect, folder, document("zero_bytes"))


@case
def zero_byte_part(folder: Path) -> Case:
    _good_a(folder)
    write(folder / "b" / "part-00000.parquet", rows([1, 2]))
    (folder / "b" / "part-00001.parquet").write_bytes(b"")
    outputs = {"a": "a.parquet", "b": "b/"}
    expect = ("run.outputs.b", "part-00001.parquet", "0 bytes")
    return Case("zero_byte_part", "manifest", expect, folder, document("zero_byte_part", outputs))


@case
def zero_rows_no_columns(folder: Path) -> Case:
    """A part file of zero rows and no schema (what an empty DataFrame can leave)."""
    _good_a(folder)
    write(folder / "b" / "part-00000.parquet", rows([1, 2]))
    write(folder / "b" / "part-00001.parquet", pa.table({}))
    outputs = {"a": "a.parquet", "b": "b/"}
    expect = ("run.outputs.b", "part-00001.parquet", "'client_id' is missing")
    doc = document("zero_rows_no_columns", outputs)
    return Case("zero_rows_no_columns", "manifest", expect, folder, doc)


@case
def zero_rows_with_schema(folder: Path) -> Case:
    """A part file of zero rows with the dataset's schema: an empty part, accepted."""
    _good_a(folder)
    write(folder / "b" / "part-00000.parquet", rows([1, 2]))
    write(folder / "b" / "part-00001.parquet", rows([]))
    outputs = {"a": "a.parquet", "b": "b/"}
    doc = document("zero_rows_with_schema", outputs)
    return Case("zero_rows_with_schema", "accepted", (), folder, doc, extra={"orphaned": 3})


# Spark folders whose part files disagree ---------------------------------------------------


@case
def part_lacks_key(folder: Path) -> Case:
    """The issue's case: 450 rows of one part file would have become null-key rows."""
    _good_a(folder)
    write(folder / "b" / "part-00000.parquet", rows([1, 2, 3]))
    write(folder / "b" / "part-00001.parquet", pa.table({"id": list(range(450))}))
    outputs = {"a": "a.parquet", "b": "b/"}
    expect = ("run.outputs.b", "part-00001.parquet", "column 'client_id' is missing")
    return Case("part_lacks_key", "manifest", expect, folder, document("part_lacks_key", outputs))


@case
def part_key_types_differ(folder: Path) -> Case:
    _good_a(folder)
    write(folder / "b" / "part-00000.parquet", rows([1, 2]))
    write(folder / "b" / "part-00001.parquet", rows(["3", "4"], pa.string()))
    outputs = {"a": "a.parquet", "b": "b/"}
    expect = ("part-00001.parquet", "'client_id'", "type string", "int64", "part-00000.parquet")
    doc = document("part_key_types_differ", outputs)
    return Case("part_key_types_differ", "manifest", expect, folder, doc)


@case
def glob_part_lacks_key(folder: Path) -> Case:
    _good_a(folder)
    write(folder / "b" / "x-1.parquet", rows([1, 2]))
    write(folder / "b" / "x-2.parquet", pa.table({"other": [1]}))
    outputs = {"a": "a.parquet", "b": "b/x-*.parquet"}
    expect = ("run.outputs.b", "x-2.parquet", "column 'client_id' is missing")
    doc = document("glob_part_lacks_key", outputs)
    return Case("glob_part_lacks_key", "manifest", expect, folder, doc)


# Keys of the wrong shape -----------------------------------------------------------------


@case
def missing_key_column(folder: Path) -> Case:
    _good_a(folder)
    write(folder / "b.parquet", pa.table({"id": [1, 2]}))
    expect = ("run.outputs.b", "b.parquet", "key column 'client_id' is missing")
    return Case("missing_key_column", "manifest", expect, folder, document("missing_key_column"))


@case
def float_key(folder: Path) -> Case:
    _good_a(folder)
    write(folder / "b.parquet", rows([1.5, 2.0], pa.float64()))
    expect = ("b.parquet", "'client_id'", "type double", "cannot be a lineage key")
    return Case("float_key", "manifest", expect, folder, document("float_key"))


@case
def struct_key(folder: Path) -> Case:
    _good_a(folder)
    struct = pa.array([{"x": 1}, {"x": 2}], pa.struct([("x", pa.int64())]))
    write(folder / "b.parquet", pa.table({"client_id": struct}))
    expect = ("b.parquet", "'client_id'", "type struct<x: int64>", "cannot be a lineage key")
    return Case("struct_key", "manifest", expect, folder, document("struct_key"))


@case
def list_key(folder: Path) -> Case:
    _good_a(folder)
    write(folder / "b.parquet", rows([[1], [2, 3]], pa.list_(pa.int64())))
    expect = ("b.parquet", "'client_id'", "type list<", "cannot be a lineage key")
    return Case("list_key", "manifest", expect, folder, document("list_key"))


@case
def binary_key(folder: Path) -> Case:
    """Key values that are not UTF-8: a binary column."""
    _good_a(folder)
    write(folder / "b.parquet", rows([b"\xff\xfe", b"caf\xe9"], pa.binary()))
    expect = ("b.parquet", "'client_id'", "type binary", "cannot be a lineage key")
    return Case("binary_key", "manifest", expect, folder, document("binary_key"))


@case
def duplicate_columns(folder: Path) -> Case:
    _good_a(folder)
    table = pa.Table.from_arrays([pa.array([1, 2]), pa.array([3, 4])], ["client_id", "client_id"])
    write(folder / "b.parquet", table)
    expect = ("run.outputs.b", "b.parquet", "'client_id' appears twice")
    return Case("duplicate_columns", "manifest", expect, folder, document("duplicate_columns"))


@case
def columns_alike_but_for_case(folder: Path) -> Case:
    """`ID` and `id`: DuckDB binds names regardless of case, so a key `id` would read the
    values of `ID` (docs/semantics.md#keys: a key is the values of its columns)."""
    _good_a(folder)
    table = pa.table({"client_id": [1, 2], "ID": [3, 4], "id": [5, 6]})
    write(folder / "b.parquet", table)
    expect = ("run.outputs.b", "b.parquet", "'ID', 'id' differ only in case")
    return Case("columns_alike_but_for_case", "manifest", expect, folder,
                document("columns_alike_but_for_case"))  # fmt: skip


@case
def all_null_keys(folder: Path) -> Case:
    """docs/semantics.md#keys: null-key rows are counted (stage flag) and stop reconciling."""
    _good_a(folder)
    write(folder / "b.parquet", rows([None, None, None]))
    doc = document("all_null_keys")
    return Case("all_null_keys", "accepted", (), folder, doc, extra={"null_key_rows": 3})


def _string_case(
    name: str, folder: Path, values: list[str | None], expect: tuple[str, ...]
) -> Case:
    _good_a(folder, pa.string())
    write(folder / "b.parquet", rows(values, pa.string()))
    return Case(name, "ingest", expect, folder, document(name))


@case
def long_key(folder: Path) -> Case:
    values = ["1", "2", "x" * 10_000, "4"]
    expect = ("b.parquet", "'client_id'", "row 3 ", "10,000 bytes", "at most 1,024 bytes")
    return _string_case("long_key", folder, values, expect)


@case
def nul_in_key(folder: Path) -> Case:
    expect = ("b.parquet", "'client_id'", "row 2 ", "U+0000")
    return _string_case("nul_in_key", folder, ["1", "2\x00two", "3"], expect)


@case
def newline_in_key(folder: Path) -> Case:
    expect = ("b.parquet", "'client_id'", "row 1 ", "U+000A")
    return _string_case("newline_in_key", folder, ["1\n", "2"], expect)


@case
def long_key_in_a_part_file(folder: Path) -> Case:
    _good_a(folder, pa.string())
    write(folder / "b" / "part-00000.parquet", rows(["1", "2"], pa.string()))
    write(folder / "b" / "part-00001.parquet", rows(["3", "4", "5" * 5000], pa.string()))
    outputs = {"a": "a.parquet", "b": "b/"}
    expect = ("part-00001.parquet", "'client_id'", "row 3 ", "5,000 bytes")
    doc = document("long_key_in_a_part_file", outputs)
    return Case("long_key_in_a_part_file", "ingest", expect, folder, doc)


# Manifests: paths, stages, grains, names, sizes -----------------------------------------


@case
def missing_file(folder: Path) -> Case:
    _good_a(folder)
    doc = document("missing_file", {"a": "a.parquet", "b": "nope.parquet"})
    expect = ("run.outputs.b", "no such file or directory", "nope.parquet")
    return Case("missing_file", "manifest", expect, folder, doc)


@case
def cycle(folder: Path) -> Case:
    _good_a(folder)
    write(folder / "b.parquet", rows([1]))
    write(folder / "c.parquet", rows([1]))
    stages = [{"name": "a", "parents": []}, {"name": "b", "parents": ["a", "c"]}, {"name": "c"}]
    doc = document("cycle", {"a": "a.parquet", "b": "b.parquet", "c": "c.parquet"}, stages)
    return Case("cycle", "manifest", ("cycle", "b -> c -> b"), folder, doc)


@case
def unknown_and_duplicate_stages(folder: Path) -> Case:
    _good_a(folder)
    write(folder / "b.parquet", rows([1]))
    stages = [{"name": "a"}, {"name": "b", "parents": ["zz"]}, {"name": "b"}]
    doc = document("unknown_and_duplicate_stages", stages=stages)
    expect = ("duplicate stage 'b'", "pipeline.stages[b].parents: 'zz' names no stage")
    return Case("unknown_and_duplicate_stages", "manifest", expect, folder, doc)


@case
def unknown_grain(folder: Path) -> Case:
    _good_a(folder)
    write(folder / "b.parquet", pa.table({"client_id": [1, 2], "offer": ["x", "y"]}))
    stages = [{"name": "a"}, {"name": "b", "grain": ["client_id", "ofer"]}]
    doc = document("unknown_grain", stages=stages)
    expect = (
        "pipeline.stages[b].grain",
        "'ofer'",
        "dataset 'b'",
        "columns are client_id, offer",
    )
    return Case("unknown_grain", "manifest", expect, folder, doc)


@case
def path_escapes_root(folder: Path) -> Case:
    """`..` out of the data roots (the root is the corpus folder): a server reads nothing else."""
    _good_a(folder)
    outside = folder.parent.parent / f"outside-{folder.parent.name}"
    write(outside / "b.parquet", rows([1]))
    doc = document("path_escapes_root", {"a": "a.parquet", "b": f"../../{outside.name}/b.parquet"})
    return Case("path_escapes_root", "manifest", ("run.outputs.b", "outside the data roots"),
                folder, doc, cli=False)  # fmt: skip


@case
def symlink_escapes_root(folder: Path) -> Case:
    _good_a(folder)
    outside = folder.parent.parent / f"outside-{folder.parent.name}"
    write(outside / "b.parquet", rows([1]))
    (folder / "b").mkdir()
    os.symlink(outside / "b.parquet", folder / "b" / "part-0.parquet")
    doc = document("symlink_escapes_root", {"a": "a.parquet", "b": "b/"})
    return Case("symlink_escapes_root", "manifest", ("run.outputs.b", "outside the data roots"),
                folder, doc, cli=False)  # fmt: skip


def _bad_id(name: str, run_id: str, folder: Path) -> Case:
    _good_a(folder)
    write(folder / "b.parquet", rows([1]))
    doc = document(name, run={"id": run_id})
    return Case(name, "manifest", ("run.id", "is not a valid name"), folder, doc)


@case
def run_id_with_dot_dot(folder: Path) -> Case:
    return _bad_id("run_id_with_dot_dot", "a/../x", folder)


@case
def run_id_with_crlf(folder: Path) -> Case:
    return _bad_id("run_id_with_crlf", "run\r\nSet-Cookie: x", folder)


@case
def run_id_with_quotes(folder: Path) -> Case:
    return _bad_id("run_id_with_quotes", 'it\'s "quoted"', folder)


@case
def run_id_too_long(folder: Path) -> Case:
    return _bad_id("run_id_too_long", "r" * 129, folder)


@case
def stage_name_with_slash(folder: Path) -> Case:
    _good_a(folder)
    write(folder / "b.parquet", rows([1]))
    doc = document("stage_name_with_slash", {"a": "a.parquet", "b/c": "b.parquet"},
                   [{"name": "a"}, {"name": "b/c"}])  # fmt: skip
    return Case("stage_name_with_slash", "manifest", ("pipeline.stages[1].name", "'b/c'"), folder,
                doc)  # fmt: skip


@case
def huge_label(folder: Path) -> Case:
    _good_a(folder)
    write(folder / "b.parquet", rows([1]))
    doc = document("huge_label", run={"label": "x" * 5_000})
    expect = ("run.label", "at most 1000 characters")
    return Case("huge_label", "manifest", expect, folder, doc)


@case
def many_errors(folder: Path) -> Case:
    """Several problems: every one is reported, each naming its field."""
    _good_a(folder)
    write(folder / "b.parquet", rows([1]))
    stages = [{"name": "a"}, {"name": "b", "fanout": "sometimes"}]
    doc = document("many_errors", stages=stages, run={"colour": "red", "label": "y" * 1001})
    expect = ("3 problems", "pipeline.stages[1].fanout", "run.colour", "run.label")
    return Case("many_errors", "manifest", expect, folder, doc)


# Manifest text that is not a manifest --------------------------------------------------


def _raw(
    name: str,
    folder: Path,
    raw: bytes,
    expect: tuple[str, ...],
    api: tuple[str, ...] | None = None,
    status: int = 422,
) -> Case:
    folder.mkdir(parents=True, exist_ok=True)
    return Case(name, "manifest", expect, folder, raw=raw, api_expect=api, api_status=status)


@case
def non_utf8_manifest(folder: Path) -> Case:
    raw = b"pipeline:\n  name: caf\xe9\n"  # Latin-1, not UTF-8
    expect = ("not UTF-8", "0xe9", "line 2, column 12")
    # The API decodes a YAML body with replacement characters (api/runs.py), so it names
    # the field holding U+FFFD instead of the byte.
    return _raw("non_utf8_manifest", folder, raw, expect, api=("pipeline.name", "'caf\ufffd'"))


@case
def invalid_yaml(folder: Path) -> Case:
    raw = b"pipeline:\n  name: [unclosed\n"
    return _raw("invalid_yaml", folder, raw, ("not valid YAML", "line 3"), status=400)


@case
def yaml_bomb(folder: Path) -> Case:
    """Billion laughs: nine aliases of nine aliases ... expand to 9**9 values."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    lines.append("pipeline: *a9")
    return _raw("yaml_bomb", folder, "\n".join(lines).encode(), ("more than 100,000 values",))


DEEP_API = ("nested more than 64 levels deep", "line 1")  # the API refuses it as it parses


@case
def deep_nesting(folder: Path) -> Case:
    depth = 100_000
    raw = b"pipeline: " + b"[" * depth + b"]" * depth + b"\n"
    return _raw("deep_nesting", folder, raw, ("nested too deeply",), api=DEEP_API, status=400)


@case
def deep_nesting_json(folder: Path) -> Case:
    depth = 100_000
    raw = b'{"pipeline": ' + b"[" * depth + b"]" * depth + b"}"
    return _raw("deep_nesting_json", folder, raw, ("nested too deeply",), DEEP_API, 400)


@case
def manifest_is_a_list(folder: Path) -> Case:
    return _raw("manifest_is_a_list", folder, b"- a\n- b\n", ("a manifest is a mapping",))


def build_corpus(root: Path) -> dict[str, Case]:
    """Write every case under `root/<case>/`, with its manifest.yaml when it has a document."""
    corpus = {}
    for name, builder in CASES.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        built = builder(folder)
        if built.document is not None:
            built.manifest_path.write_text(yaml.safe_dump(built.document, sort_keys=False))
        else:
            assert built.raw is not None
            built.manifest_path.write_bytes(built.raw)
        corpus[name] = built
    return corpus
