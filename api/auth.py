"""Bearer JWT authentication (HS256, claims ``sub``, ``role``, ``exp``) and role checks.

A token must be signed with ``RIDEHAIL_JWT_SECRET`` using HS256 (no other algorithm is
accepted, ``none`` least of all), carry an ``exp`` in the future (a JSON number, RFC
7519's NumericDate), a known ``role`` and a ``sub`` that can stand in a NATS subject and
a database key. Anything else is a 401;
a good token for the wrong role is a 403.

The dependencies are coroutines although they never wait: FastAPI runs a plain function
dependency on a worker thread, and the hop there and back (and the wait for the GIL
while the event loop runs) cost more than the checks themselves.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Scope

from api.problems import Problem
from infra.tokens import ALGORITHM, ROLES, Role, issue_token

__all__ = ["ROLES", "Principal", "Role", "issue_token", "principal", "require", "verify"]
# Ids become NATS subject tokens (``drivers.<id>.online``) and database keys: no dots,
# wildcards or whitespace, and no longer than the columns that hold them.
SUB_PATTERN = r"^[A-Za-z0-9_@:|+-]{1,128}$"

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
        raise _unauthorized("Missing bearer token (Authorization: Bearer <token>)")
    seen = request.scope.get("state", {}).get(_CALLER)
    if seen is not None and seen[0] == credentials.credentials:
        return seen[1]  # this very token, verified earlier in this request
    return verify(credentials.credentials,
                  request.app.state.services.settings.require_jwt_secret())


def verify(token: str, secret: str) -> Principal:
    """The caller a bearer token names, or a 401 problem saying what is wrong with it."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM],
                            options={"require": ["exp", "sub", "role"]})
    except jwt.ExpiredSignatureError:
        raise _unauthorized("The token has expired") from None
    except jwt.PyJWTError as e:
        raise _unauthorized(f"Invalid token: {e}") from None
    except (ValueError, TypeError, OverflowError):  # a header PyJWT chokes on is still a 401
        raise _unauthorized("Invalid token: malformed") from None
    exp = claims["exp"]
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        # PyJWT takes a numeric string ("9999999999") for the number it spells; RFC 7519
        # says a NumericDate is a JSON number
        raise _unauthorized("Invalid token: exp must be a NumericDate (a JSON number)")
    try:
        return Principal.model_validate({"sub": claims["sub"], "role": claims["role"]})
    except ValidationError as e:
        bad = {str(err["loc"][0]) for err in e.errors() if err.get("loc")}
        if "role" in bad:
            raise _unauthorized("Invalid token: role must be rider, driver or admin") from None
        raise _unauthorized("Invalid token: sub must be 1-128 letters, digits or _-@:|+") \
            from None


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
