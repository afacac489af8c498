"""Proof of training: what each miner's update for one finished epoch verifiably did.

For epoch ``e`` the validator holds the global parameters ``G_e`` (its snapshots) and fetches
every miner's update ``u = G_e - theta`` (:mod:`hivetrain.validator.update_client`). It then
measures, on batches it draws itself:

* the *assigned gain*: ``loss(G_e) - loss(G_e - u)`` on k batches drawn from the first ``n``
  samples of the miner's assigned stream for ``e``, ``n`` being the samples it claims;
* the *random gain*: the same on k random held-out batches (never trained on by anyone);
* the cosine of ``u`` with every other miner's update of the same epoch (copies).

The rule that turns these facts into scores is :func:`hivetrain.validator.scoring.judge_updates`;
this module only measures, and never raises on non-finite values: a non-finite reference loss
at ``G_e`` marks the miner ``skipped``, a non-finite update or loss is a fact for the rule.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from hivetrain.data.tokens import derive_seed
from hivetrain.probe.compute import mean_loss, set_shifted, update_cosines
from hivetrain.validator.scoring import UpdateOutcome
from hivetrain.validator.update_client import MISSING, UpdateReply, fetch_updates

logger = logging.getLogger(__name__)


@dataclass
class CheckCost:
    """What checking one epoch cost, for the round record (docs/validation.md's budget)."""

    miners: int = 0
    seconds: float = 0.0
    fetch_seconds: float = 0.0
    bytes: int = 0


@dataclass
class FetchedUpdates:
    """The replies to one epoch's update requests: ``uid -> (reply | MISSING | None, reason)``."""

    epoch: int
    replies: dict
    seconds: float


def draw_samples(seed: int, claimed: int, k: int, batch_size: int) -> list[list[int]]:
    """``k`` batches of ``batch_size`` distinct sample indices out of the first ``claimed``
    (fewer batches when fewer samples were claimed; none for 0)."""
    if claimed <= 0 or k <= 0:
        return []
    count = min(claimed, k * batch_size)
    picks = np.random.default_rng(seed).choice(claimed, size=count, replace=False)
    chunks = np.array_split(picks, max(1, count // batch_size))
    return [sorted(int(i) for i in chunk) for chunk in chunks if len(chunk)]


class ContributionChecker:
    """Fetches and evaluates every miner's update for one epoch.

    :param model: a model of the swarm's architecture (the validator's reference model: this
        class loads snapshots into it).
    :param data: the run's data (``assigned_rows`` and ``probe_batch``).
    :param k: batches per side (assigned, random).
    """

    def __init__(self, model: torch.nn.Module, data, run_id: str, seq_len: int, batch_size: int,
                 k: int, timeout: float):
        self.model, self.data, self.run_id, self.seq_len = model, data, run_id, seq_len
        self.batch_size, self.k, self.timeout = batch_size, k, timeout
        self.trainable = [p for p in model.parameters() if p.requires_grad]

    async def fetch(self, keypair, targets: dict[int, tuple], epoch: int) -> FetchedUpdates:
        """Every target's update for ``epoch``; run beside the round's probes, so a miner that
        never answers costs the round one timeout, not two.

        :param targets: ``uid -> (uid, hotkey, ip, port)`` of the served miners.
        """
        started = time.monotonic()
        replies = await fetch_updates(keypair, list(targets.values()), epoch,
                                      [p.shape for p in self.trainable], self.timeout)
        return FetchedUpdates(epoch, replies, time.monotonic() - started)

    def evaluate(self, fetched: FetchedUpdates, hotkeys: dict[int, str], snapshot: dict,
                 seed: int) -> tuple[dict[int, UpdateOutcome], CheckCost]:
        """``uid -> UpdateOutcome`` for every fetched target, and what checking cost.

        :param snapshot: the validator's state dict of ``G`` at ``fetched.epoch``.
        :param seed: draws the batches (the validator derives it from the block hash).
        """
        started = time.monotonic()
        epoch = fetched.epoch
        cost = CheckCost(miners=len(fetched.replies), fetch_seconds=fetched.seconds)
        self.model.load_state_dict(snapshot)
        base = [p.detach().clone() for p in self.trainable]
        random_batches = [self.data.probe_batch(derive_seed(seed, "random", i) % 2**63,
                                                self.batch_size, self.seq_len)
                          for i in range(self.k)]
        random_before = mean_loss(self.model, random_batches)
        outcomes, vectors = {}, {}
        for uid, (reply, reason) in fetched.replies.items():
            if reply is None:
                outcomes[uid] = UpdateOutcome("unanswered", reason, expected_epoch=epoch)
            elif reply == MISSING:
                outcomes[uid] = UpdateOutcome("missing", reason, expected_epoch=epoch)
            else:
                cost.bytes += reply.nbytes
                outcomes[uid] = self._evaluate(reply, hotkeys[uid], epoch, base, random_batches,
                                               random_before, derive_seed(seed, "assigned", uid))
                if outcomes[uid].status == "ok":
                    vectors[uid] = reply.vector
        set_shifted(self.trainable, base)
        outcomes = _with_copies(outcomes, vectors)
        cost.seconds = fetched.seconds + time.monotonic() - started
        return outcomes, cost

    def _evaluate(self, reply: UpdateReply, hotkey: str, epoch: int, base, random_batches,
                  random_before: float, seed: int) -> UpdateOutcome:
        envelope = reply.envelope
        facts = dict(epoch=envelope.epoch, expected_epoch=epoch, samples=envelope.samples,
                     digest=envelope.digest)
        if envelope.epoch != epoch:
            return UpdateOutcome("ok", "stale", **facts)
        if not all(torch.isfinite(t).all() for t in reply.tensors):
            return UpdateOutcome("ok", "non-finite update", assigned_gain=math.nan, **facts)
        assigned = [self.data.assigned_rows(self.run_id, hotkey, epoch, rows, self.seq_len)
                    for rows in draw_samples(seed, envelope.samples, self.k, self.batch_size)]
        if not assigned:
            return UpdateOutcome("ok", "claims no samples", assigned_gain=0.0, random_gain=0.0,
                                 **facts)
        set_shifted(self.trainable, base)
        assigned_before = mean_loss(self.model, assigned)
        if not (math.isfinite(assigned_before) and math.isfinite(random_before)):
            return UpdateOutcome("skipped", f"not scored: reference loss at G_{epoch} is "
                                            f"{assigned_before}/{random_before}", **facts)
        set_shifted(self.trainable, base, reply.tensors)
        return UpdateOutcome("ok", **facts,
                             assigned_gain=assigned_before - mean_loss(self.model, assigned),
                             random_gain=random_before - mean_loss(self.model, random_batches))


def _with_copies(outcomes: dict[int, UpdateOutcome], vectors: dict[int, torch.Tensor]):
    """Each evaluated outcome with its cosine to every other evaluated update of this epoch."""
    cosines = update_cosines(vectors)
    return {uid: dataclasses.replace(outcome, cosines=cosines[uid]) if uid in cosines else outcome
            for uid, outcome in outcomes.items()}


def outcome_record(outcome: UpdateOutcome) -> dict:
    """The facts of one outcome for the round record (thresholds are measured from these)."""
    return {"status": outcome.status, "epoch": outcome.epoch, "samples": outcome.samples,
            "assigned_gain": outcome.assigned_gain, "random_gain": outcome.random_gain,
            "copy_of": outcome.copy_of, "copy_cosine": outcome.copy_cosine,
            "average_share": outcome.average_share, "detail": outcome.reason}
