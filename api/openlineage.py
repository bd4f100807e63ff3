"""/api/v1/lineage: GET exports a run's lineage graph (Marquez's lineage shape, GraphML, DOT);
POST receives OpenLineage RunEvents (where the client's HTTP transport posts by default).

Marquez serves both on this path too, so an OpenLineage integration pointed at tracer
(OPENLINEAGE_URL) needs no endpoint setting.
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint

from api.openlineage_schemas import (
    GraphArgsSchema,
    LineageGraphSchema,
    PendingArgsSchema,
    PendingPageSchema,
    ReceivedSchema,
    run_event_schema,
)
from api.paging import with_next_url
from api.schemas import ErrorSchema as ERROR
from api.state import connection, state
from tracer.errors import TracerError
from tracer.lineage_graph import FORMATS, file_name, journey_graph, run_graph, to_marquez
from tracer.openlineage_in import pending_runs, receive

blp = Blueprint(
    "openlineage",
    __name__,
    url_prefix="/api/v1/lineage",
    description="Lineage graphs out, OpenLineage events in",
)


def _event_body() -> Any:
    """The posted event: JSON, gzip-compressed when the client's transport compresses."""
    data = request.get_data()
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError):
            raise TracerError("request body is not valid gzip") from None
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise TracerError("request body is not valid JSON: send one OpenLineage event") from None


@blp.route("")
class Lineage(MethodView):
    @blp.arguments(GraphArgsSchema, location="query")
    @blp.response(200, LineageGraphSchema)
    @blp.alt_response(
        200,
        success=True,
        description="With format=graphml: GraphML, every figure a typed attribute",
        content_type=FORMATS["graphml"][0],
        schema={"contentMediaType": FORMATS["graphml"][0]},  # XML text
    )
    @blp.alt_response(
        200,
        success=True,
        description="With format=dot: Graphviz DOT, anomalous stages in red",
        content_type=FORMATS["dot"][0],
        schema={"type": "string"},
    )
    @blp.alt_response(404, schema=ERROR, description="No such run, or no such client in it")
    def get(self, args: dict[str, Any]) -> Any:
        """A run's lineage graph: its stages and datasets with every figure; with `key`, one
        client's journey. JSON in the node/edge shape of Marquez's lineage API, or GraphML /
        Graphviz DOT with `format`."""
        with connection() as conn:
            key = args.get("key")
            graph = journey_graph(conn, args["run"], key) if key else run_graph(conn, args["run"])
        if args["format"] == "json":
            return to_marquez(graph)
        media, export = FORMATS[args["format"]]
        name = file_name(graph, args["format"])
        return Response(
            export(graph),
            mimetype=media,
            headers={"Content-Disposition": f'inline; filename="{name}"'},
        )

    @blp.doc(
        requestBody={
            "required": True,
            "description": "One OpenLineage RunEvent (DatasetEvents and JobEvents are "
            "accepted and ignored). Events of jobs a pipeline maps to its stages and sources "
            "assemble its runs; others are ignored.",
            "content": {"application/json": {"schema": run_event_schema()}},
        }
    )
    @blp.response(200, ReceivedSchema)
    @blp.alt_response(400, schema=ERROR, description="A malformed event: the fields at fault")
    def post(self) -> dict[str, Any]:
        """Receive an OpenLineage event; a run registers once every stage and source has one."""
        s = state()
        return receive(
            s.engine,
            _event_body(),
            s.config.roots,
            lambda submitted: s.dispatcher.submit(submitted).as_dict(),
        )


@blp.route("/pending")
@blp.arguments(PendingArgsSchema, location="query")
@blp.response(200, PendingPageSchema)
def get_pending(args: dict[str, Any]) -> dict[str, Any]:
    """Runs assembled from OpenLineage events and not registered yet, with what each waits for."""
    with connection() as conn:
        page = pending_runs(
            conn,
            args.get("pipeline"),
            args.get("status") or ("pending", "invalid"),
            args["limit"],
            args.get("next"),
        )
    return with_next_url(page)
