"""Rate limits: a 429 problem with ``Retry-After`` once a caller has made too many
requests in the current window.

Limited: every write (``POST``, ``PUT``, ``PATCH``, ``DELETE`` under ``/v1``), with
quotes (``POST /v1/quotes``) counted apart, per token subject; a request without a
valid token (which the route refuses anyway) and ``/readyz`` (which asks the database,
NATS and Temporal) per client address. Reads are not limited (live streams are capped in
api.fanout); nor are ``/healthz`` and ``/metrics``, which do no work and must answer when
the database does not.

The counters are rows of ``rate_limit_hits``, one per key, counted in fixed windows by
one ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` (SQLite and PostgreSQL), so the
limits hold across every API process behind a balancer. A row is its key's latest
window; housekeeping deletes the rows whose window has passed (``store.prune``,
``RIDEHAIL_RATE_LIMIT_KEEP_S``), so no request pays for it. If the database cannot count,
the request goes on: a limit must not turn a database hiccup into refusals of its own
(the route itself then answers 503 if it needs the database).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from sqlalchemy import Insert, case
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import remember_caller, verify
from api.problems import Problem, problem_response
from infra.config import Settings
from store.db import Database, table_of
from store.tables import RateLimitHit

log = logging.getLogger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Limit:
    key: str
    allowed: int


def limited(method: str, path: str) -> bool:
    """Whether a request is counted at all."""
    return path == "/readyz" or (method in WRITE_METHODS and path.startswith("/v1/"))


def limit_for(path: str, subject: str | None, address: str, settings: Settings) -> Limit:
    """Which counter a counted request (``limited``) goes on, and how many the window
    allows."""
    if path == "/readyz" or subject is None:
        return Limit(f"address:{address}", settings.rate_limit_anonymous)
    if path == "/v1/quotes":
        return Limit(f"quotes:{subject}", settings.rate_limit_quotes)
    return Limit(f"writes:{subject}", settings.rate_limit_writes)


def verified_subject(scope: Scope, secret: str, max_ttl_s: int) -> str | None:
    """The ``sub`` of the request's bearer token if the route would accept the token,
    else None (the route says what is wrong). Verified here too: counting an unverified
    ``sub`` would let anyone use up another rider's allowance. The caller it names is
    kept with the request (``api.auth.remember_caller``), so the route does not verify
    the same token again."""
    headers = dict(scope.get("headers") or [])
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        who = verify(token, secret, max_ttl_s)
    except Problem:
        return None
    remember_caller(scope, token, who)
    return who.sub


_STATEMENTS: dict[str, Insert] = {}


def _count_statement(dialect: str) -> Insert:
    """``INSERT … ON CONFLICT (key) DO UPDATE``: a new window starts at one, the current
    one counts up; returns the count. Built once per database kind."""
    stmt = _STATEMENTS.get(dialect)
    if stmt is None:
        module = postgresql if dialect == "postgresql" else sqlite
        table = table_of(RateLimitHit)
        insert = module.insert(table)
        stmt = insert.on_conflict_do_update(
            index_elements=["key"],
            set_={
                "hits": case((table.c.window_start == insert.excluded.window_start,
                              table.c.hits + 1), else_=1),
                "window_start": insert.excluded.window_start,
            },
        ).returning(table.c.hits)
        _STATEMENTS[dialect] = stmt
    return stmt


def count_hit(session: Session, key: str, window_start: int) -> int:
    """Count one request on ``key`` in the window starting at ``window_start``; the
    number counted in that window so far, this one included."""
    dialect = session.get_bind().dialect.name
    hits = session.execute(_count_statement(dialect),
                           {"key": key, "window_start": window_start, "hits": 1}).scalar_one()
    return int(hits)


class RateLimiter:
    """Counts requests in the shared database."""

    def __init__(self, db: Database, window_s: int) -> None:
        self.db = db
        self.window_s = window_s

    async def retry_after(self, limit: Limit) -> int | None:
        """Count a request; None if it is within the limit, else the seconds until the
        window ends."""
        now = time.time()
        window_start = int(now // self.window_s) * self.window_s
        try:
            hits = await self.db.write(
                lambda s: count_hit(s, limit.key, window_start))
        except Exception as e:  # noqa: BLE001 — see the module's docstring
            log.warning("rate limit not counted (%s): %r", limit.key, e)
            return None
        if hits <= limit.allowed:
            return None
        return max(1, math.ceil(window_start + self.window_s - now))


class RateLimit:
    """Pure ASGI middleware counting each request ``limited`` names on its ``limit_for``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        services = getattr(scope["app"].state, "services", None)
        if services is None:  # not started yet
            await self.app(scope, receive, send)
            return
        settings: Settings = services.settings
        limit = self._limit(scope, settings)
        if limit is not None:
            limiter = RateLimiter(services.db, settings.rate_limit_window_s)
            wait_s = await limiter.retry_after(limit)
            if wait_s is not None:
                response = problem_response(
                    429, f"Too many requests: at most {limit.allowed} of these every "
                         f"{settings.rate_limit_window_s} s; retry in {wait_s} s",
                    headers={"Retry-After": str(wait_s)})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _limit(scope: Scope, settings: Settings) -> Limit | None:
        method, path = scope["method"], scope["path"]
        if not limited(method, path):
            return None  # a read: no token to verify here (the route does)
        subject = (None if path == "/readyz"
                   else verified_subject(scope, settings.require_jwt_secret(),
                                         settings.jwt_max_ttl_s))
        client = scope.get("client")
        return limit_for(path, subject, client[0] if client else "unknown", settings)
