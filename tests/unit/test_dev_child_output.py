"""How ``ridehail dev`` forwards its worker process's output."""

from __future__ import annotations

import asyncio

from infra.config import Settings
from ridehail.processes.devstack import ComponentProcess


async def test_output_is_forwarded_past_blank_lines_and_the_running_line_sets_ready(
    capsys,  # type: ignore[no-untyped-def]
) -> None:
    child = ComponentProcess("worker", Settings())
    out = asyncio.StreamReader()
    for line in (b"starting\n", b"\n", "ridehail worker running — Ctrl-C to stop\n".encode(),
                 b"later\n"):
        out.feed_data(line)
    out.feed_eof()
    await child._forward(out)
    assert child.ready.is_set()
    assert capsys.readouterr().err.splitlines() == ["worker | starting", "worker | ",
                                                    "worker | later"]
