"""schemathesis against the served OpenAPI document: every operation, once with a `read` token
and once with an `ingest` token (no `admin` token, so nothing is deleted), in process through
the WSGI app, over a database holding two classified runs (tests/api_world.py).

Every response must be no server error and match the document: its status code, content
type, headers and body schema. Each operation gets cases that fit the document (positive)
and cases that do not (negative: those must be refused as documented, never with a 500).
Generated manifests cannot load anything: the only data root is an empty folder, so every
path they name is refused before a job is queued.

schemathesis's pytest loader for fixtures (`schemathesis.pytest.from_fixture`) does not run
under pytest 9.2 (it sets `Node._nodeid`, which pytest 9.2 no longer has), so the cases come
from its Hypothesis strategies (`APIOperation.as_strategy`) with its checks, run here.
Every failing case is collected, one example per operation and kind of failure, so a run
reports all of them at once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_world import World, api_world

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 15
"""Cases per operation, token and generation mode."""
SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,  # the same cases on every run: a failure reproduces
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with api_world(tmp_path_factory.mktemp("fuzz")) as w:
        yield w


@pytest.mark.parametrize("scope", ["read", "ingest"])
def test_every_operation_answers_as_documented(
    world: World, scope: str, capsys: pytest.CaptureFixture[str]
) -> None:
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", world.app)
    headers = world.headers(scope)
    cases: Counter[str] = Counter()
    failures: dict[tuple[str, str], str] = {}
    started = time.monotonic()
    unnegatable: list[str] = []

    def call(case: Any) -> None:
        cases[case.operation.label] += 1
        try:
            case.call_and_validate(headers=headers, checks=CHECKS)
        except FailureGroup as group:
            for failure in group.exceptions:
                failures.setdefault(
                    (case.operation.label, failure.title),
                    f"{failure.message}\n  {case.as_curl_command(headers)}",
                )

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, known in _strategies(world, operation):
            strategy = operation.as_strategy(generation_mode=mode, **known)
            try:
                SETTINGS(given(case=strategy)(call))()
            except Unsatisfiable:
                if mode is GenerationMode.POSITIVE or _takes_input(operation):
                    raise
                unnegatable.append(operation.label)  # nothing of its request can be invalid
    _report(capsys, scope, cases, time.monotonic() - started, len(failures))
    assert "GET /api/v1/health" in unnegatable
    assert len(cases) == len(list(schema.get_all_operations())) > 20
    assert not failures, f"{len(failures)} kinds of failure ({scope} token):\n\n" + "\n\n".join(
        f"{label}: {title}\n  {example}" for (label, title), example in sorted(failures.items())
    )


def _strategies(world: World, operation: Any) -> list[tuple[GenerationMode, dict[str, Any]]]:
    """Cases that fit the document, cases that do not, and, where the operation names a run, a
    pipeline or a client, fitting cases about the world's (generated ids would find nothing)."""
    real = {
        "run_id": world.run_a,
        "run_a": world.run_a,
        "run_b": world.run_b,
        "name": world.pipeline,
        "version": 1,
        "run": world.run_a,
        "key": "3",  # a client of both runs, multiplied at stage b
    }
    path = {k: v for k, v in real.items() if k in operation.path_parameters}
    query = {k: v for k, v in real.items() if k in operation.query}
    plans: list[tuple[GenerationMode, dict[str, Any]]] = [
        (GenerationMode.POSITIVE, {}),
        (GenerationMode.NEGATIVE, {}),
    ]
    if path or query:
        plans.append((GenerationMode.POSITIVE, {"path_parameters": path, "query": query}))
    return plans


def _takes_input(operation: Any) -> bool:
    parts = (operation.path_parameters, operation.query, operation.headers, operation.body)
    return any(len(part) for part in parts)


def _report(
    capsys: pytest.CaptureFixture[str], scope: str, cases: Counter[str], seconds: float, failed: int
) -> None:
    """How much was tried, on the terminal even when output is captured (for the CI log)."""
    with capsys.disabled():
        print(
            f"\nschemathesis, {scope} token: {sum(cases.values())} cases over {len(cases)} "
            f"operations in {seconds:.1f} s; {failed} kinds of failure"
        )
