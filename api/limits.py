"""Request body size limit: a body over ``MAX_BODY_BYTES`` is a 413 problem.

The largest legitimate body (a driver profile, or a cancellation with a 500-character
reason) is well under 4 KiB; refusing big bodies before they are parsed keeps a client
from making the API buffer and JSON-decode megabytes. A declared ``Content-Length`` over
the limit is refused without reading the body; a chunked body is counted as it arrives.
(FastAPI's own ``max_body_size`` answers a declared length with a plain-text 413; every
answer here is a problem document.)
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem_response

MAX_BODY_BYTES = 32 * 1024


class BodySizeLimit:
    """Pure ASGI middleware (not ``BaseHTTPMiddleware``, which would get in the way of
    streaming responses): reads the body up to the limit, then hands it on."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413, f"The request body is larger than {self.max_bytes} bytes")
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                too_big = False  # the server has already refused a malformed length
            if too_big:
                await self._refuse(scope, receive, send)
                return
        if declared is None and b"chunked" not in headers.get(b"transfer-encoding", b""):
            await self.app(scope, receive, send)  # no body at all
            return

        # Buffer the body (it is small, or we stop reading), then replay it; later
        # receive() calls go to the server, so disconnects still reach streaming routes.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
