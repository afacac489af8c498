"""Atomic checkpoints of the miner's model and optimizer, resumed on restart.

A checkpoint is written to a temporary file in the same folder and renamed over the old one, so a
crash mid-write leaves the previous checkpoint intact. A checkpoint of another run (other
run_id) or one that cannot be read is never deleted: it is moved aside with a log line saying
where, and the miner starts from the swarm instead.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hivetrain.atomic import atomic_write
logger = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"


@dataclass
class Checkpoint:
    run_id: str
    epoch: int
    samples: int
    model: dict
    optimizer: dict


def save_checkpoint(run_dir: Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` atomically as ``run_dir/checkpoint.pt``; returns its path."""
    path = run_dir / CHECKPOINT_NAME
    atomic_write(path, lambda handle: torch.save(checkpoint.__dict__, handle))
    return path


def load_checkpoint(run_dir: Path, run_id: str) -> Checkpoint | None:
    """The checkpoint of this run, or None when there is none usable (nothing is deleted)."""
    path = run_dir / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        fields = torch.load(path, map_location="cpu", weights_only=False)
        checkpoint = Checkpoint(**fields)
    except Exception as error:  # pickle, zip and key errors all mean "unreadable"
        aside = _move_aside(path, "corrupt")
        logger.warning("checkpoint %s is unreadable (%s); moved to %s, starting from the swarm",
                       path, type(error).__name__, aside)
        return None
    if checkpoint.run_id != run_id:
        aside = _move_aside(path, checkpoint.run_id)
        logger.warning("checkpoint %s belongs to run %s, not %s; moved to %s", path,
                       checkpoint.run_id, run_id, aside)
        return None
    return checkpoint


def _move_aside(path: Path, label: str) -> Path:
    aside = path.with_name(f"{path.name}.{label}.{int(time.time())}")
    os.replace(path, aside)
    return aside
