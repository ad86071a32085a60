"""The OpenAPI document, as FastAPI makes it plus what it cannot say by itself:

- every error answer is ``application/problem+json`` with the problem schema (FastAPI
  would call it ``application/json``), and the errors any route can give (401 with a
  token, 413 and 422 with input, 503 with a dependency) are listed on every route that
  can give them;
- an optional parameter is absent or has a value: its schema does not offer ``null``
  (a query string or header has no null; ``?status=null`` is just an unknown status).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api.problems import MEANINGS, PROBLEM_JSON

_PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}
_NULL = {"type": "null"}


def _document_problems(operation: dict[str, Any], method: str = "get") -> None:
    responses = operation.setdefault("responses", {})
    implied = []
    secured = bool(operation.get("security"))
    if secured:
        implied.append("401")
    if operation.get("requestBody"):
        implied += ["413", "422"]
    if operation.get("parameters"):
        implied.append("422")
    if secured:  # the /v1 routes all use the database, NATS or both
        implied.append("503")
    if secured and method in ("post", "put", "patch", "delete"):
        implied.append("429")  # api.ratelimit
    for code in implied:
        responses.setdefault(code, {"description": MEANINGS[int(code)]})
    for code, response in responses.items():
        if code[0] in "45":
            response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}


def _without_null(parameter: dict[str, Any]) -> None:
    schema = parameter.get("schema", {})
    variants = schema.get("anyOf")
    if not variants or _NULL not in variants:
        return
    rest = [v for v in variants if v != _NULL]
    if len(rest) == 1:
        del schema["anyOf"]
        schema.update(rest[0])
    else:
        schema["anyOf"] = rest


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes,
                             tags=getattr(app, "openapi_tags", None))
        for path in schema.get("paths", {}).values():
            for method, operation in path.items():
                _document_problems(operation, method)
                for parameter in operation.get("parameters", []):
                    _without_null(parameter)
        # FastAPI's own validation-error shapes are no longer referenced: ours replaced them
        components = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented override
