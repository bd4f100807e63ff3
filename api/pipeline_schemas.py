"""Schemas of the pipeline registry's answers: pipelines, their versions, each version's runs.

A pipeline keeps every definition posted under its name as a numbered version; a run
points at the version it was classified with (tracer.pipelines).
"""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.schemas import PageSchema, RunSchema, timestamp


class _Ordered(Schema):
    class Meta:
        ordered = True


def _names(description: str) -> fields.List:
    return fields.List(fields.String(), required=True, metadata={"description": description})


class PipelineSummarySchema(_Ordered):
    """One registered pipeline, outlined from its latest version."""

    name = fields.String(required=True)
    latest_version = fields.Integer(required=True, metadata={"example": 2})
    key = _names("The lineage key's columns")
    stages = _names("Stage names, in manifest order")
    traceability = _names("Traceability source names")
    runs = fields.Integer(required=True, metadata={"description": "Runs of every version"})
    last_run_at = timestamp(required=True)


class PipelinePageSchema(PageSchema):
    items = fields.List(fields.Nested(PipelineSummarySchema), required=True)


class PipelineVersionSchema(_Ordered):
    """One definition as it was posted, and the runs classified with it."""

    version = fields.Integer(required=True, metadata={"example": 1})
    created_at = timestamp(required=True)
    key = _names("The lineage key's columns (the same in every version)")
    key_types = fields.Dict(
        keys=fields.String(),
        values=fields.String(validate=validate.OneOf(["int64", "string"])),
        required=True,
        metadata={"description": "Declared key types; undeclared ones come from the data"},
    )
    stages = _names("Stage names, in manifest order")
    traceability = _names("Traceability source names")
    spec = fields.Dict(
        required=True,
        metadata={"description": "The manifest's `pipeline` part, as registered"},
    )
    runs = fields.Integer(required=True, metadata={"description": "Runs using this version"})
    run_ids = _names("The newest of those runs (up to 10); `runs_url` pages through all")
    runs_url = fields.String(required=True)


class PipelineDetailSchema(_Ordered):
    name = fields.String(required=True)
    created_at = timestamp(required=True)
    latest_version = fields.Integer(required=True)
    runs = fields.Integer(required=True, metadata={"description": "Runs of every version"})
    versions = fields.List(
        fields.Nested(PipelineVersionSchema),
        required=True,
        metadata={"description": "Every version, oldest first"},
    )


class VersionRunPageSchema(PageSchema):
    """The runs classified with one version, newest first."""

    pipeline = fields.String(required=True)
    version = fields.Integer(required=True)
    items = fields.List(fields.Nested(RunSchema), required=True)
