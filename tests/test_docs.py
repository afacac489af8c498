"""The commands quoted in README.md and docs/*.md run on the pinned tools, so they cannot drift.

Every ``hivetrain ...`` and ``btcli ...`` command in a code block or an inline code span, and the
neuron flags after ``--`` of every ``pm2 start run_miner.sh|run_validator.sh`` line, is checked
offline: its (sub)command must answer ``--help``, and every ``--flag`` it uses must be one that
``--help`` lists. (issue 14: ``btcli subnets burn-cost --netuid N`` failed on the pinned btcli,
whose netuid is positional.)
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BTCLI = Path(sys.executable).with_name("btcli")
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
    program = [sys.executable, "-m", "hivetrain"] if tool == "hivetrain" else [str(BTCLI)]
    result = subprocess.run([*program, *path, "--help"], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "COLUMNS": "250"})
    assert result.returncode == 0, f"{tool} {' '.join(path)} --help failed: {result.stderr}"
    return result.stdout


COMMANDS = checked_commands()


def test_the_docs_quote_commands_to_check():
    tools = {words[0] for _, _, words in COMMANDS}
    assert tools == {"hivetrain", "btcli"} and len(COMMANDS) > 30


@pytest.mark.parametrize("where, command, words", COMMANDS,
                         ids=[f"{where}:{command[:60]}" for where, command, _ in COMMANDS])
def test_quoted_command_matches_the_tool(where, command, words):
    if words[0] == "btcli" and not BTCLI.exists():
        pytest.skip("btcli is not installed next to this python")
    text = help_text(words[0], subcommand(words))
    listed = set(re.findall(r"(?<![\w-])--[a-z][\w.-]*", text))
    for flag in (w.split("=")[0] for w in words if w.startswith("--") and w != "--"):
        assert flag in listed, f"{where}: `{command}` uses {flag}, which " \
                               f"`{words[0]} {' '.join(subcommand(words))} --help` does not list"
