"""Persisting the validator's :class:`ScoreState` so a restart keeps its EMA.

Writes are atomic (temp file in the same folder, fsync, rename, fsync the folder): a crash or
power cut mid-save leaves either the old state or the new one, never a torn file that would
zero every miner's history on the next start.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from hivetrain.atomic import atomic_write_text
from hivetrain.errors import OperatorError
from hivetrain.validator.scoring import ScoreState

SCORES_FILE = "scores.json"  # in the validator's run directory


class StateError(OperatorError, ValueError):
    """The state file exists but cannot be read as a score state; the message names the file."""


def save_atomic(path: str | os.PathLike, state: ScoreState) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, state.to_json())


def load(path: str | os.PathLike) -> ScoreState:
    """The saved state, or an empty one when there is no file yet (a first start).

    :raises StateError: when the file is there but unreadable; a validator should stop rather
        than silently restart every miner from the floor. The file is never touched: the message
        gives the command that moves it aside, for the operator to run.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ScoreState()
    except OSError as error:
        raise StateError(f"cannot read {path} ({error.strerror}); fix its permissions or "
                         f"--neuron.dir") from None
    try:
        return ScoreState.from_json(data.decode("utf-8"))
    except ValueError as error:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
        aside = path.with_name(f"{path.name}.corrupt.{time.strftime('%Y%m%d-%H%M%S')}")
        raise StateError(f"{path} is not a score state ({error}); it was left untouched. Restore "
                         f"it from a backup, or move it aside to start from empty scores: "
                         f"mv {path} {aside}") from None
