"""The ``ridehail`` command (CONTRACT.md section 1): the root Typer app, which puts
together the commands of ``ridehail.commands``, one module per group."""

from __future__ import annotations

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


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # python -m ridehail.cli
    app()
