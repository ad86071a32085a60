"""Request header limits: headers over ``MAX_HEADER_BYTES`` are a 431 problem.

Two places, because neither suffices alone:

- ``CappedHeadersProtocol`` (the HTTP protocol ``ridehail api`` serves with): uvicorn's
  httptools parser keeps a request's head in memory until it is complete, with no limit
  (a 32 MB header was read whole). This counts the head's bytes as they arrive and, past
  ``MAX_HEAD_BYTES``, answers 431 and closes the connection: a 1 MB header costs at most
  one read (64 KiB to 256 KiB) beyond the limit, and never reaches the app.
- ``HeaderSizeLimit`` (ASGI middleware): a head that arrived in full is refused if its
  header names and values add up to more than ``MAX_HEADER_BYTES`` — the exact limit, on
  any server.

A browser's or app's headers (a bearer token, cookies, Accept-*) are well under 8 KiB.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.problems import PROBLEM_JSON, problem_response, title_of

MAX_HEADER_BYTES = 16 * 1024
# The whole head (request line and headers, as sent): a little room over the above.
MAX_HEAD_BYTES = 2 * MAX_HEADER_BYTES
# How long a refused connection is drained before it is closed.
REFUSED_LINGER_S = 1.0
TOO_LARGE = (f"The request's headers are larger than {MAX_HEADER_BYTES} bytes; send "
             "fewer or smaller ones")


class HeaderSizeLimit:
    """Pure ASGI middleware: 431 for a request whose headers add up to too much."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_HEADER_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            size = sum(len(name) + len(value) for name, value in scope.get("headers") or ())
            if size > self.max_bytes:
                await problem_response(431, TOO_LARGE)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _raw_431() -> bytes:
    body = json.dumps({"type": "about:blank", "title": title_of(431), "status": 431,
                       "detail": TOO_LARGE}).encode()
    return (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: " + PROBLEM_JSON.encode() + b"\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body)


class CappedHeadersProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request head over ``MAX_HEAD_BYTES``
    while it arrives (``uvicorn.Config(http=CappedHeadersProtocol)``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True
        self._head_bytes = 0
        self._head_ended = False
        self._refused = False

    def on_headers_complete(self) -> None:
        self._reading_head, self._head_ended = False, True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._reading_head, self._head_bytes = True, 0  # the next request's head

    def data_received(self, data: bytes) -> None:
        # Counted after parsing: a read that holds the end of a head (and perhaps a
        # body) is not counted; one still wholly inside a head is.
        if self._refused:
            return  # discarded, until the connection closes (see _refuse)
        self._head_ended = False
        super().data_received(data)
        if not self._reading_head or self._head_ended or self.transport.is_closing():
            return
        self._head_bytes += len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            self._refuse()

    def _refuse(self) -> None:
        """Answer 431 and end the connection. Closing at once, with the rest of the head
        unread, would make the kernel reset the connection and the client would never
        read the answer: so say we are done sending, discard what still arrives, and
        close a moment later."""
        self.logger.warning("refused a request head over %d bytes", MAX_HEAD_BYTES)
        self._refused = True
        self.transport.write(_raw_431())
        if self.transport.can_write_eof():
            self.transport.write_eof()
        asyncio.get_running_loop().call_later(REFUSED_LINGER_S, self.transport.close)
