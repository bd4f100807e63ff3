"""Request and response schemas: what the OpenAPI document says each endpoint returns.

The views return the tracer query results through these schemas, so the
document and the responses cannot drift apart (tests validate every response
against the served document).
"""

from __future__ import annotations

from enum import StrEnum

from marshmallow import Schema, fields, validate

from tracer.model import DatasetRole, DatasetStatus, RunStatus
from tracer.outcomes import Outcome
from tracer.queries.pages import MAX_LIMIT, MAX_PAGE


def one_of(values: type[StrEnum]) -> validate.OneOf:
    """An enum's values: validated on input, listed as `enum` in the OpenAPI document."""
    return validate.OneOf([v.value for v in values])


class _Strict(Schema):
    class Meta:
        ordered = True


Key = fields.Dict(
    keys=fields.String(),
    values=fields.Raw(),
    metadata={"description": "The lineage key: {column: value}, values typed as declared"},
)


class ErrorSchema(_Strict):
    ok = fields.Boolean(required=True, metadata={"example": False})
    status = fields.Integer(required=True, metadata={"example": 404})
    error = fields.String(required=True, metadata={"example": "run 'x' not found"})
    errors = fields.List(fields.String(), required=True)


class RunSchema(_Strict):
    """A run, the same object in every answer that names one."""

    run_id = fields.String(required=True)
    pipeline = fields.String(required=True)
    label = fields.String(allow_none=True, required=True)
    rerun_of = fields.String(allow_none=True, required=True)
    status = fields.String(required=True, validate=one_of(RunStatus))
    error = fields.String(allow_none=True, required=True)
    created_at = fields.String(allow_none=True, required=True)
    classified_at = fields.String(allow_none=True, required=True)


class PageSchema(_Strict):
    """Every list: its items, then the keyset token and URL of the next page (null at the end)."""

    next = fields.String(allow_none=True, required=True)
    next_url = fields.String(allow_none=True, required=True)


class PageArgsSchema(Schema):
    limit = fields.Integer(load_default=100, validate=validate.Range(1, MAX_LIMIT))
    next = fields.String(metadata={"description": "The `next` token of the previous page"})


class ListArgsSchema(Schema):
    limit = fields.Integer(load_default=50, validate=validate.Range(1, MAX_PAGE))
    next = fields.String(metadata={"description": "The `next` token of the previous page"})


class TotalsSchema(_Strict):
    keys = fields.Integer(required=True)
    entered = fields.Integer(required=True)
    targeted = fields.Integer(required=True)
    dropped = fields.Integer(required=True)
    dropped_unreported = fields.Integer(required=True)
    orphaned = fields.Integer(required=True)
    never_entered = fields.Integer(required=True)
    residual = fields.Integer(required=True)
    traced = fields.Integer(required=True)
    traced_reported = fields.Integer(required=True)
    gap = fields.Integer(required=True)
    reporting_gap = fields.Integer(required=True)
    null_key_rows = fields.Integer(required=True)
    reconciles = fields.Boolean(required=True)


class GapCellSchema(_Strict):
    cell = fields.String(required=True)
    entered = fields.Boolean(required=True)
    targeted = fields.Boolean(required=True)
    traced = fields.Boolean(required=True)
    keys = fields.Integer(required=True)
    contribution = fields.Integer(required=True)
    sample = fields.List(Key, required=True)


class RowsSchema(_Strict):
    rows_in = fields.Integer(required=True)
    rows_out = fields.Integer(required=True)
    rows_dropped = fields.Integer(required=True)


class NullKeySchema(_Strict):
    output = fields.Integer(required=True)
    traceability = fields.Integer(required=True)
    total = fields.Integer(required=True)


class DroppedColumnSchema(_Strict):
    column = fields.String(required=True)
    parent = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(["key", "grain", "column"]))


class FlagsSchema(_Strict):
    duplicate_rows = fields.Integer(required=True)
    grain_violation = fields.Integer(required=True)
    null_key = fields.Nested(NullKeySchema, required=True)
    dropped_columns = fields.List(fields.Nested(DroppedColumnSchema), required=True)


class StageTotalsSchema(_Strict):
    keys_in = fields.Integer(required=True)
    keys_out = fields.Integer(required=True)
    keys_dropped = fields.Integer(required=True)
    rows_in = fields.Integer(required=True)
    rows_out = fields.Integer(required=True)
    rows_dropped = fields.Integer(required=True)


class StageSummarySchema(_Strict):
    stage = fields.String(required=True)
    totals = fields.Nested(StageTotalsSchema, required=True)
    outcomes = fields.Dict(keys=fields.String(), values=fields.Integer(), required=True)
    rows = fields.Dict(keys=fields.String(), values=fields.Nested(RowsSchema), required=True)
    flags = fields.Nested(FlagsSchema, required=True)


class ReconciliationSchema(_Strict):
    run = fields.Nested(RunSchema, required=True)
    totals = fields.Nested(TotalsSchema, required=True)
    gap_cells = fields.List(fields.Nested(GapCellSchema), required=True)
    reporting_gap_cells = fields.List(fields.Nested(GapCellSchema), required=True)
    stages = fields.List(fields.Nested(StageSummarySchema), required=True)


class ReasonSchema(_Strict):
    source = fields.String(required=True)
    reason = fields.String(allow_none=True, required=True)
    rows = fields.Integer(required=True)
    reported = fields.Boolean(required=True)


class JourneyStageSchema(_Strict):
    stage = fields.String(required=True)
    outcome = fields.String(required=True)
    rows_in = fields.Integer(required=True)
    rows_out = fields.Integer(required=True)
    rows_dropped_reported = fields.Integer(required=True)
    rows_dropped_operational = fields.Integer(required=True)
    grain_violation = fields.Boolean(required=True)
    reasons = fields.List(fields.Nested(ReasonSchema), required=True)


class AnomalyMetSchema(_Strict):
    stage = fields.String(required=True)
    anomaly = fields.String(required=True)


class JourneySchema(_Strict):
    run = fields.Nested(RunSchema, required=True)
    key = Key
    final_outcome = fields.String(required=True)
    entered = fields.Boolean(required=True)
    traced = fields.Boolean(required=True)
    stages = fields.List(fields.Nested(JourneyStageSchema), required=True)
    anomalies = fields.List(fields.Nested(AnomalyMetSchema), required=True)


class HistoryItemSchema(_Strict):
    run = fields.Nested(RunSchema, required=True)
    key = Key
    final_outcome = fields.String(required=True)


class HistoryPageSchema(PageSchema):
    items = fields.List(fields.Nested(HistoryItemSchema), required=True)


class AnomalySchema(_Strict):
    stage = fields.String(required=True)
    key = Key
    rows_in = fields.Integer(required=True)
    rows_out = fields.Integer(required=True)
    rows_dropped = fields.Integer(required=True)
    extra_rows = fields.Integer(required=True)


class AnomalyPageSchema(PageSchema):
    run = fields.Nested(RunSchema, required=True)
    outcome = fields.String(required=True)
    stage = fields.String(allow_none=True, required=True)
    items = fields.List(fields.Nested(AnomalySchema), required=True)


class GapKeySchema(_Strict):
    key = Key


class GapKeysPageSchema(PageSchema):
    run = fields.Nested(RunSchema, required=True)
    cell = fields.String(required=True)
    reporting = fields.Boolean(required=True)
    items = fields.List(fields.Nested(GapKeySchema), required=True)


class AnomalyArgsSchema(PageArgsSchema):
    outcome = fields.String(
        required=True,
        validate=validate.OneOf([o.label for o in Outcome]),
        metadata={"description": "Outcome, or grain_violation"},
    )
    stage = fields.String(metadata={"description": "Only this stage"})
    format = fields.String(
        load_default="json",
        validate=validate.OneOf(["json", "csv"]),
        metadata={"description": "csv streams the whole list, every page"},
    )


class GapKeysArgsSchema(PageArgsSchema):
    reporting = fields.Boolean(
        load_default=False, metadata={"description": "The reporting gap's cells"}
    )


class KeyArgsSchema(Schema):
    key = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "Key values in key-column order; repeat for composite keys"},
    )


class HistoryArgsSchema(KeyArgsSchema, ListArgsSchema):
    pipeline = fields.String()


class RunListArgsSchema(ListArgsSchema):
    pipeline = fields.String()
    label = fields.String()
    status = fields.String(validate=one_of(RunStatus))


class RunListSchema(PageSchema):
    items = fields.List(fields.Nested(RunSchema), required=True)


class DatasetStatusSchema(_Strict):
    name = fields.String(required=True)
    role = fields.String(required=True, validate=one_of(DatasetRole))
    uri = fields.String(required=True)
    status = fields.String(required=True, validate=one_of(DatasetStatus))
    error = fields.String(allow_none=True)
    row_count = fields.Integer(allow_none=True)
    key_count = fields.Integer(allow_none=True)
    duplicate_rows = fields.Integer(allow_none=True)
    fingerprint = fields.String(allow_none=True)
    ingested_at = fields.String(allow_none=True)


class RunDetailSchema(RunSchema):
    datasets = fields.List(fields.Nested(DatasetStatusSchema), required=True)
    totals = fields.Nested(TotalsSchema, allow_none=True)


class JobIdsSchema(_Strict):
    ingest = fields.List(fields.String(), required=True)
    classify = fields.String(required=True)


class RunCreatedSchema(_Strict):
    run_id = fields.String(required=True)
    status = fields.String(required=True, validate=one_of(RunStatus))
    job_ids = fields.Nested(JobIdsSchema, required=True)


class JobSchema(_Strict):
    id = fields.String(required=True)
    status = fields.String(required=True)
    description = fields.String(allow_none=True)
    run_id = fields.String(allow_none=True)
    enqueued_at = fields.String(allow_none=True)
    started_at = fields.String(allow_none=True)
    ended_at = fields.String(allow_none=True)
    result = fields.Dict(allow_none=True)
    error = fields.String(allow_none=True)


class PipelineSchema(_Strict):
    name = fields.String(required=True)
    key = fields.List(fields.String(), required=True)
    stages = fields.List(fields.String(), required=True)
    traceability = fields.List(fields.String(), required=True)
    runs = fields.Integer(required=True)
    last_run_at = fields.String(allow_none=True)


class PipelineListSchema(PageSchema):
    items = fields.List(fields.Nested(PipelineSchema), required=True)


class HealthSchema(_Strict):
    ok = fields.Boolean(required=True)
    postgres = fields.String(required=True)
    redis = fields.String(required=True)
