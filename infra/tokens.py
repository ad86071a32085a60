"""Bearer tokens (HS256, claims ``sub``, ``role``, ``iat``, ``exp``): signing them, and
the rules a token must meet, each refusal worded in the caller's terms. The API turns a
refusal into a 401 (api/auth.py). Kept apart from the API so ``ridehail token`` starts
quickly."""

from __future__ import annotations

import json
import math
import re
import time
from typing import Any, Literal

import jwt

Role = Literal["rider", "driver", "admin"]
ROLES: tuple[Role, ...] = ("rider", "driver", "admin")
ALGORITHM = "HS256"
DEFAULT_MAX_TTL_S = 86400
# How far the clock of whoever signed a token may run ahead of this one: for an ``iat``
# or ``nbf`` in the future and an ``exp`` beyond the longest lifetime from now. An
# ``exp`` that has passed has passed: no leeway there.
LEEWAY_S = 60
# ``iat`` is not among them: tokens minted by clients written to the first contract
# carry ``sub``, ``role`` and ``exp`` only. Without an ``iat`` a token's lifetime is judged
# from now alone, which refuses a far ``exp`` all the same.
REQUIRED_CLAIMS = ("sub", "role", "exp")
# Ids become NATS subject tokens (``drivers.<id>.online``) and database keys: no dots,
# wildcards or whitespace, and no longer than the columns that hold them.
SUB_PATTERN = r"^[A-Za-z0-9_@:|+-]{1,128}$"

# What a refusal says: a small fixed set, never the decoder's own words.
MALFORMED = "Malformed token: not a JWT"
BAD_SIGNATURE = "Bad token signature: it must be HS256, signed with this server's secret"
EXPIRED = "The token has expired"
NOT_YET_VALID = "The token is not valid yet: its iat or nbf is in the future"
BAD_SUB = "Malformed token: the claim sub must be 1-128 letters, digits or _-@:|+"
UNKNOWN_ROLE = f"Unknown role in the token: it must be {', '.join(ROLES)}"


def too_long(max_ttl_s: int) -> str:
    return (f"The token lives too long: at most {max_ttl_s} seconds from its iat, "
            "and from now")


def missing_claim(name: str) -> str:
    return f"The token lacks the claim {name}"


def not_a_number(name: str) -> str:
    return f"Malformed token: the claim {name} must be a number (seconds since 1970)"


class TokenRefused(ValueError):
    """A token that is not good, and what is wrong with it, said to its bearer."""


def issue_token(secret: str, role: Role, sub: str, ttl_s: int = 3600) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "role": role, "iat": now, "exp": now + ttl_s}, secret,
                      algorithm=ALGORITHM)


def read_token(token: str, secret: str, max_ttl_s: int = DEFAULT_MAX_TTL_S,
               now: float | None = None) -> tuple[str, Role]:
    """The ``sub`` and ``role`` of a good token; else ``TokenRefused`` saying why: a
    token that does not parse, is not signed HS256 with ``secret``, lacks a claim, has
    expired, is not valid yet, lives longer than ``max_ttl_s`` from its ``iat`` or from
    now, or names a role or a ``sub`` the API does not know."""
    claims = _signed_claims(token, secret)
    _check_times(claims, max_ttl_s, time.time() if now is None else now)
    role, sub = claims["role"], claims["sub"]
    if not isinstance(role, str) or role not in ROLES:
        raise TokenRefused(UNKNOWN_ROLE)
    if not isinstance(sub, str) or not re.fullmatch(SUB_PATTERN, sub):
        raise TokenRefused(BAD_SUB)
    return sub, role


def _signed_claims(token: str, secret: str) -> dict[str, Any]:
    """The claims of a token signed HS256 with ``secret``, each required one present."""
    try:
        payload = jwt.PyJWS().decode(token, secret, algorithms=[ALGORITHM])
    except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError):
        raise TokenRefused(BAD_SIGNATURE) from None
    except (jwt.PyJWTError, ValueError, TypeError, OverflowError):
        # not three base64url parts, a header that is not JSON, bytes not UTF-8, ...
        raise TokenRefused(MALFORMED) from None
    try:
        claims = json.loads(payload)
    except (ValueError, TypeError, RecursionError):
        raise TokenRefused(MALFORMED) from None
    if not isinstance(claims, dict):
        raise TokenRefused(MALFORMED)
    for name in REQUIRED_CLAIMS:
        if name not in claims:
            raise TokenRefused(missing_claim(name))
    return claims


def _number(claims: dict[str, Any], name: str) -> float | int:
    value = claims[name]
    # RFC 7519's NumericDate is a JSON number: not a string spelling one, not a boolean,
    # not NaN or Infinity (which Python's JSON reader takes)
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            (isinstance(value, float) and not math.isfinite(value)):
        raise TokenRefused(not_a_number(name))
    return value


def _check_times(claims: dict[str, Any], max_ttl_s: int, now: float) -> None:
    exp = _number(claims, "exp")
    iat = _number(claims, "iat") if "iat" in claims else None
    nbf = _number(claims, "nbf") if "nbf" in claims else None
    if exp <= now:
        raise TokenRefused(EXPIRED)
    if any(t is not None and t > now + LEEWAY_S for t in (iat, nbf)):
        raise TokenRefused(NOT_YET_VALID)
    # sums, not differences: an int too large for a float cannot be taken from one
    if (iat is not None and exp > iat + max_ttl_s) or exp > now + max_ttl_s + LEEWAY_S:
        raise TokenRefused(too_long(max_ttl_s))
