"""Which miners' updates one validator checks for an epoch when it cannot check them all.

Checking an update costs the validator a download of the whole update (497 MB on ``gpt2``) and
``2 x k`` forward passes before and after applying it (docs/validation.md has the measured cost
per miner). When ``miners x seconds per miner`` exceeds ``--validator.update_budget``, the
validator checks a rotating subset instead:

* the miners are put in an order that depends on the validator's hotkey only (sha256 of hotkey
  and uid), so two validators check different miners in the same epoch and together cover more
  of the subnet than one;
* the order is cut into ``cycle = ceil(miners / capacity)`` interleaved groups, each of at most
  ``capacity`` miners, so the budget holds;
* which group an epoch checks is drawn from the block hash of the round that checks it (after
  the miners trained that epoch and published their updates), not from the epoch number: with
  ``e mod cycle`` a miner knew in advance the epochs it would be checked in and could train only
  those (``dodger`` in tests/helpers/adversarial_miner.py, docs/validation.md). Each miner is
  checked in an epoch with probability ``1 / cycle`` whatever it did before;
* a miner not checked this epoch keeps its last verdict for at most :func:`verdict_epochs`
  epochs (so a verdict never outlives the rotation that should have renewed it by much).

Pure functions and one small estimator; the validator loop does the fetching and judging.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Iterable, Optional

# Until the validator has timed a check it cannot know what a miner costs; it checks at most
# this many miners in its first check, then sizes the next ones from the measurement.
FIRST_CHECK_MINERS = 8
COST_ALPHA = 0.3  # weight of the newest check in the per-miner cost estimate


@dataclass(frozen=True)
class Plan:
    """The miners one epoch's check covers.

    :param selected: uids to check this epoch, in the validator's order.
    :param cycle: epochs it takes to check every miner once (1: everyone every epoch).
    :param phase: which of the ``cycle`` groups this epoch is.
    """

    selected: list[int]
    cycle: int
    phase: int


def order(uids: Iterable[int], validator_hotkey: str) -> list[int]:
    """``uids`` in the validator's own fixed order (independent of the epoch and of the set)."""
    return sorted(set(uids), key=lambda uid: hashlib.sha256(
        f"hivetrain-rotation:{validator_hotkey}:{uid}".encode()).digest())


def plan(uids: Iterable[int], draw: int, validator_hotkey: str, capacity: int) -> Plan:
    """The miners to check for one epoch when at most ``capacity`` fit in the budget.

    :param draw: picks the group; the validator derives it from the checking round's block
        hash, which the miners cannot know while they train the epoch.
    :param capacity: miners one check may cover (at least 1 is always checked).
    """
    ordered = order(uids, validator_hotkey)
    if not ordered:
        return Plan([], 1, 0)
    capacity = max(1, capacity)
    cycle = math.ceil(len(ordered) / capacity)
    phase = draw % cycle
    # Interleaved, not consecutive slices: the groups differ in size by at most one, so each is
    # at most ceil(n / cycle) <= capacity.
    return Plan([uid for i, uid in enumerate(ordered) if i % cycle == phase], cycle, phase)


def verdict_epochs(cycle: int) -> int:
    """How many epochs an unchecked miner's last verdict stands: two rotations. Groups are
    drawn at random, so a miner waits ``cycle`` epochs for its next check on average and goes
    unchecked for ``2 x cycle`` with probability ``(1 - 1/cycle) ** (2 x cycle)`` (6 % at 2,
    under 14 % at any cycle); then it is judged by its probe alone until that check."""
    return 2 * max(1, cycle)


def keep_verdicts(verdicts: dict[int, tuple], checked_epoch: int, cycle: int) -> dict[int, tuple]:
    """The verdicts still standing at ``checked_epoch``; each verdict's record carries the
    ``checked_epoch`` it was made at (``(score, reason, record)`` as the validator keeps them)."""
    oldest = checked_epoch - verdict_epochs(cycle)
    return {uid: verdict for uid, verdict in verdicts.items()
            if verdict[2].get("checked_epoch", checked_epoch) >= oldest}


class CheckBudget:
    """Turns ``--validator.update_budget`` seconds into a number of miners per check.

    :param budget: seconds one epoch's check may take (0: no limit, every miner every epoch).
    """

    def __init__(self, budget: float):
        self.budget = budget
        self.per_miner: Optional[float] = None  # EMA of measured seconds per checked miner

    def capacity(self, miners: int) -> int:
        """Miners the next check may cover, out of ``miners`` served."""
        if self.budget <= 0 or miners <= 0:
            return miners
        if self.per_miner is None:
            return min(miners, FIRST_CHECK_MINERS)
        return max(1, min(miners, int(self.budget // max(self.per_miner, 1e-6))))

    def record(self, miners: int, seconds: float) -> None:
        """Fold a finished check (``miners`` checked in ``seconds``) into the estimate."""
        if miners <= 0 or not math.isfinite(seconds):
            return
        measured = seconds / miners
        self.per_miner = measured if self.per_miner is None else \
            (1 - COST_ALPHA) * self.per_miner + COST_ALPHA * measured
