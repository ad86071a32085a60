"""Bearer JWT authentication (HS256, claims ``sub``, ``role``, ``iat``, ``exp``) and role
checks.

A token must be signed with ``RIDEHAIL_JWT_SECRET`` using HS256 (no other algorithm is
accepted, ``none`` least of all), carry an ``iat`` and an ``exp`` in the future (JSON
numbers, RFC 7519's NumericDate) no more than ``RIDEHAIL_JWT_MAX_TTL_S`` apart nor
``exp`` further than that from now, a known ``role`` and a ``sub`` that can stand in a
NATS subject and a database key (the rules are in infra.tokens). Anything else is a 401
whose detail says what is wrong in the caller's terms, never the decoder's; a good token
for the wrong role is a 403.

The dependencies are coroutines although they never wait: FastAPI runs a plain function
dependency on a worker thread, and the hop there and back (and the wait for the GIL
while the event loop runs) cost more than the checks themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import Scope

from api.problems import Problem
from infra.tokens import ROLES, SUB_PATTERN, Role, TokenRefused, issue_token, read_token

__all__ = ["MISSING", "ROLES", "Principal", "Role", "issue_token", "principal", "require",
           "verify"]
MISSING = "Missing bearer token (Authorization: Bearer <token>)"

_bearer = HTTPBearer(auto_error=False, description="A token from `ridehail token`")


class Principal(BaseModel):
    """Who is calling, from a verified token."""

    model_config = ConfigDict(frozen=True)

    sub: str = Field(pattern=SUB_PATTERN)
    role: Role


def _unauthorized(detail: str) -> Problem:
    return Problem(401, detail, headers={"WWW-Authenticate": "Bearer"})


# Where a request keeps the caller its token was verified as (api.ratelimit verifies the
# token of every write before the route runs): (token, Principal).
_CALLER = "ridehail.caller"


def remember_caller(scope: Scope, token: str, who: Principal) -> None:
    scope.setdefault("state", {})[_CALLER] = (token, who)


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise _unauthorized(MISSING)
    seen = request.scope.get("state", {}).get(_CALLER)
    if seen is not None and seen[0] == credentials.credentials:
        return seen[1]  # this very token, verified earlier in this request
    settings = request.app.state.services.settings
    return verify(credentials.credentials, settings.require_jwt_secret(),
                  settings.jwt_max_ttl_s)


def verify(token: str, secret: str, max_ttl_s: int) -> Principal:
    """The caller a bearer token names, or a 401 problem saying what is wrong with it."""
    try:
        sub, role = read_token(token, secret, max_ttl_s)
    except TokenRefused as e:
        raise _unauthorized(str(e)) from None
    return Principal(sub=sub, role=role)


def require(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency giving the caller, if their role is one of ``roles`` (else 403)."""

    async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if who.role not in roles:
            raise Problem(403, f"This needs the role {' or '.join(roles)}; you are {who.role}")
        return who

    return check


Caller = Annotated[Principal, Depends(principal)]
Rider = Annotated[Principal, Depends(require("rider"))]
Driver = Annotated[Principal, Depends(require("driver"))]
Admin = Annotated[Principal, Depends(require("admin"))]
