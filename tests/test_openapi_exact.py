"""The served OpenAPI document says exactly what the API does: a valid OpenAPI 3.1 document,
an operationId on every operation, security as api/auth.py enforces it, the error responses
each operation gives, and enums that are the sets the API accepts (probed, value by value,
against real runs)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from api.auth import OPEN_PATHS
from tests.api_world import World, api_world
from tracer.outcomes import UNREMARKABLE, Outcome
from tracer.queries.pages import MAX_LIMIT, MAX_PAGE

METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with api_world(tmp_path_factory.mktemp("exact")) as w:
        yield w


@pytest.fixture(scope="module")
def spec(world: World) -> dict[str, Any]:
    response = world.app.test_client().get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def parameters(spec: dict[str, Any], path: str, operation: dict[str, Any]) -> list[dict]:
    """The operation's parameters, the path item's included."""
    return [*spec["paths"][path].get("parameters", []), *operation.get("parameters", [])]


def test_the_document_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1")
    errors = [str(e.message) for e in OpenAPIV31SpecValidator(spec).iter_errors()]
    assert errors == []


def test_every_operation_has_a_unique_operation_id(spec: dict[str, Any]) -> None:
    ids = [op.get("operationId") for _, _, op in operations(spec)]
    assert None not in ids
    assert len(ids) == len(set(ids)) > 20
    by_route = {(m, p): op["operationId"] for m, p, op in operations(spec)}
    assert by_route[("get", "/api/v1/runs/{run_id}/reconciliation")] == "get_reconciliation"
    assert by_route[("post", "/api/v1/runs")] == "post_runs"


def test_security_is_what_the_api_enforces(spec: dict[str, Any], world: World) -> None:
    assert spec["security"] == [{"bearer": []}]
    client = world.app.test_client()
    open_ops = [(m, p) for m, p, op in operations(spec) if p.startswith(OPEN_PATHS)]
    assert ("get", "/api/v1/health") in open_ops
    for method, path, op in operations(spec):
        if path.startswith(OPEN_PATHS):
            assert op["security"] == [], path
            assert not {"401", "403"} & set(op["responses"]), path
            assert client.open(path, method=method).status_code == 200  # no token needed
        else:
            assert "security" not in op, (method, path)  # the document's bearer applies
            assert {"401", "403"} <= set(op["responses"]), (method, path)
            scope = {"get": "read", "delete": "admin"}.get(method, "ingest")
            scope = "read" if path.endswith("/clients/lookup") else scope  # a POST that reads
            assert f"`{scope}`" in op["responses"]["403"]["description"], (method, path)
    # And the API does refuse a secured operation without a token.
    refused = client.get(f"/api/v1/runs/{world.run_a}")
    assert refused.status_code == 401 and refused.get_json()["ok"] is False


def test_error_responses_are_documented_with_the_error_body(spec: dict[str, Any]) -> None:
    error = {"$ref": "#/components/schemas/Error"}
    for method, path, op in operations(spec):
        codes = set(op["responses"])
        where = (method, path)
        assert "default" not in codes and "500" not in codes, where
        for code, response in op["responses"].items():
            if code.startswith("4"):
                assert response["content"]["application/json"]["schema"] == error, (where, code)
        # Any request may be refused at the edge: a control character, a URL or header too big.
        assert {"400", "414", "431"} <= codes, where
        if "{" in path:
            assert "404" in codes, where
        if "requestBody" in op:
            assert {"413", "415"} <= codes, where
    manifest = spec["paths"]["/api/v1/runs"]["post"]["responses"]
    assert "422" in manifest and "manifest" in manifest["422"]["description"]
    assert "409" in manifest  # a run id taken with another definition of its pipeline


def test_timestamps_are_date_times(spec: dict[str, Any]) -> None:
    stamps = {
        (name, prop): schema["properties"][prop]
        for name, schema in spec["components"]["schemas"].items()
        for prop in schema.get("properties", {})
        if prop.endswith("_at") and "string" in schema["properties"][prop].get("type", [])
    }  # `left_at` is a stage, not a moment
    assert ("Run", "created_at") in stamps and ("Job", "enqueued_at") in stamps
    assert {k: v.get("format") for k, v in stamps.items()} == dict.fromkeys(stamps, "date-time")
    assert spec["components"]["schemas"]["Run"]["properties"]["classified_at"]["type"] == [
        "string",
        "null",
    ]


def test_limits_are_the_ones_enforced(spec: dict[str, Any], world: World) -> None:
    client = world.app.test_client()
    headers = world.headers("read")
    checked = 0
    for method, path, op in operations(spec):
        for p in parameters(spec, path, op):
            if p["name"] != "limit":
                continue
            schema = p["schema"]
            assert schema["minimum"] == 1 and schema["maximum"] in (MAX_LIMIT, MAX_PAGE)
            url, query = _fill(world, spec, path, op)
            for limit, ok in ((schema["maximum"], True), (schema["maximum"] + 1, False)):
                response = client.open(
                    f"{url}?{urlencode({**query, 'limit': limit}, doseq=True)}",
                    method=method,
                    headers=headers,
                )
                assert (response.status_code == 200) == ok, (path, limit, response.get_json())
            checked += 1
    assert checked >= 8


def test_every_enum_value_is_accepted_and_only_those(spec: dict[str, Any], world: World) -> None:
    """Each listed value of each enum parameter answers 200 on real runs: none is refused."""
    client = world.app.test_client()
    headers = world.headers("read")
    probed = 0
    for method, path, op in operations(spec):
        if method != "get":
            continue
        for p in parameters(spec, path, op):
            for value in _enum(p["schema"]):
                url, query = _fill(world, spec, path, op, {p["name"]: value})
                response = client.get(f"{url}?{urlencode(query, doseq=True)}", headers=headers)
                assert response.status_code == 200, (path, p["name"], value, response.get_json())
                probed += 1
    assert probed > 50
    anomalies = spec["paths"]["/api/v1/runs/{run_id}/anomalies"]["get"]
    (outcome,) = [p for p in anomalies["parameters"] if p["name"] == "outcome"]
    listed = set(outcome["schema"]["enum"])
    assert listed == {o.label for o in Outcome} - {o.label for o in UNREMARKABLE}
    for refused in ("entered", "passed"):
        response = client.get(
            f"/api/v1/runs/{world.run_a}/anomalies?outcome={refused}", headers=headers
        )
        assert 400 <= response.status_code < 500 and "outcome" in str(response.get_json())


def _enum(schema: dict[str, Any]) -> list[Any]:
    if "enum" in schema:
        return [v for v in schema["enum"] if v is not None]
    return _enum(schema.get("items", {})) if schema.get("type") == "array" else []


def _fill(
    world: World,
    spec: dict[str, Any],
    path: str,
    op: dict[str, Any],
    given: dict[str, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The operation's URL on the world's runs, and its required query parameters (with
    `given` ones): ids name what exists, enums take their first value."""
    given = given or {}
    known = {
        "run_id": world.run_a,
        "run_a": world.run_a,
        "run_b": world.run_b,
        "run": world.run_a,
        "name": world.pipeline,
        "version": 1,
        "key": "3",
        "rest": "reconciliation",
    }
    url, query = path, {}
    for p in parameters(spec, path, op):
        name = p["name"]
        if name in given:
            value = given[name]
        elif p["in"] == "path" or p.get("required") or name in ("key", "run"):
            value = known[name] if name in known else _enum(p["schema"])[0]
        else:
            continue
        if p["in"] == "path":
            url = url.replace(f"{{{name}}}", quote(str(value), safe=""))
        else:
            query[name] = value
    return url, query
