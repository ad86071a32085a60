"""The ``ridehail`` command (CONTRACT.md section 1): the root Typer app, which puts
together the commands of ``ridehail.commands``, one module per group."""

from __future__ import annotations

import inspect
from importlib.metadata import version
from typing import Annotated

import typer

from ridehail.commands import (
    audit,
    bench,
    chaos,
    components,
    db,
    dlq,
    histories,
    projections,
    prune,
    replay,
    simulate,
    streams,
    tokens,
)

app = typer.Typer(help="ridehail: event-driven ride booking on Temporal and NATS JetStream.",
                  no_args_is_help=True, add_completion=False)

# The commands, in the order `ridehail --help` lists them; the groups follow.
app.command("dev")(components.dev)
app.command("token")(tokens.token)
app.command("api")(components.api)
app.command("worker")(components.worker)
app.command("consumers")(components.consumers)
app.command("relay")(components.relay)
app.command("bench")(bench.bench)
app.command("simulate")(simulate.simulate)
app.command("audit")(audit.audit)
app.command("prune")(prune.prune)
app.command("replay")(replay.replay)
app.command("chaos")(chaos.chaos)

app.add_typer(histories.app, name="histories")
app.add_typer(db.app, name="db")
app.add_typer(streams.app, name="streams")
app.add_typer(dlq.app, name="dlq")
app.add_typer(projections.app, name="projections")


def _show_version(wanted: bool) -> None:
    if wanted:
        print(f"ridehail {version('ridehail')}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_show_version, is_eager=True,
        help="print the version of ridehail and exit")] = False) -> None:
    """ridehail: event-driven ride booking on Temporal and NATS JetStream."""


def paragraphs(text: str) -> str:
    """``text`` (a docstring) with each paragraph on one line: the help panels show a
    docstring's line breaks as they are, which would break sentences in the middle."""
    return "\n\n".join(" ".join(p.split()) for p in inspect.cleandoc(text).split("\n\n"))


def _help_in_paragraphs(typer_app: typer.Typer) -> None:
    """Every command's help from its docstring, a paragraph a line (recursively)."""
    for command in typer_app.registered_commands:
        if command.help is None and command.callback is not None and command.callback.__doc__:
            command.help = paragraphs(command.callback.__doc__)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _help_in_paragraphs(group.typer_instance)


_help_in_paragraphs(app)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # python -m ridehail.cli
    app()
