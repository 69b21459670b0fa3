"""The OpenAPI document the Recommender serves at /docs.json, made valid for validators and client generators.

BentoML 1.4 (``_bentoml_sdk.service.openapi.generate_spec``) labels its document ``openapi: 3.0.2``
but fills it with pydantic 2 JSON Schema (draft 2020-12: ``{"type": "null"}`` in ``anyOf``,
``const``, numeric ``exclusiveMinimum``), which is OpenAPI **3.1**'s schema dialect, and its file
fields (``_bentoml_sdk.validators.FileSchema``) are written ``{"type": "file"}`` in the component
schemas, a form neither 3.0 nor 3.1 knows. BentoML's own clients read ``/schema.json``, not
``/docs.json``, and rely on ``type: file`` there, so the fix belongs here, on the served document
only: label it 3.1.0, write files as ``type: string, format: binary``, and declare the one error
shape (``ErrorResponse``) for 4XX/5XX answers. ``openapi-spec-validator`` accepts the result and
``openapi-python-client`` generates a typed client from it (tests/test_openapi_client.py).
"""

from __future__ import annotations

import json
from typing import Any

OPENAPI_VERSION = "3.1.0"
DOCS_PATH = "/docs.json"
_FILE_ONLY_KEYS = ("pil", "content_type")  # FileSchema's hints for BentoML's own client


def _fix_schemas(node: Any) -> Any:
    """Files as string/binary; a field BentoML flattened from ``X | None`` (``_flatten_field`` keeps the
    first ``anyOf`` branch) gets its null back: ``{"type": "string", "default": null}`` is a contradiction."""
    if isinstance(node, dict):
        if node.get("type") == "file":
            node = {k: v for k, v in node.items() if k not in _FILE_ONLY_KEYS}
            node.update(type="string", format="binary")
        if "default" in node and node["default"] is None and isinstance(node.get("type"), str) \
                and node["type"] != "null":
            node = {**node, "type": [node["type"], "null"]}
        return {k: _fix_schemas(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_fix_schemas(v) for v in node]
    return node


def _error_responses(spec: dict[str, Any], api_paths: set[str]) -> None:
    """Every API path answers errors in the one shape (mixrec/errors.py): say so, so generated clients parse them."""
    from services.schemas import ErrorResponse

    schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    components.update(schema.pop("$defs", {}))
    components["ErrorResponse"] = schema
    ref = {"description": "an error, in the one error shape", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    for path in api_paths:
        for op in spec.get("paths", {}).get(path, {}).values():
            if isinstance(op, dict) and "responses" in op:
                # BentoML lists 400/404/500 with its own error models; ours answer the one shape
                for status in [s for s in op["responses"] if not s.startswith("2")]:
                    op["responses"][status] = ref
                op["responses"].setdefault("4XX", ref)
                op["responses"].setdefault("5XX", ref)


def _refs_to_models(spec: dict[str, Any], api_paths: set[str]) -> None:
    """BentoML inlines each body and response (a copy of the model's component schema): point at the
    component instead, so generated clients get one class per model (``RecommendResponse``)."""
    components = spec.get("components", {}).get("schemas", {})
    for path in api_paths:
        for op in spec.get("paths", {}).get(path, {}).values():
            if not isinstance(op, dict):
                continue
            bodies = list(op.get("requestBody", {}).get("content", {}).values())  # JSON or multipart
            bodies += [r.get("content", {}).get("application/json") for s, r in op.get("responses", {}).items()
                       if s.startswith("2")]
            for body in bodies:
                if body and body.get("schema", {}).get("title") in components:
                    body["schema"] = {"$ref": f"#/components/schemas/{body['schema']['title']}"}


def openapi_document(service) -> dict[str, Any]:
    """``service``'s OpenAPI document as served: BentoML's, as JSON, with the fixes above."""
    from bentoml._internal.utils.uri import join_paths

    # As /docs.json has it (string keys), with BentoML's wrapper-class suffix off the model names
    # (``RecommendRequestIODescriptor`` -> ``RecommendRequest``: what generated clients name their classes).
    spec = json.loads(json.dumps(service.openapi_spec.asdict()).replace('IODescriptor"', '"'))
    spec = _fix_schemas(spec)
    spec["openapi"] = OPENAPI_VERSION
    prefix = getattr(service, "path_prefix", None) or ""
    paths = {join_paths(prefix, api.route) for api in service.apis.values()}
    _refs_to_models(spec, paths)
    _error_responses(spec, paths)
    return spec


class OpenAPIDocumentMiddleware:
    """Answers GET /docs.json with ``openapi_document`` (built once); everything else passes through."""

    def __init__(self, app, service) -> None:
        self.app, self.service = app, service
        self._body: bytes | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path") != DOCS_PATH or scope.get("method") not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        from starlette.responses import Response

        if self._body is None:
            self._body = json.dumps(openapi_document(self.service)).encode()
        await Response(self._body, media_type="application/json")(scope, receive, send)
