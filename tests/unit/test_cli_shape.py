"""The ``ridehail`` command as people expect it: ``--version`` says the package's version,
every option says what it is for, help text keeps its sentences whole, and only the
commands that use the servers say whose servers they use."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from ridehail.cli import app
from ridehail.terminal import settings_or_exit

USING_DEV = "using the servers of the ridehail dev running on"


def _commands(command: Any, path: str = "ridehail") -> Iterator[tuple[str, Any]]:
    """Every command and group under ``command``, with the words that run it."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, f"{path} {name}")


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_the_walk_sees_the_commands_and_groups() -> None:
    names = {path for path, _ in COMMANDS}
    assert {"ridehail dev", "ridehail token", "ridehail streams migrate",
            "ridehail dlq list", "ridehail projections rebuild"} <= names


def test_version_is_the_package_version() -> None:
    out = CliRunner().invoke(app, ["--version"])
    assert out.exit_code == 0, out.output
    assert out.output.strip() == f"ridehail {version('ridehail')}"
    assert version("ridehail") == "0.2.0"


def test_every_option_of_every_command_says_what_it_is_for() -> None:
    blank = [f"{path} {'/'.join(p.opts)}" for path, command in COMMANDS
             for p in command.params
             if p.param_type_name == "option" and not (p.help or "").strip()]
    assert blank == []


def test_help_text_has_no_line_break_inside_a_paragraph() -> None:
    broken = [path for path, command in COMMANDS
              for paragraph in (command.help or "").split("\n\n")
              if "\n" in paragraph.strip()]
    assert broken == []
    assert all(command.help for path, command in COMMANDS if path != "ridehail"), \
        [path for path, command in COMMANDS if not command.help]


@pytest.fixture
def running_dev(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir on which a ``ridehail dev`` (this process, alive) says where its
    servers are."""
    (tmp_path / "dev.json").write_text(json.dumps({
        "pid": os.getpid(), "nats_url": "nats://127.0.0.1:14222",
        "temporal_address": "127.0.0.1:17233"}))
    for name in list(os.environ):
        if name.startswith("RIDEHAIL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RIDEHAIL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("RIDEHAIL_JWT_SECRET", "s" * 32)
    return tmp_path


def test_commands_that_use_no_server_do_not_name_the_running_dev(
        running_dev: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runner = CliRunner()
    signed = runner.invoke(app, ["token", "--role", "rider", "--sub", "amy"])
    assert signed.exit_code == 0, signed.output
    histories = running_dev / "histories"
    histories.mkdir()
    replayed = runner.invoke(app, ["replay", "--dir", str(histories)])
    said = capsys.readouterr()
    assert USING_DEV not in signed.output + replayed.output + said.err + said.out


def test_commands_that_use_the_servers_name_the_running_dev(
        running_dev: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_or_exit()
    assert settings.nats_url == "nats://127.0.0.1:14222"
    assert USING_DEV in capsys.readouterr().err
