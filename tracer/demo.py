"""The ``tracer demo`` run: a 7-stage bank campaign with known, planted anomalies.

Why it exists: a lineage tracer is only convincing on data where the answer is
known. ``build_demo`` turns the packaged UCI Bank Marketing clients
(``tracer/data/bank_clients.parquet``, see ``bank_clients.txt``) into the
Parquet outputs and traceability datasets of one campaign run, plus its run
manifest, with every root cause from ``docs/semantics.md`` planted on a
few clients. ``answer_key`` (an ``AnswerKey``) and the ``planted`` helpers
return the answer key, so tests (and a curious user) can check the tracer
against it.

Standalone on purpose: stdlib, numpy, pyarrow and yaml only, no tracer module
but the ``tracer.demo_*`` ones, and nothing read outside the package at run time.

The answer key is *complete*: for every stage, ``planted(d)[stage][outcome]``
is exactly the set of keys that get that outcome there, for every outcome
except ``passed`` and ``entered``; ``grain_violation`` sets are complete too,
and ``planted_rows`` lists every non-zero ``null_key`` / ``duplicate_rows``
count (stage outputs and the traceability rows attributed to a stage).
``answer_key()`` with no directory computes the same key in memory (it does
not depend on the directory or the run id).

The story, stage by stage (lineage key client_id):

* selection: clients with a known contact channel (3 rows with a null key);
* exclusions: credit_default / negative_balance_with_loan, logged in trace_main;
  orphaned (removed, no log), conflict (logged, kept), phantom_drop (the rule
  also logged 2 never-selected clients: final outcome never_entered);
* offer_selection: 1-3 offers per client (expanded); 5 clients get one offer
  twice from two rules (multiplied, grain violation);
* offer_enrichment: PRIVATE_BANKING has a parent and a child reference row, so
  all its holders are multiplied (the production root cause);
* buffer_update: contact-pressure blocks logged only in trace_buffer
  (dropped_unreported); 6 rows written twice (duplicate_rows, multiplied);
* buffer_selection: best offer per client, the rest logged (partially_dropped);
  5 clients collapsed without a log; offer_family dropped (schema drift);
* output: 4 excluded clients re-added (appeared), 4 suppression-list rows for
  clients gone since exclusions (phantom_drop).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml

from tracer.demo_answer import AnswerKey
from tracer.demo_run import DemoRun, build_run
from tracer.demo_story import (
    DEFAULT_RUN_ID,
    MANIFEST_NAME,
    OUTPUT_PATHS,
    PIPELINE_NAME,
    PLANTED_NAME,
    STAGES,
    TRACE_PATHS,
    load_bank_clients,
)

__all__ = [
    "DEFAULT_RUN_ID",
    "PIPELINE_NAME",
    "STAGES",
    "AnswerKey",
    "answer_key",
    "build_demo",
    "load_bank_clients",
    "planted",
    "planted_final",
    "planted_rows",
    "planted_schema_drift",
    "planted_summary",
]


# --------------------------------------------------------------------------- writing


def _spark_name(run_id: str, dataset: str, part: int = 0) -> str:
    """A Spark-style part file name; the uuid is derived, so builds are reproducible."""
    job = uuid.uuid5(uuid.NAMESPACE_URL, f"tracer-demo/{run_id}/{dataset}")
    return f"part-{part:05d}-{job}-c000.snappy.parquet"


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(None), path, compression="snappy")


def _write_hive(table: pa.Table, root: Path, column: str, run_id: str, dataset: str) -> None:
    """One folder per value of column (the column then lives only in the folder name)."""
    for value in sorted(set(table[column].to_pylist())):
        part = table.filter(pc.equal(table[column], value)).drop_columns([column])
        _write(part, root / f"{column}={value}" / _spark_name(run_id, dataset))
    (root / "_SUCCESS").touch()


def _clear(path: Path) -> None:
    """Remove a dataset left by an earlier build, so no stale part file survives."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


class _ManifestDumper(yaml.SafeDumper):
    """Lists of scalars inline (``key: [client_id]``), the rest as blocks; no aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    inline = all(not isinstance(item, dict | list) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=inline)


_ManifestDumper.add_representer(list, _represent_list)


def _manifest(run_id: str) -> dict[str, Any]:
    """The run manifest, in the format of docs/architecture (paths relative to it)."""
    grain = ["client_id", "offer_id"]
    return {
        "pipeline": {
            "name": PIPELINE_NAME,
            "key": ["client_id"],
            "key_types": {"client_id": "int64"},
            "stages": [
                {"name": "selection"},
                {"name": "exclusions"},
                {"name": "offer_selection", "grain": grain, "fanout": "expected"},
                {"name": "offer_enrichment", "grain": grain},
                {"name": "buffer_update", "grain": grain},
                {"name": "buffer_selection", "grain": ["client_id"]},
                {"name": "output", "grain": ["client_id"]},
            ],
            "traceability": [
                {
                    "name": "trace_main",
                    "reported": True,
                    "stage_column": "stage",
                    "reason_column": "reason",
                },
                {
                    "name": "trace_buffer",
                    "reported": False,
                    "stage": "buffer_update",
                    "reason_column": "block_reason",
                    "columns": {"client_id": "cid"},
                },
            ],
        },
        "run": {
            "id": run_id,
            "label": "bank campaign demo (UCI Bank Marketing clients, planted anomalies)",
            "rerun_of": None,
            "outputs": dict(OUTPUT_PATHS),
            "traceability": dict(TRACE_PATHS),
        },
    }


#: The answer key of the last construction in this process, JSON-ready (it never
#: depends on the directory or the run id), so answer_key() after build_demo costs nothing.
_ANSWER_CACHE: dict[str, Any] = {}


def build_demo(directory: Path, run_id: str = DEFAULT_RUN_ID) -> Path:
    """Write the demo run's datasets and manifest under directory; return the manifest path.

    Also writes ``planted.json`` (the answer key read by ``planted`` and friends).
    The same run_id always gives byte-identical files.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    run = build_run()
    _write_datasets(run, directory, run_id)

    answer = {"run_id": run_id, **run.answer.to_json()}
    _ANSWER_CACHE.clear()
    _ANSWER_CACHE.update(answer)
    (directory / PLANTED_NAME).write_text(json.dumps(answer, separators=(",", ":")) + "\n")

    manifest = directory / MANIFEST_NAME
    header = (
        "# tracer demo run, generated by tracer.demo.build_demo: do not edit.\n"
        "# Data: UCI Bank Marketing (Moro et al., 2011), see tracer/data/bank_clients.txt.\n"
    )
    body = yaml.dump(
        _manifest(run_id), Dumper=_ManifestDumper, sort_keys=False, default_flow_style=False
    )
    manifest.write_text(header + body)
    return manifest


def _write_datasets(run: DemoRun, directory: Path, run_id: str) -> None:
    """Every stage output and traceability table, laid out as a Spark job would."""
    for rel in (*OUTPUT_PATHS.values(), *TRACE_PATHS.values()):
        _clear(directory / rel)

    selection_dir = directory / OUTPUT_PATHS["selection"]
    for i, part in enumerate(run.selection.parts):
        _write(part, selection_dir / _spark_name(run_id, "selection", i))
    (selection_dir / "_SUCCESS").touch()
    outputs = run.outputs
    _write_hive(
        outputs["offer_enrichment"],
        directory / OUTPUT_PATHS["offer_enrichment"],
        "offer_family",
        run_id,
        "offer_enrichment",
    )
    for stage in ("exclusions", "offer_selection", "buffer_update", "buffer_selection", "output"):
        _write(outputs[stage], directory / OUTPUT_PATHS[stage])
    _write_hive(run.trace_main, directory / TRACE_PATHS["trace_main"], "stage", run_id, "trace")
    _write(run.trace_buffer, directory / TRACE_PATHS["trace_buffer"])


# --------------------------------------------------------------------------- answer key


def answer_key(directory: Path | None = None) -> AnswerKey:
    """The demo's answer key: the one written with a built demo in directory, or, with no
    directory, the one of a run built in memory (nothing written). They are equal, for
    any run id. Each call returns a fresh copy, so callers may change theirs.
    """
    if directory is not None:
        return AnswerKey.from_json(_read_answer(directory))
    if not _ANSWER_CACHE:
        _ANSWER_CACHE.update(build_run().answer.to_json())
    return AnswerKey.from_json(_ANSWER_CACHE)


def _read_answer(directory: Path) -> dict[str, Any]:
    path = Path(directory) / PLANTED_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run build_demo({str(directory)!r}) first")
    return json.loads(path.read_text())


def planted(directory: Path) -> dict[str, dict[str, set[int]]]:
    """stage -> outcome or flag (``grain_violation``) -> the client_ids, for a built demo."""
    return answer_key(directory).keys


def planted_rows(directory: Path) -> dict[str, dict[str, int]]:
    """stage -> row flag (``null_key``, ``duplicate_rows``, ``multiplied_extra_rows``) -> rows."""
    return answer_key(directory).rows


def planted_final(directory: Path) -> dict[str, set[int]]:
    """Final outcome -> client_ids, for every final outcome but ``targeted``.

    ``targeted`` is left out: it is every key of ``output.parquet`` (see the summary).
    """
    return answer_key(directory).final


def planted_summary(directory: Path) -> dict[str, int]:
    """Run totals in distinct keys: entered, targeted, traced(_reported), gaps, residual."""
    return answer_key(directory).summary


def planted_schema_drift(directory: Path) -> dict[str, list[str]]:
    """stage -> columns its parent has and it lacks."""
    return answer_key(directory).schema_drift
