"""The busiest answers (journeys, history) serialised once, with orjson.

marshmallow dumping an answer the core has already built in the documented shape cost
about a fifth of a journey's CPU. These routes hand flask-smorest a finished `Response`,
which it passes through untouched, while `@blp.response(200, Schema)` still documents
them; tests/test_hot_path.py holds the served JSON to the documented schema.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response


def json_response(data: Any) -> Response:
    """`data` as the JSON body of a 200 (keys in the order the core wrote them)."""
    return Response(orjson.dumps(data), mimetype="application/json")
