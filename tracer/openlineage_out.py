"""A classified run as OpenLineage events, sent with the official client to the lineage tools a
data team already runs (Marquez, DataHub, a file, Kafka...).

One COMPLETE RunEvent per stage: job `<pipeline>.<stage>`, a run id that is a uuid5 of
tracer's run id and the stage (so sending again is idempotent), the pipeline run as its
parent, the stage's input and output datasets with the standard statistics facets, and
the custom run facet `tracer_reconciliation`: what happened to the keys at that stage
(schema shipped as tracer/schemas/reconciliation_facet.json). The transport is the
client's own, configured its usual way: `openlineage.yml` (or OPENLINEAGE_CONFIG),
OPENLINEAGE_URL / OPENLINEAGE_API_KEY, or OPENLINEAGE__TRANSPORT__... variables.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from importlib import resources
from typing import Any, ClassVar

import attr
import networkx as nx
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import InputDataset, Job, OutputDataset, Run, RunEvent, RunState
from openlineage.client.facet_v2 import (
    RunFacet,
    input_statistics_input_dataset,
    job_type_job,
    output_statistics_output_dataset,
    parent_run,
)
from sqlalchemy import Engine, select

from tracer import __version__
from tracer.errors import TracerError
from tracer.lineage_graph import DATASET, run_graph, stage_id
from tracer.queries.common import load_run
from tracer.tables import runs

log = logging.getLogger(__name__)

PRODUCER = f"urn:tracer:{__version__}"
"""Who made the events: tracer, at this version (a URI, as the spec asks)."""
FACET = "tracer_reconciliation"
FACET_SCHEMA_ID = "urn:tracer:openlineage:TracerReconciliationRunFacet:1-0-0"
FACET_SCHEMA_URL = f"{FACET_SCHEMA_ID}#/$defs/TracerReconciliationRunFacet"
DEFAULT_NAMESPACE = "tracer"
RUN_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "urn:tracer:runs")
"""The uuid5 namespace OpenLineage run ids are derived in."""
AUTO_EMIT = "TRACER_OPENLINEAGE_EMIT"
"""Set to `true` to send every run's events after it is classified."""


def facet_schema() -> dict[str, Any]:
    """The custom facet's JSON Schema, as shipped in the package."""
    text = resources.files("tracer").joinpath("schemas/reconciliation_facet.json").read_text()
    return json.loads(text)


def run_uuid(run_id: str, stage: str | None = None) -> str:
    """The OpenLineage run id of tracer's run (the parent), or of one stage of it."""
    name = run_id if stage is None else f"{run_id}\x1f{stage}"
    return str(uuid.uuid5(RUN_IDS, name))


@attr.define
class TracerReconciliationRunFacet(RunFacet):
    """What happened to every key at one stage of the run (docs/semantics.md)."""

    pipeline: str
    run_id: str
    stage: str
    stage_index: int
    keys: dict[str, int]
    totals: dict[str, int]
    drops: dict[str, int]
    gap_contribution: dict[str, Any]
    flags: dict[str, Any]
    run_reconciles: bool
    _additional_skip_redact: ClassVar[list[str]] = ["pipeline", "run_id", "stage"]

    @staticmethod
    def _get_schema() -> str:
        return FACET_SCHEMA_URL


def run_events(engine: Engine, run_id: str, namespace: str = DEFAULT_NAMESPACE) -> list[RunEvent]:
    """The run's events, one per stage in pipeline order; built from its lineage graph."""
    with engine.connect() as conn:
        run = load_run(conn, run_id)
        graph = run_graph(conn, run_id)
    when = run.classified_at.isoformat()
    parent = parent_run.ParentRunFacet(
        run=parent_run.Run(runId=run_uuid(run.run_id)),
        job=parent_run.Job(namespace=namespace, name=run.pipeline),
        root=parent_run.Root(
            run=parent_run.RootRun(runId=run_uuid(run.run_id)),
            job=parent_run.RootJob(namespace=namespace, name=run.pipeline),
        ),
        producer=PRODUCER,
    )
    job_type = job_type_job.JobTypeJobFacet(
        processingType="BATCH", integration="TRACER", jobType="STAGE", producer=PRODUCER
    )
    events = []
    for stage in run.stages:
        node = stage_id(run.pipeline, stage)
        data = graph.nodes[node]["data"]
        events.append(
            RunEvent(
                eventType=RunState.COMPLETE,
                eventTime=when,
                producer=PRODUCER,
                run=Run(
                    runId=run_uuid(run.run_id, stage),
                    facets={"parent": parent, FACET: _reconciliation_facet(graph, data)},
                ),
                job=Job(
                    namespace=namespace,
                    name=f"{run.pipeline}.{stage}",
                    facets={"jobType": job_type},
                ),
                inputs=_inputs(graph, node),
                outputs=_outputs(graph, node),
            )
        )
    return events


def _reconciliation_facet(graph: nx.DiGraph, data: dict[str, Any]) -> RunFacet:
    flags = data["flags"]
    return TracerReconciliationRunFacet(
        pipeline=data["namespace"],
        run_id=data["run_id"],
        stage=data["name"],
        stage_index=data["index"],
        keys=dict(data["outcomes"]),
        totals=dict(data["totals"]),
        drops=dict(data["drops"]),
        gap_contribution=data["gap_contribution"],
        flags={
            "duplicate_rows": flags["duplicate_rows"],
            "grain_violation": flags["grain_violation"],
            "null_key_rows": flags["null_key"]["total"],
            "dropped_columns": [c["column"] for c in flags["dropped_columns"]],
        },
        run_reconciles=bool(graph.graph["reconciles"]),
        producer=PRODUCER,
    )


def _inputs(graph: nx.DiGraph, node: str) -> list[InputDataset]:
    out = []
    for source in graph.predecessors(node):
        data = graph.nodes[source]["data"]
        read = graph.edges[source, node]["data"]["rows"]
        stats = input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
            rowCount=read, producer=PRODUCER
        )
        out.append(
            InputDataset(
                namespace=data["namespace"],
                name=data["name"],
                inputFacets={"inputStatistics": stats},
            )
        )
    return out


def _outputs(graph: nx.DiGraph, node: str) -> list[OutputDataset]:
    out = []
    for target in graph.successors(node):
        assert graph.nodes[target]["type"] == DATASET
        data = graph.nodes[target]["data"]
        edge = graph.edges[node, target]["data"]
        # The stage's own output: every row written; a traceability dataset: the rows it
        # logged for this stage.
        written = data["row_count"] if edge["relation"] == "output" else edge["rows"]
        stats = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=written if written is not None else edge["rows"], producer=PRODUCER
        )
        out.append(
            OutputDataset(
                namespace=data["namespace"],
                name=data["name"],
                outputFacets={"outputStatistics": stats},
            )
        )
    return out


def emit_run(
    engine: Engine,
    run_id: str,
    namespace: str = DEFAULT_NAMESPACE,
    client: OpenLineageClient | None = None,
) -> list[RunEvent]:
    """Send the run's events through `client` (default: configured the client's usual way)."""
    events = run_events(engine, run_id, namespace)
    try:
        client = client or OpenLineageClient()
        for event in events:
            client.emit(event)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:  # transport and its config
        kind = getattr(getattr(client, "transport", None), "kind", "?")
        raise TracerError(f"OpenLineage transport {kind!r} failed: {exc}") from None
    return events


def default_namespace() -> str:
    """The job namespace: OPENLINEAGE_NAMESPACE, as the Airflow and Spark integrations read it."""
    return os.environ.get("OPENLINEAGE_NAMESPACE") or DEFAULT_NAMESPACE


def emit_after_classification(
    engine: Engine, *, run_pk: int | None = None, run_id: str | None = None
) -> bool:
    """Send the run's events if TRACER_OPENLINEAGE_EMIT is set; never fails the caller.

    For the places a run is classified (the worker's classify job, a local ingest): a
    lineage backend that is down must not fail a classification, so problems are logged.
    Returns whether events were sent.
    """
    if os.environ.get(AUTO_EMIT, "").strip().lower() not in ("1", "true", "yes"):
        return False
    try:
        if run_id is None:
            with engine.connect() as conn:
                run_id = conn.execute(select(runs.c.run_id).where(runs.c.pk == run_pk)).scalar()
        if run_id is None:
            return False
        emit_run(engine, run_id, default_namespace())
        return True
    except Exception:  # logged, never raised: see above
        log.exception("sending OpenLineage events for run %s failed", run_id or run_pk)
        return False
