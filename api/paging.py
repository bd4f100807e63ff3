"""The next page's URL, so a client follows `next_url` without building one."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from flask import request


def with_next_url(page: dict[str, Any]) -> dict[str, Any]:
    """The page plus `next_url`: this request's URL with `next` set (null on the last page)."""
    if page["next"] is None:
        return {**page, "next_url": None}
    args = request.args.to_dict(flat=False)
    args["next"] = [page["next"]]
    return {**page, "next_url": f"{request.base_url}?{urlencode(args, doseq=True)}"}
