"""Batch lookup: a whole contact list checked against a run, answered per key and streamed.

`POST /runs/{run_id}/clients/lookup` with up to 10,000 keys, as JSON (`{"keys": [...]}`)
or as a CSV upload (`Content-Type: text/csv`, a header row naming the key columns).
Reading them is a POST only because a list of keys does not fit a URL: it needs the
`read` scope, like any lookup. Status codes, as everywhere in the API: 400 a malformed
body or key (every malformed key named by position), 404 no such run, 413 more than
10,000 keys, 415 a body neither JSON nor CSV; an unknown key is no error, it is answered
`not_found`.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from flask import Response, request, stream_with_context
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from api.auth import read_only
from api.lineage import csv_attachment, journey_urls
from api.schemas import ErrorSchema as ERROR
from api.schemas import Key, ReasonSchema, RunSchema, StageOutcomeSchema, _Strict, csv_alternative
from api.state import connection
from tracer.errors import TracerError
from tracer.outcomes import Final
from tracer.queries import lookup as core
from tracer.queries.common import load_run
from tracer.queries.csv_lists import csv_chunks

blp = Blueprint(
    "lookup", __name__, url_prefix="/api/v1/runs", description="Many clients of a run at once"
)

WRITTEN_BATCH = 1_000
"""Items encoded per chunk of the streamed answer."""
FINALS = [*(f.label for f in Final), core.NOT_FOUND]


class LookupArgsSchema(Schema):
    format = fields.String(
        load_default="json",
        validate=validate.OneOf(["json", "csv"]),
        metadata={"description": "csv: one row per key, a header row first"},
    )


class LookupItemSchema(_Strict):
    key = Key
    final_outcome = fields.String(
        required=True,
        validate=validate.OneOf(FINALS),
        metadata={"description": "not_found: the run has no record of the key"},
    )
    left_at = fields.Nested(
        StageOutcomeSchema,
        allow_none=True,
        required=True,
        metadata={"description": "The stage where the client left and its outcome there"},
    )
    reasons = fields.List(
        fields.Nested(ReasonSchema),
        required=True,
        metadata={"description": "The reasons logged at the stage where the client left"},
    )
    journey_url = fields.String(
        allow_none=True,
        required=True,
        metadata={"description": "The client's journey in this run (null when not found)"},
    )


class LookupSchema(_Strict):
    run = fields.Nested(RunSchema, required=True)
    total = fields.Integer(required=True, metadata={"description": "Keys asked"})
    items = fields.List(
        fields.Nested(LookupItemSchema),
        required=True,
        metadata={"description": "One per key asked, in the order asked (duplicates too)"},
    )
    counts = fields.Dict(
        keys=fields.String(validate=validate.OneOf(FINALS)),
        values=fields.Integer(),
        required=True,
        metadata={"description": "Keys per final outcome (only those with any)"},
    )


REQUEST_BODY = {
    "required": True,
    "description": f"At most {core.MAX_KEYS:,} keys, as JSON or as CSV",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["keys"],
                "additionalProperties": False,
                "properties": {
                    "keys": {
                        "type": "array",
                        "maxItems": core.MAX_KEYS,
                        "description": "Each key a value (one-column keys), a list of values "
                        "in key-column order, or an object by column name",
                        "items": {
                            "anyOf": [
                                {"type": ["string", "integer"]},
                                {"type": "array", "items": {"type": ["string", "integer"]}},
                                {
                                    "type": "object",
                                    "additionalProperties": {"type": ["string", "integer"]},
                                },
                            ]
                        },
                    }
                },
            },
            "example": {"keys": ["1042", "1043", 99999999]},
        },
        "text/csv": {
            "schema": {
                "type": "string",
                "description": "A header row naming the key columns (other columns are "
                "ignored), then one key a row; without such a header every row is a key in "
                "key-column order",
            },
            "example": "branch,client_no,email\nLIS,42,a@example.com\n",
        },
    },
}


@blp.route("/<run_id>/clients/lookup", methods=["POST"])
@blp.arguments(LookupArgsSchema, location="query")
@blp.doc(requestBody=REQUEST_BODY)
@blp.response(200, LookupSchema)
@blp.alt_response(200, success=True, **csv_alternative("one row per key, a header row first"))
@blp.alt_response(400, schema=ERROR, description="A malformed body, or malformed keys (named)")
@blp.alt_response(404, schema=ERROR, description="No such run")
@blp.alt_response(413, schema=ERROR, description=f"More than {core.MAX_KEYS:,} keys")
@blp.alt_response(415, schema=ERROR, description="A body neither JSON nor CSV")
@read_only
def lookup_keys(args: dict[str, Any], run_id: str) -> Response:
    """Where did each of these clients go? Per key, in the order given: the final outcome
    (`not_found` for a key the run has no record of), the stage where it left and the
    reasons logged there. Streamed: a JSON object, or CSV with `format=csv`."""
    body = _body()
    with connection() as conn:  # one snapshot: every answer from one classification
        run = load_run(conn, run_id)
        if isinstance(body, str):
            encoded = core.encode_csv(run, io.StringIO(body, newline=""), one_batch=True)
        else:
            encoded = core.encode_keys(run, body)
        answers = core.lookup(conn, run, encoded)
    batches = _batches(answers, journey_urls(run_id))
    if args["format"] == "csv":
        chunks = csv_chunks("lookup", run.key, ({"items": b} for b in batches))
        return csv_attachment(chunks, f"{run_id}-lookup")
    return Response(
        stream_with_context(core.json_document(run.header(), len(answers), batches)),
        mimetype="application/json",
    )


class UnsupportedMediaTypeError(TracerError):
    """A body in a format the lookup does not read (HTTP 415)."""

    status = 415


def _body() -> list[object] | str:
    """The JSON body's keys (the count checked), or the CSV body's text (read once the run's
    key columns are known); the body's faults named (400, 413, 415)."""
    kind = request.mimetype
    if kind == "application/json":
        try:
            return core.keys_from_json(orjson.loads(request.get_data()))
        except orjson.JSONDecodeError as exc:
            raise TracerError(f"the body is not valid JSON: {exc}") from None
    if kind == "text/csv":
        try:
            return request.get_data().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise TracerError(f"the CSV body is not UTF-8 (byte {exc.start})") from None
    raise UnsupportedMediaTypeError(
        f'Content-Type {kind or "missing"}: send application/json ({{"keys": [...]}}) '
        "or text/csv (a header row naming the key columns)"
    )


def _batches(
    answers: list[dict[str, Any]], url: Callable[[dict[str, Any]], str]
) -> Iterator[list[dict[str, Any]]]:
    """The answers in chunks of WRITTEN_BATCH, each item with its `journey_url`."""
    for start in range(0, len(answers), WRITTEN_BATCH):
        batch = answers[start : start + WRITTEN_BATCH]
        for item in batch:
            found = item["final_outcome"] != core.NOT_FOUND
            item["journey_url"] = url(item["key"]) if found else None
        yield batch
