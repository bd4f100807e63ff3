"""Schemas of /api/v1/lineage: the graph export, the OpenLineage receiver and pending runs."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from api.schemas import ListArgsSchema, PageSchema, one_of, timestamp
from tracer.lineage_graph import DATASET, JOB, RECORD
from tracer.openlineage_in import AssemblyStatus, RunEventIn


class _Strict(Schema):
    class Meta:
        ordered = True


class GraphArgsSchema(Schema):
    run = fields.String(required=True, metadata={"description": "The run id"})
    key = fields.List(
        fields.String(),
        metadata={
            "description": "A client's key values in key-column order (repeat for composite "
            "keys): that client's journey graph instead of the run's"
        },
    )
    format = fields.String(
        load_default="json",
        validate=validate.OneOf(["json", "graphml", "dot"]),
        metadata={"description": "json (Marquez's lineage shape), graphml or dot (Graphviz)"},
    )


class EdgeSchema(_Strict):
    origin = fields.String(required=True)
    destination = fields.String(required=True)
    data = fields.Dict(
        required=True, metadata={"description": "The edge's figures: relation, keys, rows"}
    )


class NodeSchema(_Strict):
    id = fields.String(
        required=True,
        metadata={
            "description": "stage:<pipeline>:<stage>, dataset:<namespace>:<name> or "
            "record:<pipeline>:<run>:<stage>:<key>"
        },
    )
    type = fields.String(required=True, validate=validate.OneOf([JOB, DATASET, RECORD]))
    data = fields.Dict(required=True, metadata={"description": "The node's figures"})
    inEdges = fields.List(fields.Nested(EdgeSchema), required=True)
    outEdges = fields.List(fields.Nested(EdgeSchema), required=True)


class LineageGraphSchema(_Strict):
    graph = fields.List(fields.Nested(NodeSchema), required=True)


class JobRefSchema(_Strict):
    namespace = fields.String(required=True)
    name = fields.String(required=True)


class MissingSchema(_Strict):
    role = fields.String(required=True, validate=validate.OneOf(["stage", "traceability"]))
    name = fields.String(required=True)
    job = fields.Dict(allow_none=True, required=True)
    reason = fields.String(required=True)


class AssembledRunSchema(_Strict):
    run_id = fields.String(required=True, metadata={"description": "The parent run's id"})
    pipeline = fields.String(required=True)
    status = fields.String(required=True, validate=one_of(AssemblyStatus))
    missing = fields.List(fields.Nested(MissingSchema), required=True)
    errors = fields.List(fields.String(), required=True)
    job_ids = fields.Dict(allow_none=True, required=True)


class ReceivedSchema(_Strict):
    status = fields.String(required=True, validate=validate.OneOf(["accepted", "ignored"]))
    reason = fields.String(allow_none=True, required=True)
    job = fields.Nested(JobRefSchema, allow_none=True, required=True)
    runs = fields.List(fields.Nested(AssembledRunSchema), required=True)


class PendingArgsSchema(ListArgsSchema):
    pipeline = fields.String()
    status = fields.List(
        fields.String(validate=one_of(AssemblyStatus)),
        metadata={"description": "Which runs (repeatable; default: pending and invalid)"},
    )


class ParentSchema(_Strict):
    namespace = fields.String(allow_none=True, required=True)
    name = fields.String(allow_none=True, required=True)


class PendingRunSchema(_Strict):
    run_id = fields.String(required=True)
    pipeline = fields.String(required=True)
    parent = fields.Nested(ParentSchema, required=True)
    status = fields.String(required=True, validate=one_of(AssemblyStatus))
    events = fields.Integer(required=True)
    missing = fields.List(fields.Nested(MissingSchema), required=True)
    errors = fields.List(fields.String(), required=True)
    created_at = timestamp(required=True)
    updated_at = timestamp(required=True)


class PendingPageSchema(PageSchema):
    items = fields.List(fields.Nested(PendingRunSchema), required=True)


def run_event_schema() -> dict[str, Any]:
    """The RunEvent tracer reads, as JSON Schema with every reference inlined (request body)."""
    schema = RunEventIn.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)
