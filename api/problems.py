"""Errors as ``application/problem+json`` (RFC 9457) — every one, including validation,
unknown routes, wrong methods, oversized bodies and dependencies being down."""

from __future__ import annotations

import logging
import re
from http import HTTPStatus
from typing import Any

import nats.errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.paths import documented_path

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# With ``type: about:blank`` the title is the status's reason phrase (RFC 9457 4.2.1),
# as RFC 9110 spells it; what went wrong is in ``detail``.
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",  # RFC 6585
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def title_of(status: int) -> str:
    """The RFC 9110 reason phrase of ``status``: the title of an ``about:blank`` problem."""
    if status in TITLES:
        return TITLES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


# What each documented status means on a route, for the OpenAPI description.
MEANINGS = {
    401: "No token, or a bad or expired one",
    403: "Your role may not do this",
    404: "No such resource, or not yours",
    409: "Not allowed in the resource's current state",
    413: "The body is too large",
    422: "Invalid input; `errors` names the fields",
    429: "Too many requests; retry after `Retry-After` seconds",
    503: "A dependency (database, NATS or Temporal) is unavailable; retry later",
}
RETRY_AFTER_S = "2"


class Problem(Exception):
    """Raise to answer with a problem document."""

    def __init__(self, status: int, detail: str, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers
        self.extra = extra


def invalid(field: str, message: str, explanation: str | None = None) -> Problem:
    """A 422 naming one failing field (``body.quote_id``, ``query.cursor``, ...)."""
    return Problem(422, f"Invalid input in {field}: {explanation or message}",
                   errors=[{"field": field, "message": message}])


class FieldError(BaseModel):
    field: str = Field(description="Where: `body.pickup.lat`, `query.limit`, "
                                   "`header.Idempotency-Key`, `path.ride_id`",
                       examples=["body.pickup.lat"])
    message: str = Field(examples=["Input should be less than or equal to 90"])


class ProblemDetails(BaseModel):
    """An RFC 9457 problem document."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(default="about:blank", description="Always `about:blank`: the status "
                                                         "says what kind of problem it is")
    title: str = Field(description="The status's reason phrase (RFC 9110)",
                       examples=["Not Found"])
    status: int = Field(examples=[404])
    detail: str = Field(examples=["No such ride"])
    errors: list[FieldError] | None = Field(default=None,
                                            description="The failing fields (422 only)")


def problem_response(status: int, detail: str, headers: dict[str, str] | None = None,
                     **extra: Any) -> JSONResponse:
    body = {"type": "about:blank", "title": title_of(status), "status": status,
            "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the problems a route can answer with (401, 413,
    422 and 503 are added where they apply by ``api.openapi``)."""
    return {code: {"model": ProblemDetails, "description": MEANINGS.get(code, title_of(code))}
            for code in codes}


def _field_of(loc: tuple[Any, ...]) -> str:
    # FastAPI says "body" for the body and "query"/"path"/"header" for parameters; the
    # header is named as the client sends it (Idempotency-Key), not as the parameter.
    parts = [str(p) for p in loc]
    if len(parts) == 2 and parts[0] == "header":
        parts[1] = "-".join(w.capitalize() for w in re.split(r"[-_]", parts[1]))
    return ".".join(parts)


def install(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc.status, exc.detail, exc.headers, **exc.extra)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 400:
            # FastAPI's only 400 is a body it could not read as JSON (not UTF-8, say):
            # invalid input like any other, so a 422 naming the body.
            return problem_response(422, "Invalid input in body: not readable as JSON",
                                    errors=[{"field": "body",
                                             "message": "not readable as JSON"}])
        if exc.status_code == 405:
            # Starlette names the methods of the first route on the path only; a client
            # needs all of them (GET and POST on /v1/rides).
            documented = documented_path(request.app, request.url.path)
            if documented is not None:
                headers["Allow"] = ", ".join(sorted(documented[1]))
        return problem_response(exc.status_code, str(exc.detail), headers or None)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # The offending input is not echoed back: it may be large, or a secret.
        errors = [{"field": "body" if e.get("type") == "json_invalid"  # loc has the offset
                   else _field_of(tuple(e.get("loc", ()))), "message": e.get("msg", "")}
                  for e in exc.errors()]
        fields = ", ".join(dict.fromkeys(e["field"] for e in errors)) or "the request"
        return problem_response(422, f"Invalid input in {fields}", errors=errors)

    # A dependency that is down is the server's condition, not the client's mistake:
    # 503 with Retry-After, so clients and load balancers back off and try again.
    async def _database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return problem_response(503, "The database is unavailable; retry shortly",
                                {"Retry-After": RETRY_AFTER_S})

    for db_error in (OperationalError, InterfaceError, DisconnectionError, PoolTimeoutError):
        app.add_exception_handler(db_error, _database_down)

    @app.exception_handler(nats.errors.Error)
    async def _nats_down(request: Request, exc: nats.errors.Error) -> JSONResponse:
        log.warning("NATS unavailable on %s %s: %r", request.method, request.url.path, exc)
        return problem_response(503, "NATS is unavailable; retry shortly",
                                {"Retry-After": RETRY_AFTER_S})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_response(500, "An unexpected error occurred; it has been logged.")
