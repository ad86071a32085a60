"""The options several ``ridehail`` commands offer, spelled once: ``--json`` in its three
forms (a report on stdout, one JSON object per line, or a file of figures), ``-v`` and
``--data-dir``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


def json_option(text: str) -> Any:
    """The ``--json`` option, with ``text`` saying what it gives for the command that
    offers it."""
    return typer.Option("--json", help=text)


# A command's result as one JSON document on stdout instead of the text for a person.
AsJson = Annotated[bool, json_option("print the result as JSON")]
# A list as JSON Lines on stdout: one object per item, for `| jq` or `| grep`.
JsonLines = Annotated[bool, json_option("one JSON object per line")]
# The figures of a long run written to this file, besides the text on the terminal.
JsonFile = Annotated[Path | None, json_option("also write the results to this file")]

Verbose = Annotated[bool, typer.Option(
    "--verbose", "-v", help="log what it does (INFO), not only warnings")]
DataDir = Annotated[Path | None, typer.Option(
    "--data-dir", help="the folder its servers and database keep their data in "
    "(RIDEHAIL_DATA_DIR)")]
