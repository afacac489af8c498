"""The commands quoted in README.md and docs/*.md run on the pinned tools, so they cannot drift.

Every ``hivetrain ...`` and ``btcli ...`` command in a code block or an inline code span, and the
neuron flags after ``--`` of every ``pm2 start run_miner.sh|run_validator.sh`` line, is checked
offline: its (sub)command must answer ``--help``, and every ``--flag`` it uses must be one that
``--help`` lists. (issue 14: ``btcli subnets burn-cost --netuid N`` failed on the pinned btcli,
whose netuid is positional.)
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LAUNCHERS = {"run_miner.sh": "miner", "run_validator.sh": "validator"}


def quoted_commands(text: str) -> list[str]:
    """Shell lines of the fenced blocks (continuations joined, comments cut) and inline spans."""
    found, in_block, pending = [], False, ""
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            found += re.findall(r"`([^`]+)`", line)
            continue
        pending += " " + re.split(r"\s#\s", line)[0].strip()
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        found.append(pending)
        pending = ""
    return [" ".join(command.split()) for command in found]


def checked_commands() -> list[tuple[str, str, list[str]]]:
    """``(where, command, words)``: the doc lines to check, as the words of a hivetrain or btcli
    command line (placeholders like ``<NETUID>`` stand for one word)."""
    checked = []
    for doc in DOCS:
        for command in quoted_commands(doc.read_text()):
            words = re.sub(r"<[^>]*>", "X", command).replace("[", " ").replace("]", " ").split()
            launcher = next((w for w in words if w in LAUNCHERS), None)
            if words[:2] == ["pm2", "start"] and launcher and "--" in words:
                flags = [w for w in words[words.index("--") + 1:]
                         if not w.startswith("--autoupdate.")]
                checked.append((doc.name, command, ["hivetrain", LAUNCHERS[launcher], *flags]))
            elif words[0] in ("hivetrain", "btcli") and "|" not in command and len(words) > 1:
                checked.append((doc.name, command, words))
    return checked


def subcommand(words: list[str]) -> tuple[str, ...]:
    """The command path: the leading lowercase words, up to the first flag or argument."""
    path = []
    for word in words[1:]:
        if not re.fullmatch(r"[a-z][a-z-]*", word) or word == "X":
            break
        path.append(word)
    if words[0] == "hivetrain" and path[:1] == ["generate"]:
        path = path[:1]  # its model folder is a lowercase positional
    return tuple(path)


@functools.lru_cache(maxsize=None)
def help_text(tool: str, path: tuple[str, ...]) -> str:
    """``tool *path --help``, run in this process on the argparse parser and the typer app the two
    commands run (a btcli process per command spent ~1.4 s importing: 17 s of this module's 23).
    Wide lines, as in a 250-column terminal, so no flag is wrapped at one of its hyphens."""
    with mock.patch.dict(os.environ, {"COLUMNS": "250"}):
        if tool == "btcli":
            from bittensor.cli.main import app
            from typer.testing import CliRunner

            result = CliRunner().invoke(app, [*path, "--help"], terminal_width=250)
            assert result.exit_code == 0, f"btcli {' '.join(path)} --help failed: {result.output}"
            return result.output
        from hivetrain.cli import main

        shown = io.StringIO()
        with contextlib.redirect_stdout(shown), pytest.raises(SystemExit) as ended:
            main([*path, "--help"])
        assert ended.value.code == 0, f"hivetrain {' '.join(path)} --help failed"
        return shown.getvalue()


COMMANDS = checked_commands()


def test_the_docs_quote_commands_to_check():
    tools = {words[0] for _, _, words in COMMANDS}
    assert tools == {"hivetrain", "btcli"} and len(COMMANDS) > 30


@pytest.mark.parametrize("where, command, words", COMMANDS,
                         ids=[f"{where}:{command[:60]}" for where, command, _ in COMMANDS])
def test_quoted_command_matches_the_tool(where, command, words):
    text = help_text(words[0], subcommand(words))
    listed = set(re.findall(r"(?<![\w-])--[a-z][\w.-]*", text))
    for flag in (w.split("=")[0] for w in words if w.startswith("--") and w != "--"):
        assert flag in listed, f"{where}: `{command}` uses {flag}, which " \
                               f"`{words[0]} {' '.join(subcommand(words))} --help` does not list"
