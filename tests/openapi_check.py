"""Every API response in the tests is validated against the OpenAPI document the app serves."""

from __future__ import annotations

from typing import Any

from openapi_core import OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from werkzeug.wrappers import Request


class _Response(WerkzeugOpenAPIResponse):
    """Text bodies (CSV) as text: JSON Schema's "string" is not bytes."""

    @property
    def data(self) -> Any:
        raw = super().data
        if self.response.mimetype.startswith("text/") and isinstance(raw, bytes):
            return raw.decode()
        return raw


class CheckedClient:
    """A Flask test client whose every response must match the served OpenAPI document."""

    def __init__(self, app: Any, token: str | None = None) -> None:
        self.client = app.test_client()
        self.token = token
        spec = self.client.get("/api/v1/openapi.json").get_json()
        self.openapi = OpenAPI.from_dict(spec)

    def request(self, method: str, url: str, **kwargs: Any) -> Any:
        headers = kwargs.pop("headers", {})
        if self.token:
            headers.setdefault("Authorization", f"Bearer {self.token}")
        response = self.client.open(url, method=method, headers=headers, **kwargs)
        # The response is what is checked; a body-less copy of the request finds its operation.
        request = Request.from_values(url, method=method, headers=headers)
        self.openapi.validate_response(WerkzeugOpenAPIRequest(request), _Response(response))
        return response

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Any:
        return self.request("POST", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> Any:
        return self.request("DELETE", url, **kwargs)
