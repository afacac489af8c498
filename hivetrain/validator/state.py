"""Persisting the validator's :class:`ScoreState` so a restart keeps its EMA.

Writes are atomic (temp file in the same folder, fsync, rename, fsync the folder): a crash or
power cut mid-save leaves either the old state or the new one, never a torn file that would
zero every miner's history on the next start.
"""

from __future__ import annotations

import os
from pathlib import Path

from hivetrain.atomic import atomic_write_text
from hivetrain.validator.scoring import ScoreState


class StateError(ValueError):
    """The state file exists but cannot be read as a score state; the message names the file."""


def save_atomic(path: str | os.PathLike, state: ScoreState) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, state.to_json())


def load(path: str | os.PathLike) -> ScoreState:
    """The saved state, or an empty one when there is no file yet (a first start).

    :raises StateError: when the file is there but unreadable; a validator should stop rather
        than silently restart every miner from the floor.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ScoreState()
    try:
        return ScoreState.from_json(text)
    except ValueError as error:  # json.JSONDecodeError is a ValueError
        raise StateError(f"{path}: {error}") from None
