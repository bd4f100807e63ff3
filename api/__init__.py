"""The REST API: a Flask app factory over tracer's core. Nothing happens at import."""

from __future__ import annotations

import logging
from pathlib import Path

import flask_swagger_ui
from flask import Flask, send_from_directory
from flask.typing import ResponseReturnValue

from api import (
    auth,
    compare,
    errors,
    history,
    limits,
    lineage,
    lookup,
    openapi_doc,
    openlineage,
    operations,
    runs,
    service,
    web,
)
from api.state import State
from tracer import __version__, db
from tracer.config import Config
from workers.queues import InProcessDispatcher, dispatcher

DOCS_ASSETS = "/api/v1/docs/assets/"


def create_app(config: Config | None = None) -> Flask:
    """Build the app for `config` (default: from the environment)."""
    config = config or Config.from_env()
    app = Flask(__name__)
    app.config.update(
        API_TITLE="tracer",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.1.0",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        # Swagger UI 5 (OpenAPI 3.1) from the flask-swagger-ui wheel: the docs page works offline.
        OPENAPI_SWAGGER_UI_URL=DOCS_ASSETS,
        API_SPEC_OPTIONS={
            "info": {"description": "Record-level lineage: where did every client of a run go?"},
            "components": {
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
            "security": [{"bearer": []}],
        },
    )
    app.json.sort_keys = False  # keep the outcome table's order in responses
    state = State(config, db.make_engine(config), dispatcher(config))
    app.extensions["tracer"] = state
    if isinstance(state.dispatcher, InProcessDispatcher):
        _resume(state)
    api = errors.TracerApi(app)
    openapi_doc.install(app, api)  # before the blueprints: it completes each operation
    for name, schema in runs.manifest_components().items():
        api.spec.components.schema(name, schema)
    for blueprint in (
        runs.blp,
        lineage.blp,
        compare.blp,
        history.blp,
        service.blp,
        openlineage.blp,
        lookup.blp,
    ):
        api.register_blueprint(blueprint)
    app.register_blueprint(web.blp)  # the pages: not API operations, so not in the document
    errors.register(app)
    auth.init_app(app)
    limits.init_app(app, config.limits)  # after the token check: no body read for strangers
    operations.init_app(app)  # request log lines, /metrics
    assets = Path(flask_swagger_ui.__file__).parent / "dist"

    @app.get(DOCS_ASSETS + "<path:name>")
    def docs_assets(name: str) -> ResponseReturnValue:
        return send_from_directory(assets, name)

    @app.get("/favicon.ico")
    def favicon() -> ResponseReturnValue:
        return send_from_directory(assets, "favicon-32x32.png", mimetype="image/png")

    return app


def _resume(state: State) -> None:
    """Without Redis the jobs live in this process: take up the runs it left unfinished."""
    assert isinstance(state.dispatcher, InProcessDispatcher)
    try:
        resumed = state.dispatcher.resume(state.engine)
    except Exception:  # no database yet: /health says so, and nothing was running
        logging.getLogger("tracer").exception("could not look for unfinished runs")
        return
    if resumed:
        logging.getLogger("tracer").warning("resuming unfinished runs: %s", ", ".join(resumed))
