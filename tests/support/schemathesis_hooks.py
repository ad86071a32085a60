"""Schemathesis hooks for ``tests/integration/test_api_schemathesis.py`` (loaded by the
``st`` process through ``SCHEMATHESIS_HOOKS``): a valid token for each operation, of the role the
operation is for, so the fuzzing gets past authentication and reaches the handlers."""

from __future__ import annotations

import os
import re
from typing import Any

import schemathesis

from api.auth import issue_token

DRIVER_ACTIONS = re.compile(r"^/v1/rides/\{ride_id\}/(accept|decline|arrive|start|complete)$")


def role_for(path: str) -> str:
    if path.startswith("/v1/admin"):
        return "admin"
    if path.startswith("/v1/drivers") or DRIVER_ACTIONS.match(path):
        return "driver"
    return "rider"


@schemathesis.auth(refresh_interval=None)
class RoleTokens:
    """A fresh token per case, for ``st-<role>``, signed with the stack's secret."""

    def get(self, case: Any, context: Any) -> str:
        role = role_for(context.operation.path)
        return issue_token(os.environ["RIDEHAIL_JWT_SECRET"], role, f"st-{role}")  # type: ignore[arg-type]

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@schemathesis.check
def problem_titles(ctx: Any, response: Any, case: Any) -> None:
    """Every problem answer has the RFC 9457 shape: with type about:blank, the status's
    reason phrase as its title."""
    from tests.support.problems import problem_shape_errors

    content_type = (response.headers.get("content-type") or [""])[0]  # name -> values
    errors = problem_shape_errors(response.status_code, content_type, response.content)
    if errors:
        raise AssertionError("; ".join(errors))
