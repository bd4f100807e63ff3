"""The OpenAPI document made exact in one place, from what the app enforces rather than from
decorators repeated on every view:

* an `operationId` per operation: its view function's name, or the HTTP method and the
  MethodView class (`get_runs`, `delete_run_detail`); unique, or the app does not start;
* `security: []` on the paths api/auth.py leaves open (`OPEN_PATHS`); every other operation
  keeps the document's bearer requirement and documents 401 and 403 (naming the scope
  api/auth.py asks for that method);
* the error responses each operation can give, all with the one `Error` body (api/errors.py):
  400 where it takes a parameter or a body, 404 where its path names something, 413/415 on
  bodies, 409 where a request registers something (`CONFLICTS`), 422 for an invalid manifest;
  never 500, and no catch-all `default` response, so a status code the document does not
  list is a defect a client (or schemathesis) can see;
* constraints the code enforces on path parameters (`cell`: the gap cells).

Status codes follow the team's convention (api/errors.py): 400 malformed request (unparseable
body, bad query or path parameter, forged pagination token), 401/403 auth, 404 no such
run/client/job/pipeline, 409 conflicts with stored state, 413 body too large, 415 unsupported
media type, 422 a well-formed but invalid manifest or dataset. A query parameter that fails
its schema answers the status flask-smorest's argument parser is set to (api/errors.py sets
400), and the document says that one: flask-smorest documents it, by name, and it is kept.

It is an apispec plugin: installed before the blueprints are registered, it completes each
operation as flask-smorest documents it, so the served document needs no rewriting.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

from apispec import BasePlugin
from flask import Flask
from flask_smorest import Api
from werkzeug.routing import Rule

from api.auth import OPEN_PATHS, needed_scope
from tracer.reconcile import CELL_NAMES

ERROR = "Error"
"""The error body's schema: api/errors.py's ERROR_SCHEMA, as flask-smorest names it."""
PATH_CONSTRAINTS: dict[str, dict[str, Any]] = {
    "cell": {"enum": list(CELL_NAMES.values())},
}
"""What the code accepts of a path parameter, by name, beyond `string`."""

NOT_FOUND = {
    "run_id": "run",
    "run_a": "run",
    "run_b": "run",
    "key": "client",
    "job_id": "job",
    "name": "pipeline",
    "version": "version",
}
"""What a 404 says is missing, by path parameter."""

MALFORMED = "A malformed request: a bad parameter, body or pagination token (`errors` names each)"
BODY_ERRORS = {
    "413": "The body is larger than the server accepts",
    "415": "The body's media type is not one this operation reads",
}
EDGE_ERRORS = {
    "414": "The URL is longer than the server accepts",
    "431": "A request header, or all of them, is larger than the server accepts",
}
CONFLICTS = {
    "post_runs": "The definition changes the pipeline's key, the run id was ingested with "
    "another definition, or the pipeline was deleted meanwhile (`error` says which)",
    "post_lineage": "A run the event completes conflicts with what is stored, as a posted "
    "manifest would (`error` says how)",
}
"""Operations that register what may conflict with stored state (409), by operationId."""
MANIFEST = "#/components/schemas/Manifest"
MANIFEST_ERROR = "The manifest is well-formed but invalid: `errors` names every field at fault"


def install(app: Flask, api: Api) -> None:
    """Make `api`'s document exact; call before registering the blueprints."""
    plugin = ExactDocument(app)
    plugin.init_spec(api.spec)
    api.spec.plugins.append(plugin)


def error_response(description: str) -> dict[str, Any]:
    """A documented error: its description and the one Error body."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ERROR}"}}},
    }


def operation_id(app: Flask, endpoint: str, method: str) -> str:
    """The view function's name; for a MethodView, the method and the class in snake case."""
    view = app.view_functions[endpoint]
    view_class = getattr(view, "view_class", None)
    if view_class is None:
        return endpoint.rpartition(".")[2]
    return f"{method}_{re.sub(r'(?<!^)(?=[A-Z])', '_', view_class.__name__).lower()}"


class ExactDocument(BasePlugin):
    """Completes every operation flask-smorest documents (see the module's docstring)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.operation_ids: dict[str, str] = {}

    def path_helper(
        self,
        path: str | None = None,
        operations: dict[str, Any] | None = None,
        parameters: list[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        for parameter in parameters or []:
            if parameter.get("in") == "path" and parameter["name"] in PATH_CONSTRAINTS:
                parameter["schema"] = {
                    **parameter.get("schema", {}),
                    **PATH_CONSTRAINTS[parameter["name"]],
                }
        return None

    def operation_helper(
        self,
        path: str | None = None,
        operations: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        rule: Rule = kwargs["rule"]
        assert path is not None and operations is not None
        for method, operation in operations.items():
            op_id = operation_id(self.app, rule.endpoint, method)
            where = f"{method.upper()} {path}"
            if self.operation_ids.setdefault(op_id, where) != where:
                raise RuntimeError(
                    f"operationId {op_id!r} of {where} is taken by {self.operation_ids[op_id]}: "
                    "rename a view"
                )
            operation["operationId"] = op_id
            self._responses(operation, method, path, rule)

    def _responses(self, operation: dict[str, Any], method: str, path: str, rule: Rule) -> None:
        """Every status the operation can answer, each with the Error body when an error."""
        responses = {str(code): r for code, r in operation.get("responses", {}).items()}
        responses.pop("default", None)  # every status is listed: none is left to a catch-all
        for code, response in list(responses.items()):
            if isinstance(response, str):  # flask-smorest's, by name: its arguments' refusal
                responses[code] = error_response(
                    MALFORMED if code == "400" else HTTPStatus(int(code)).phrase
                )
        path_names = rule.arguments
        has_body = "requestBody" in operation
        if path.startswith(OPEN_PATHS):
            operation["security"] = []
        else:
            responses.setdefault(
                "401", error_response("No bearer token, or one the server does not know")
            )
            scope = needed_scope(method.upper(), self.app.view_functions[rule.endpoint])
            responses.setdefault(
                "403", error_response(f"The token's scope does not allow this: it needs `{scope}`")
            )
        # Any request may be refused at the edge (api/limits.py): a control character in its
        # path or query, a URL or header over the limits.
        responses.setdefault("400", error_response(MALFORMED))
        for code, description in EDGE_ERRORS.items():
            responses.setdefault(code, error_response(description))
        missing = sorted({NOT_FOUND[n] for n in path_names if n in NOT_FOUND})
        if missing:
            responses.setdefault("404", error_response(f"No such {' or '.join(missing)}"))
        if has_body:
            for code, description in BODY_ERRORS.items():
                responses.setdefault(code, error_response(description))
        if operation["operationId"] in CONFLICTS:
            responses.setdefault("409", error_response(CONFLICTS[operation["operationId"]]))
        if MANIFEST in _body_schemas(operation):
            responses.setdefault("422", error_response(MANIFEST_ERROR))
        operation["responses"] = dict(sorted(responses.items()))


def _body_schemas(operation: dict[str, Any]) -> set[str]:
    """The `$ref`s of the request body's schemas, one per media type."""
    content = operation.get("requestBody", {}).get("content", {})
    return {media.get("schema", {}).get("$ref", "") for media in content.values()}
