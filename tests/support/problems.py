"""What every problem answer of the API must look like (RFC 9457), checked on every
answer the tests' HTTP clients receive and every one the fuzzer provokes."""

from __future__ import annotations

import json
from typing import Any

PROBLEM_JSON = "application/problem+json"

# RFC 9110 section 15's reason phrases, written out here rather than taken from the code
# under test (or from http.HTTPStatus, whose phrases predate RFC 9110 on Python 3.11).
RFC9110_PHRASES = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 409: "Conflict",
    413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
    429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable",
}


def problem_shape_errors(status: int, content_type: str, body: bytes) -> list[str]:
    """What is wrong with an answer that is a problem document (nothing for others)."""
    if not content_type.startswith(PROBLEM_JSON):
        return []
    try:
        doc: dict[str, Any] = json.loads(body)
    except ValueError:
        return [f"{status}: a problem+json body that is not JSON: {body[:200]!r}"]
    errors = []
    if doc.get("status") != status:
        errors.append(f"{status}: status member {doc.get('status')!r}")
    if doc.get("type", "about:blank") == "about:blank":
        want = RFC9110_PHRASES.get(status)
        if doc.get("title") != want:
            errors.append(f"{status}: type about:blank with title {doc.get('title')!r}, "
                          f"not the status phrase {want!r}")
    if not doc.get("detail"):
        errors.append(f"{status}: no detail")
    return errors
