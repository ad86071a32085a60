"""Signing bearer tokens (HS256, claims ``sub``, ``role``, ``exp``); the API verifies
them in api/auth.py. Kept apart from the API so ``ridehail token`` starts quickly."""

from __future__ import annotations

import time
from typing import Literal

import jwt

Role = Literal["rider", "driver", "admin"]
ROLES: tuple[Role, ...] = ("rider", "driver", "admin")
ALGORITHM = "HS256"


def issue_token(secret: str, role: Role, sub: str, ttl_s: int = 3600) -> str:
    now = int(time.time())
    return jwt.encode({"sub": sub, "role": role, "iat": now, "exp": now + ttl_s}, secret,
                      algorithm=ALGORITHM)
