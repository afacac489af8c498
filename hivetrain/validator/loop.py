"""One validator round, top to bottom: metagraph, model, probes, verification, scores, weights.

Each miner gets its own held-out batch and gradient coordinates, drawn from the current block
hash, the validator's hotkey and the miner's uid, so no miner can answer with another's work or
precompute an answer. The validator recomputes every probe on its own copy of the swarm model
and scores with the subnet's rule (1.0 / 0.3 / 0.1, see :mod:`hivetrain.validator.scoring`).

The swarm steps every few seconds on small models, so a miner's answer may come from the epoch
just before or just after the validator's. One optimizer step changes the gradient at a
coordinate a lot (measured cosine between adjacent epochs: -0.4 to 0.9), so the validator keeps
the parameters of the recent epochs and recomputes each answer at the epoch the miner reports;
whether that epoch is recent enough is a separate check (``--validator.max_epoch_lag``).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from hivetrain.chain import Chain
from hivetrain.config import ValidatorConfig
from hivetrain.data.tokens import derive_seed
from hivetrain.model.inputs import model_inputs, request_fields, request_inputs
from hivetrain.model.probe import cosine, probe_loss_and_grad
from hivetrain.protocol import ProbeRequest
from hivetrain.telemetry import Telemetry
from hivetrain.validator import state as score_store
from hivetrain.validator.prober import ProbeReply, probe_miners
from hivetrain.validator.scoring import ProbeOutcome, Tolerances, classify, normalise, update_ema

logger = logging.getLogger(__name__)

SCORES_FILE = "scores.json"
N_COORDS = 64


@dataclass
class RoundResult:
    uid: int
    hotkey: str
    responded: bool
    epoch: int | None
    loss: float
    reference_loss: float
    cosine: float
    score: float
    ema: float
    reason: str


class Validator:
    """Runs rounds every ``--validator.interval`` seconds until :attr:`stop` is set.

    :param optimizer: a swarm optimizer (see :func:`hivetrain.swarm.optimizer.make_optimizer`)
        on the swarm's run_id that never steps; it only loads the swarm-global state from peers
        when the swarm's epoch moves on.
    """

    def __init__(self, cfg: ValidatorConfig, chain: Chain, uid: int, model: torch.nn.Module,
                 optimizer, data, seq_len: int, telemetry: Telemetry, run_dir: Path):
        self.cfg, self.chain, self.uid, self.model, self.opt = cfg, chain, uid, model, optimizer
        self.data, self.seq_len, self.telemetry = data, seq_len, telemetry
        self.scores_path = run_dir / SCORES_FILE
        self.scores = score_store.load(self.scores_path)
        self.tolerances = Tolerances(max_epoch_lag=cfg.max_epoch_lag,
                                     loss_rel_tol=cfg.loss_tolerance, min_cosine=cfg.min_cosine)
        self.last_weights_block = -math.inf
        self.stop = threading.Event()
        self.heldout = data.heldout_batches(2, cfg.probe_batch_size, seq_len)
        self.reference_model = copy.deepcopy(model)
        self.snapshots: dict[int, dict] = {}  # epoch -> parameters, for the recent epochs only

    def run(self) -> None:
        while not self.stop.is_set():
            self.run_round()
            self.stop.wait(self.cfg.interval)  # the round cadence; wakes at once on stop

    def sync_model(self) -> int:
        """Load the swarm-global state when the swarm is ahead and remember its parameters."""
        if self.opt.tracker.global_epoch > self.opt.local_epoch:
            self.opt.load_global_state()
            logger.info("loaded swarm state at epoch %d", self.opt.local_epoch)
        epoch = self.opt.local_epoch
        if epoch not in self.snapshots:
            self.snapshots[epoch] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        for old in [e for e in self.snapshots if e < epoch - self.cfg.max_epoch_lag]:
            del self.snapshots[old]
        return epoch

    def run_round(self) -> list[RoundResult]:
        metagraph = self.chain.metagraph(refresh=True)
        epoch = self.sync_model()
        block = self.chain.block
        block_hash = self.chain.block_hash(block)
        uids = [uid for uid in metagraph.uids if uid != self.uid]
        requests = {uid: self.make_request(block_hash, uid, epoch) for uid in uids}
        targets = {uid: _target(uid, metagraph.hotkeys[uid], metagraph.axons[uid]) for uid in uids}
        replies = asyncio.run(self.probe_all(targets, requests))
        if any(r is not None and r.response.epoch > max(self.snapshots) for r in replies.values()):
            self.sync_model()  # a miner is at the next epoch: fetch it to check its answer
        results = [self.judge(uid, metagraph.hotkeys[uid], requests[uid], replies.get(uid), epoch)
                   for uid in uids]
        self.scores = update_ema(self.scores, dict(enumerate(metagraph.hotkeys)),
                                 {r.uid: r.score for r in results}, alpha=self.cfg.alpha)
        score_store.save_atomic(self.scores_path, self.scores)
        for result in results:
            result.ema = self.scores.scores.get(result.uid, math.nan)
        self.report(results, epoch, block, self.heldout_loss())
        self.maybe_set_weights(block, uids)
        return results

    def make_request(self, block_hash: str, uid: int, epoch: int) -> ProbeRequest:
        seed = derive_seed(block_hash, self.chain.hotkey, uid) % 2**63
        batch = self.data.probe_batch(seed, self.cfg.probe_batch_size, self.seq_len)
        return ProbeRequest(**request_fields(batch), seed=seed, expected_epoch=epoch,
                            n_coords=N_COORDS)

    async def probe_all(self, targets: dict, requests: dict) -> dict[int, ProbeReply | None]:
        served = {uid: t for uid, t in targets.items() if t is not None}
        answers = await asyncio.gather(*(
            probe_miners(self.chain.wallet, [target], requests[uid], self.cfg.timeout)
            for uid, target in served.items()))
        return {uid: answer[uid] for uid, answer in zip(served, answers)}

    def judge(self, uid: int, hotkey: str, request: ProbeRequest, reply: ProbeReply | None,
              epoch: int) -> RoundResult:
        if reply is None:
            score, reason = classify(ProbeOutcome(responded=False), self.tolerances)
            return RoundResult(uid, hotkey, False, None, math.nan, math.nan, math.nan, score,
                               math.nan, reason)
        answer = reply.response
        # Recompute at the epoch the miner reports when we hold it; otherwise at the newest we
        # hold. The lag check compares with the epoch the request was sent at.
        held = self.snapshots.get(answer.epoch, self.snapshots[max(self.snapshots)])
        self.reference_model.load_state_dict(held)
        reference = probe_loss_and_grad(self.reference_model, request_inputs(request),
                                        request.seed, request.n_coords)
        coords_match = [tuple(c) for c in answer.coords] == [tuple(c) for c in reference.coords]
        similarity = cosine(answer.grad_values, reference.grad_values) if coords_match else math.nan
        outcome = ProbeOutcome(responded=True, reported_epoch=answer.epoch, reference_epoch=epoch,
                               reported_loss=answer.loss, reference_loss=reference.loss,
                               coords_match=coords_match, grad_cosine=similarity)
        score, reason = classify(outcome, self.tolerances)
        return RoundResult(uid, hotkey, True, answer.epoch, answer.loss, reference.loss,
                           similarity, score, math.nan, reason)

    @torch.no_grad()
    def heldout_loss(self) -> float:
        """The swarm model's loss on fixed held-out batches, as the validator holds it."""
        self.reference_model.load_state_dict(self.snapshots[max(self.snapshots)])
        self.reference_model.eval()
        device = next(self.reference_model.parameters()).device
        return sum(self.reference_model(**model_inputs(b, device)).loss.item()
                   for b in self.heldout) / len(self.heldout)

    def report(self, results: list[RoundResult], epoch: int, block: int,
               heldout_loss: float) -> None:
        lines = [f"round at block {block}, swarm epoch {epoch}, held-out loss {heldout_loss:.3f}:",
                 f"{'uid':>4} {'hotkey':<10} {'resp':<5} {'loss':>7} {'ref':>7} {'cos':>6} "
                 f"{'score':>5} {'ema':>5}  reason"]
        for r in results:
            lines.append(f"{r.uid:>4} {r.hotkey[:10]:<10} {str(r.responded):<5} {r.loss:7.3f} "
                         f"{r.reference_loss:7.3f} {r.cosine:6.3f} {r.score:5.2f} {r.ema:5.3f}  "
                         f"{r.reason}")
        logger.info("\n".join(lines))
        self.telemetry.log("round", block=block, epoch=epoch, heldout_loss=heldout_loss,
                           results=[r.__dict__ for r in results],
                           **{f"score/uid{r.uid}": r.ema for r in results})

    def maybe_set_weights(self, block: int, uids: list[int]) -> None:
        if block - self.last_weights_block < self.cfg.weights_every:
            return
        weights = normalise({uid: self.scores.scores.get(uid, 0.0) for uid in uids})
        if not weights:
            return
        if self.chain.set_weights(list(weights), list(weights.values())):
            self.last_weights_block = block
            logger.info("set weights at block %d: %s", block,
                        ", ".join(f"uid{u}={w:.3f}" for u, w in weights.items()))
            self.telemetry.log("weights", block=block,
                               **{f"weight/uid{u}": w for u, w in weights.items()})


def _target(uid: int, hotkey: str, axon: str | None):
    """``(uid, hotkey, ip, port)`` for a served endpoint, None when the uid serves nothing."""
    if not axon:
        return None
    ip, _, port = axon.rpartition(":")
    return (uid, hotkey, ip.strip("[]"), int(port))
