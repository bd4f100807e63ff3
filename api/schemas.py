"""Request and response schemas: what the OpenAPI document says each endpoint returns.

The views return the tracer query results through these schemas, so the
document and the responses cannot drift apart (tests validate every response
against the served document).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from marshmallow import Schema, fields, validate

from tracer.model import DatasetRole, DatasetStatus, RunStatus
from tracer.outcomes import STAGE_OUTCOMES, UNREMARKABLE, Final, Outcome
from tracer.queries.pages import MAX_LIMIT, MAX_PAGE
from tracer.reconcile import CELL_NAMES


def one_of(values: type[StrEnum]) -> validate.OneOf:
    """An enum's values: validated on input, listed as `enum` in the OpenAPI document."""
    return validate.OneOf([v.value for v in values])


def labels(outcomes: Iterable[Outcome | Final]) -> validate.OneOf:
    """Outcome names, as the API reads and writes them (and the document lists them)."""
    return validate.OneOf([o.label for o in outcomes])


def timestamp(**kwargs: Any) -> fields.String:
    """A moment as the queries write it (ISO 8601 with its zone): `date-time` in the document."""
    return fields.String(allow_none=True, metadata={"format": "date-time"}, **kwargs)


ANOMALY_OUTCOMES = labels(o for o in Outcome if o not in UNREMARKABLE)
"""What an anomaly list is asked for: every outcome but the unremarkable bulk of a run."""
FINAL_OUTCOMES = labels(Final)
STAGE_OUTCOME = labels(STAGE_OUTCOMES)
ANY_OUTCOME = labels(Outcome)
GAP_CELLS = validate.OneOf(list(CELL_NAMES.values()))


def csv_alternative(what: str) -> dict[str, Any]:
    """The documented `format=csv` form of a 200 (`@blp.alt_response(200, success=True, ...)`)."""
    return {
        "description": f"With format=csv: {what}",
        "content_type": "text/csv",
        "schema": {"type": "string"},
    }


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
    created_at = timestamp(required=True)
    classified_at = timestamp(required=True)


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
    failed_conditions = fields.List(
        fields.String(),
        required=True,
        metadata={
            "description": "Why `reconciles` is false, e.g. `3 orphaned keys`; empty if true"
        },
    )


class CauseSchema(_Strict):
    """A cause of a gap cell's keys: the (stage, outcome) that put them there."""

    stage = fields.String(allow_none=True, required=True)
    outcome = fields.String(allow_none=True, required=True, validate=STAGE_OUTCOME)
    keys = fields.Integer(required=True)


class GapCellSchema(_Strict):
    cell = fields.String(required=True, validate=GAP_CELLS)
    entered = fields.Boolean(required=True)
    targeted = fields.Boolean(required=True)
    traced = fields.Boolean(required=True)
    keys = fields.Integer(required=True)
    contribution = fields.Integer(required=True)
    sample = fields.List(Key, required=True)
    causes = fields.List(
        fields.Nested(CauseSchema),
        required=True,
        metadata={"description": "The cell split by cause (docs/semantics.md#causes); sums to it"},
    )


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


class RerunSchema(_Strict):
    """What a rerun changed, and how to see which clients."""

    of = fields.String(required=True, metadata={"description": "The run it repeats"})
    changed_keys = fields.Integer(
        allow_none=True,
        required=True,
        metadata={"description": "Keys whose final outcome differs (null: cannot compare)"},
    )
    command = fields.String(required=True)
    url = fields.String(required=True)
    note = fields.String(allow_none=True, required=True)


class ReconciliationSchema(_Strict):
    run = fields.Nested(RunSchema, required=True)
    totals = fields.Nested(TotalsSchema, required=True)
    gap_cells = fields.List(fields.Nested(GapCellSchema), required=True)
    reporting_gap_cells = fields.List(fields.Nested(GapCellSchema), required=True)
    stages = fields.List(fields.Nested(StageSummarySchema), required=True)
    rerun = fields.Nested(RerunSchema, allow_none=True, required=True)


class ReasonSchema(_Strict):
    source = fields.String(required=True)
    reason = fields.String(allow_none=True, required=True)
    rows = fields.Integer(required=True)
    reported = fields.Boolean(required=True)


class JourneyStageSchema(_Strict):
    stage = fields.String(required=True)
    outcome = fields.String(required=True, validate=STAGE_OUTCOME)
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
    final_outcome = fields.String(required=True, validate=FINAL_OUTCOMES)
    summary = fields.String(
        required=True,
        metadata={
            "example": "left at exclusions: credit_default, logged in trace_main, "
            "visible in reporting"
        },
    )
    entered = fields.Boolean(required=True)
    traced = fields.Boolean(required=True)
    stages = fields.List(fields.Nested(JourneyStageSchema), required=True)
    anomalies = fields.List(fields.Nested(AnomalyMetSchema), required=True)


class StageOutcomeSchema(_Strict):
    stage = fields.String(required=True)
    outcome = fields.String(required=True)


class HistoryItemSchema(_Strict):
    run = fields.Nested(RunSchema, required=True)
    key = Key
    final_outcome = fields.String(required=True, validate=FINAL_OUTCOMES)
    left_at = fields.Nested(
        StageOutcomeSchema,
        allow_none=True,
        required=True,
        metadata={"description": "The stage where the client left and its outcome there"},
    )


class HistoryPageSchema(PageSchema):
    items = fields.List(fields.Nested(HistoryItemSchema), required=True)


JourneyUrl = fields.String(
    required=True, metadata={"description": "The client's journey in this run"}
)


class AnomalySchema(_Strict):
    stage = fields.String(required=True)
    key = Key
    outcome = fields.String(
        required=True, validate=ANY_OUTCOME, metadata={"description": "The outcome at the stage"}
    )
    rows_in = fields.Integer(required=True)
    rows_out = fields.Integer(required=True)
    rows_dropped = fields.Integer(required=True)
    extra_rows = fields.Integer(required=True)
    reasons = fields.List(fields.Nested(ReasonSchema), required=True)
    final_outcome = fields.String(required=True, validate=FINAL_OUTCOMES)
    journey_url = JourneyUrl


class AnomalyPageSchema(PageSchema):
    run = fields.Nested(RunSchema, required=True)
    outcome = fields.String(required=True)
    stage = fields.String(allow_none=True, required=True)
    total = fields.Integer(required=True, metadata={"description": "Items of the whole list"})
    items = fields.List(fields.Nested(AnomalySchema), required=True)


class GapKeySchema(_Strict):
    key = Key
    stage = fields.String(
        allow_none=True, required=True, metadata={"description": "The cause's stage"}
    )
    outcome = fields.String(
        allow_none=True,
        required=True,
        validate=STAGE_OUTCOME,
        metadata={"description": "The key's outcome there"},
    )
    reasons = fields.List(fields.Nested(ReasonSchema), required=True)
    final_outcome = fields.String(required=True, validate=FINAL_OUTCOMES)
    journey_url = JourneyUrl


class GapKeysPageSchema(PageSchema):
    run = fields.Nested(RunSchema, required=True)
    cell = fields.String(required=True, validate=GAP_CELLS)
    reporting = fields.Boolean(required=True)
    stage = fields.String(allow_none=True, required=True)
    outcome = fields.String(allow_none=True, required=True)
    total = fields.Integer(required=True, metadata={"description": "Keys of the whole list"})
    items = fields.List(fields.Nested(GapKeySchema), required=True)


class AnomalyArgsSchema(PageArgsSchema):
    outcome = fields.String(
        required=True,
        validate=ANOMALY_OUTCOMES,
        metadata={"description": "Outcome, or grain_violation (`entered`, `passed`: not listed)"},
    )
    stage = fields.String(metadata={"description": "Only this stage"})
    format = fields.String(
        load_default="json",
        validate=validate.OneOf(["json", "csv"]),
        metadata={"description": "csv streams the whole list, every page, with a header row"},
    )


CsvFormat = fields.String(
    load_default="json",
    validate=validate.OneOf(["json", "csv"]),
    metadata={"description": "csv streams the whole list, every page, with a header row"},
)


class GapKeysArgsSchema(PageArgsSchema):
    reporting = fields.Boolean(
        load_default=False, metadata={"description": "The reporting gap's cells"}
    )
    stage = fields.String(metadata={"description": "Only the keys whose cause is at this stage"})
    outcome = fields.String(
        validate=ANY_OUTCOME,
        metadata={"description": "Only the keys whose cause has this outcome"},
    )
    format = CsvFormat


class KeyArgsSchema(Schema):
    key = fields.List(
        fields.String(),
        metadata={
            "description": "Key values in key-column order; repeat for composite keys. "
            "Or give each key column by name instead: `?branch=LIS&client_no=42`"
        },
    )


class HistoryArgsSchema(KeyArgsSchema, ListArgsSchema):
    pipeline = fields.String()


class RunListArgsSchema(ListArgsSchema):
    pipeline = fields.String()
    label = fields.String()
    status = fields.String(validate=one_of(RunStatus))
    reconciles = fields.Boolean(metadata={"description": "false: only the runs that do not"})
    since = fields.String(metadata={"description": "Created at or after (ISO date or time)"})
    until = fields.String(metadata={"description": "Created before (ISO date or time)"})
    sort = fields.String(
        load_default="newest",
        validate=validate.OneOf(["newest", "distance"]),
        metadata={"description": "distance: furthest from reconciling first"},
    )
    format = CsvFormat


class FiguresSchema(_Strict):
    """A run's headline figures: how far it is from reconciling, and why."""

    entered = fields.Integer(required=True)
    targeted = fields.Integer(required=True)
    traced = fields.Integer(required=True)
    traced_reported = fields.Integer(required=True)
    gap = fields.Integer(required=True)
    reporting_gap = fields.Integer(required=True)
    null_key_rows = fields.Integer(required=True)
    anomalies = fields.Dict(
        keys=fields.String(),
        values=fields.Integer(),
        required=True,
        metadata={"description": "Keys per outcome that stops a run reconciling"},
    )
    reconciles = fields.Boolean(required=True)
    failed_conditions = fields.List(fields.String(), required=True)
    distance = fields.Integer(
        required=True,
        metadata={
            "description": "|gap| + |reporting gap| + null-key rows + anomaly keys; 0 if it "
            "reconciles"
        },
    )


class RunSurveySchema(RunSchema):
    figures = fields.Nested(FiguresSchema, allow_none=True, required=True)


class RunListSchema(PageSchema):
    items = fields.List(fields.Nested(RunSurveySchema), required=True)


class CompareCellSchema(_Strict):
    a = fields.String(required=True)
    b = fields.String(required=True)
    keys = fields.Integer(required=True)


class CountsSchema(_Strict):
    a = fields.Integer(required=True)
    b = fields.Integer(required=True)
    delta = fields.Integer(required=True)


class CompareStageSchema(_Strict):
    stage = fields.String(required=True)
    outcomes = fields.Dict(keys=fields.String(), values=fields.Nested(CountsSchema), required=True)


class StageKeysSchema(_Strict):
    stage = fields.String(required=True)
    keys = fields.Integer(required=True)


class ComparisonSchema(_Strict):
    run_a = fields.String(required=True)
    run_b = fields.String(required=True)
    changed_keys = fields.Integer(required=True)
    matrix = fields.List(fields.Nested(CompareCellSchema), required=True)
    stages = fields.List(fields.Nested(CompareStageSchema), required=True)
    first_differences = fields.List(fields.Nested(StageKeysSchema), required=True)


class DifferenceSchema(_Strict):
    stage = fields.String(required=True)
    a = fields.String(required=True)
    b = fields.String(required=True)


class JourneyUrlsSchema(_Strict):
    a = fields.String(allow_none=True, required=True)
    b = fields.String(allow_none=True, required=True)


class CompareKeySchema(_Strict):
    key = Key
    a = fields.String(required=True)
    b = fields.String(required=True)
    first_difference = fields.Nested(DifferenceSchema, allow_none=True, required=True)
    journey_urls = fields.Nested(JourneyUrlsSchema, required=True)


class CompareKeysPageSchema(PageSchema):
    run_a = fields.String(required=True)
    run_b = fields.String(required=True)
    a = fields.String(required=True)
    b = fields.String(required=True)
    total = fields.Integer(required=True, metadata={"description": "Keys of the cell"})
    items = fields.List(fields.Nested(CompareKeySchema), required=True)


Outcomes = validate.OneOf([*(f.label for f in Final), "absent"])


class CompareKeysArgsSchema(PageArgsSchema):
    a = fields.String(
        required=True, validate=Outcomes, metadata={"description": "Final outcome in run A"}
    )
    b = fields.String(
        required=True, validate=Outcomes, metadata={"description": "Final outcome in run B"}
    )
    format = CsvFormat


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
    ingested_at = timestamp()


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
    enqueued_at = timestamp()
    started_at = timestamp()
    ended_at = timestamp()
    result = fields.Dict(allow_none=True)
    error = fields.String(allow_none=True)


class PipelineSchema(_Strict):
    name = fields.String(required=True)
    key = fields.List(fields.String(), required=True)
    stages = fields.List(fields.String(), required=True)
    traceability = fields.List(fields.String(), required=True)
    runs = fields.Integer(required=True)
    last_run_at = timestamp()


class PipelineListSchema(PageSchema):
    items = fields.List(fields.Nested(PipelineSchema), required=True)
