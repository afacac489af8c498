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

Proof of training: once per finished epoch ``e`` whose global parameters the validator holds,
it fetches every miner's update for ``e`` and measures what it does on the miner's assigned data
and on random data (:mod:`hivetrain.validator.contribution`); the verdict
(:func:`~hivetrain.validator.scoring.judge_updates`) stands for every round until the next epoch
is checked, and a round's score is the lower of the probe's and the update's. The updates are
fetched beside the round's probes, so a silent miner costs a round one timeout, not two.

What a miner sends into the all-reduce only its group's reducers see: a miner that a majority
of the swarm's peers banned for it (their signed ban lists, published with each epoch's sketch)
scores 0.3 however clean its answers to the validator are.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from hivetrain.chain import Chain
from hivetrain.config import ValidatorConfig
from hivetrain.data.captions import ImageCaptionData
from hivetrain.data.tokens import derive_seed
from hivetrain.probe.codec import request_fields, request_inputs
from hivetrain.probe.compute import cosine, mean_loss, param_digest, probe_loss_and_grad
from hivetrain.probe.schemas import ProbeRequest
from hivetrain.telemetry import Telemetry
from hivetrain.validator import consistency, rotation
from hivetrain.validator import state as score_store
from hivetrain.validator.contribution import ContributionChecker, outcome_record
from hivetrain.validator.prober import ProbeReply, probe_miners
from hivetrain.validator.update_client import UpdateReply
from hivetrain.validator.scoring import (SCORE_ACCEPTABLE, SCORE_UNACCEPTABLE, ProbeOutcome,
                                         ScoreState, Tolerances, classify, combine, judge_updates,
                                         update_ema)
from hivetrain.validator.scoring import weights as score_weights

logger = logging.getLogger(__name__)

N_COORDS = 64
# Epochs of global parameters kept beyond max_epoch_lag: the newest finished epoch is checked,
# and a validator that skipped one (it loaded a newer state) checks the one before.
SNAPSHOT_EPOCHS = 3
# State downloads a round may make because a miner answered from an epoch not yet held.
FORCED_SYNCS_PER_ROUND = 1
# How often the follower looks whether the swarm's epoch moved past the newest one held.
FOLLOW_SECONDS = 1.0


@dataclass
class RoundResult:
    uid: int
    hotkey: str
    responded: bool
    epoch: int | None
    loss: float
    reference_loss: float
    cosine: float
    score: float | None
    ema: float
    reason: str
    # The digest of the validator's copy of ``epoch`` and the miner's own: equal digests prove
    # both held the same model; unequal ones with a failed check say whose copy moved.
    reference_digest: str | None = None
    param_digest: str | None = None
    update: dict | None = None  # the update check's facts (contribution.outcome_record)


@dataclass
class UpdateCheck:
    """This round's update check: the epoch, our ``G`` of it, the served miners and which of
    them the rotation checks."""

    epoch: int
    snapshot: dict
    served: dict
    plan: rotation.Plan


class Validator:
    """Runs rounds every ``--validator.interval`` seconds until :attr:`stop` is set.

    :param optimizer: a swarm optimizer (see :func:`hivetrain.swarm.optimizer.make_optimizer`)
        on the swarm's run_id that never steps; it only loads the swarm-global state from peers
        when the swarm's epoch moves on.
    """

    def __init__(self, cfg: ValidatorConfig, chain: Chain, uid: int, model: torch.nn.Module,
                 optimizer, data, seq_len: int, telemetry: Telemetry, run_dir: Path,
                 run_id: str, scores: ScoreState, refresh_admission=lambda: None):
        self.cfg, self.chain, self.uid, self.model, self.opt = cfg, chain, uid, model, optimizer
        self.data, self.seq_len, self.telemetry = data, seq_len, telemetry
        self.refresh_admission = refresh_admission  # whose swarm state and progress count
        self.scores_path = run_dir / score_store.SCORES_FILE
        self.scores = scores  # loaded by the caller first, so a bad file stops the start-up early
        self.tolerances = Tolerances(max_epoch_lag=cfg.max_epoch_lag,
                                     loss_rel_tol=cfg.loss_tolerance, min_cosine=cfg.min_cosine)
        self.last_weights_block = -math.inf
        self.stop = threading.Event()
        self._sync_lock = threading.Lock()  # one state download at a time: round or follower
        self.heldout = data.heldout_batches(2, cfg.probe_batch_size, seq_len)
        self.reference_model = copy.deepcopy(model)
        self.snapshots: dict[int, dict] = {}  # epoch -> parameters, for the recent epochs only
        self.snapshot_digests: dict[int, str] = {}  # epoch -> param_digest of that snapshot
        # epoch -> G and outer momentum (diloco): two consecutive ones give the averaged change
        self.outer_states: dict[int, object] = {}
        self.checker = ContributionChecker(self.reference_model, data, run_id, seq_len,
                                           cfg.probe_batch_size, cfg.update_batches, cfg.timeout)
        self.checked_epoch: int | None = None
        # uid -> (score, reason, record): the last verdict of each miner, standing until its
        # next check or rotation.verdict_epochs after it (a rotating sample checks some only)
        self.verdicts: dict[int, tuple] = {}
        self.check_budget = rotation.CheckBudget(cfg.update_budget)

    def run(self) -> None:
        follower = threading.Thread(target=self.follow_swarm, name="swarm-follower", daemon=True)
        follower.start()
        while not self.stop.is_set():
            self.run_round()
            self.stop.wait(self.cfg.interval)  # the round cadence; wakes at once on stop
        follower.join(timeout=FOLLOW_SECONDS * 5)  # a fetch in flight ends with the optimizer

    def follow_swarm(self) -> None:
        """Fetch each new swarm epoch as it appears, between and during rounds.

        Honest miners answer from the swarm's newest epoch, and an answer is recomputed only at
        an epoch the validator holds. Fetching only at the start of a round (and once more when
        an answer is newer) left whole epochs unheld whenever a round outlasted two swarm
        epochs: measured with seven miners on a loaded 2-core machine, a round of ~50 s and the
        honest miner's epoch-10 answer scored 0.3 for "epoch 10 is not one the validator holds
        ([6, 7, 9])"."""
        while not self.stop.wait(FOLLOW_SECONDS):
            if self.opt.swarm_epoch > self.opt.local_epoch:
                try:
                    self.sync_model()
                except Exception as error:  # retried; the rounds go on meanwhile
                    if not self.stop.is_set():
                        logger.warning("could not fetch the swarm's new state: %r", error)

    def sync_model(self, swarm_is_ahead: bool = False) -> int:
        """Load the swarm-global state when the swarm is ahead and remember its parameters.

        :param swarm_is_ahead: a miner answered at an epoch newer than any held. Load even when
            the tracker says otherwise: it refreshes the swarm's epoch from the DHT only every
            few seconds (up to 10), so right after an outer step it still reports the old one.
        """
        with self._sync_lock:
            return self._sync_model(swarm_is_ahead)

    def _sync_model(self, swarm_is_ahead: bool) -> int:
        if swarm_is_ahead or self.opt.swarm_epoch > self.opt.local_epoch:
            self.opt.load_global_state()
            logger.info("loaded swarm state at epoch %d", self.opt.local_epoch)
        epoch = self.opt.local_epoch
        snapshots, digests = dict(self.snapshots), dict(self.snapshot_digests)
        outer_states = dict(self.outer_states)
        if epoch not in snapshots:
            snapshots[epoch] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            digests[epoch] = param_digest(self.model)
            if hasattr(self.opt, "outer_state"):
                outer_states[epoch] = self.opt.outer_state()
        keep = max(self.cfg.max_epoch_lag, SNAPSHOT_EPOCHS)
        kept = [e for e in snapshots if e >= epoch - keep]
        # Replaced, not edited in place: probe_all reads them while this runs in a thread.
        self.snapshot_digests = {e: digests[e] for e in kept}
        self.snapshots = {e: snapshots[e] for e in kept}
        self.outer_states = {e: outer_states[e] for e in kept if e in outer_states}
        return epoch

    def run_round(self) -> list[RoundResult]:
        metagraph = self.chain.metagraph(refresh=True)
        self.refresh_admission()
        epoch = self.sync_model()
        block = self.chain.block
        block_hash = self.chain.block_hash(block)
        uids = [uid for uid in metagraph.uids if uid != self.uid]
        requests = {uid: self.make_request(block_hash, uid, epoch) for uid in uids}
        targets = {uid: _target(uid, metagraph.hotkeys[uid], metagraph.axons[uid]) for uid in uids}
        check = self.update_check(epoch, targets, block_hash)
        replies, fetched = asyncio.run(self.gather_answers(targets, requests, epoch, check))
        results = [self.judge(uid, metagraph.hotkeys[uid], requests[uid], replies.get(uid), epoch)
                   for uid in uids]
        contribution = self.check_updates(fetched, check, block_hash, metagraph.hotkeys, replies)
        exclusions = self.swarm_exclusions(epoch)
        for result in results:
            self.apply_verdict(result)
            if result.uid in exclusions:
                self.apply_exclusion(result, exclusions[result.uid])
                if contribution is not None and result.uid in contribution:
                    contribution[result.uid] = 0.0
        self.scores = update_ema(self.scores, dict(enumerate(metagraph.hotkeys)),
                                 {r.uid: r.score for r in results}, alpha=self.cfg.alpha,
                                 round_contribution=contribution)
        score_store.save_atomic(self.scores_path, self.scores)
        for result in results:
            result.ema = self.scores.scores.get(result.uid, math.nan)
        self.report(results, epoch, block, self.heldout_loss(), self.checked_epoch)
        self.maybe_set_weights(block, uids)
        return results

    def update_check(self, epoch: int, targets: dict, block_hash: str) -> UpdateCheck | None:
        """What to check this round: the newest finished epoch whose ``G`` we hold and whose
        updates are not checked yet, and the miners to check (all of them, or the rotating
        subset ``--validator.update_budget`` allows, drawn with this round's block hash);
        None when there is nothing to check."""
        if not hasattr(self.opt, "updates"):  # sync mode averages gradients: no per-miner update
            return None
        if isinstance(self.data, ImageCaptionData):
            # The rule's margins were measured on text: honest mm-tiny updates gained 0.00-0.09
            # on their assigned captions in 11 checked epochs, under the 0.1 text margin, so
            # image-caption runs are scored by the probe alone until their margins are measured.
            return None
        finished = [e for e in self.snapshots if e < epoch]
        if not finished or max(finished) == self.checked_epoch:
            return None
        checked = max(finished)
        served = {uid: t for uid, t in targets.items() if t is not None}
        # More miners than the budget allows: a rotating subset (validator/rotation.py).
        draw = derive_seed(block_hash, self.chain.hotkey, "rotation", checked)
        plan = rotation.plan(served, draw, self.chain.hotkey,
                             self.check_budget.capacity(len(served)))
        return UpdateCheck(checked, self.snapshots[checked], served, plan)

    async def gather_answers(self, targets: dict, requests: dict, epoch: int,
                             check: UpdateCheck | None):
        """The round's probe answers and, fetched beside them, the updates of the epoch to
        check: a miner that answers neither costs the round one timeout, not two."""
        probing = self.probe_all(targets, requests, epoch)
        if check is None:
            return await probing, None
        sample = {uid: check.served[uid] for uid in check.plan.selected}
        replies, fetched = await asyncio.gather(
            probing, self.checker.fetch(self.chain.wallet, sample, check.epoch))
        return replies, fetched

    def check_updates(self, fetched, check: UpdateCheck | None, block_hash: str,
                      hotkeys: list[str], replies: dict[int, ProbeReply | None],
                      ) -> dict[int, float] | None:
        """Judge the fetched updates of the checked epoch (once per epoch); return the verified
        samples per checked uid when a check ran (None otherwise)."""
        if fetched is None:
            return None
        checked, served, plan = check.epoch, check.served, check.plan
        outcomes, cost = self.checker.evaluate(
            fetched, dict(enumerate(hotkeys)), check.snapshot,
            derive_seed(block_hash, self.chain.hotkey, "updates"))
        self.check_budget.record(cost.miners, cost.seconds)
        for uid, outcome in outcomes.items():
            answer = replies.get(uid).response if replies.get(uid) is not None else None
            announced = answer.update_digest if answer is not None \
                and answer.update_epoch == checked else None  # this round's probe answer
            previous = self.verdicts.get(uid)
            outcomes[uid] = dataclasses.replace(
                outcome, announced_digest=announced,
                previous_accepted=previous is not None and previous[0] == SCORE_ACCEPTABLE)
        outcomes = self.check_consistency(checked, fetched, outcomes)
        judged = judge_updates(outcomes)
        self.checked_epoch = checked
        kept = rotation.keep_verdicts(
            {uid: v for uid, v in self.verdicts.items() if uid in served}, checked, plan.cycle)
        self.verdicts = {**kept, **{
            uid: (score, reason, {**outcome_record(outcomes[uid]), "score": score,
                                  "checked_epoch": checked})
            for uid, (score, reason) in judged.items()}}
        logger.info("checked %d of %d updates of epoch %d in %.1f s (%.1f s fetching, %.1f MB; "
                    "rotation of %d epochs)", cost.miners, len(served), checked, cost.seconds,
                    cost.fetch_seconds, cost.bytes / 1e6, plan.cycle)
        self.telemetry.log("update_check", epoch=checked, miners=cost.miners,
                           served=len(served), cycle=plan.cycle, phase=plan.phase,
                           checked_uids=plan.selected,
                           seconds=cost.seconds, fetch_seconds=cost.fetch_seconds,
                           bytes=cost.bytes, budget=self.cfg.update_budget)
        return {uid: float(outcomes[uid].samples) if score == SCORE_ACCEPTABLE else 0.0
                for uid, (score, _) in judged.items()
                if score is not None or outcomes[uid].status == "missing"}

    def check_consistency(self, epoch: int, fetched, outcomes: dict) -> dict:
        """``outcomes`` with each averaging-group member's share of the swarm's outer step from
        ``epoch`` to ``epoch + 1`` and, for a member whose published update does not explain its
        share, why (validator/consistency.py). Unchanged when we lack the two epochs' copies."""
        before, after = self.outer_states.get(epoch), self.outer_states.get(epoch + 1)
        if before is None or after is None or self.opt.train.overlap:
            # With overlap the step from e to e + 1 applies round e - 1's average: not checked.
            return outcomes
        try:
            peers_by_uid = self.chain.committed_peer_ids_by_uid()
        except Exception as error:  # the chain is unreachable for a moment: unchecked this epoch
            logger.warning("could not read the miners' DHT identities from the chain: %s", error)
            return outcomes
        published = {uid: consistency.Published(reply.vector, reply.envelope.samples,
                                                frozenset(reply.envelope.group))
            for uid, (reply, _) in fetched.replies.items() if isinstance(reply, UpdateReply)}
        change, gap = consistency.averaged_change(before, after)
        holding = self.opt.peers_holding(epoch + 1, after.params)
        holders = {uid for uid, peers in peers_by_uid.items() if peers & holding}
        earlier = self.outer_states.get(epoch - 1)
        reference_rms = consistency.average_rms(earlier, before) if earlier is not None else 0.0
        found = consistency.check(change, gap, published, peers_by_uid, holders,
                                  self.opt.averaging_parts(), reference_rms)
        logger.info("epoch %d outer step vs published updates: %s%s (group %s, residual %.3f, "
                    "shares %s)", epoch, found.status, f": {found.reason}" if found.reason else "",
                    list(found.members), found.residual,
                    {uid: round(share, 3) for uid, share in found.shares.items()})
        self.telemetry.log("consistency", epoch=epoch, status=found.status, reason=found.reason,
                           members=list(found.members), unjudged=list(found.unjudged),
                           residual=found.residual,
                           derivation_gap=found.derivation_gap, flagged=sorted(found.flagged),
                           shares={str(uid): share for uid, share in found.shares.items()})
        return {uid: dataclasses.replace(outcome, average_share=found.shares.get(uid, math.nan),
                                         inconsistency=found.flagged.get(uid))
                for uid, outcome in outcomes.items()}

    def swarm_exclusions(self, epoch: int) -> dict[int, str]:
        """uid -> why, for the miners whose DHT identity a majority of the swarm's reducers
        excluded by ``epoch``. A miner can show the validator a clean update while sending
        something else into the all-reduce; only the peers that reduced its parts saw that."""
        if not hasattr(self.opt, "excluded_peers"):  # sync mode: no robust reducers
            return {}
        excluded = self.opt.excluded_peers(epoch)
        if not excluded:
            return {}
        try:
            peers_by_uid = self.chain.committed_peer_ids_by_uid()
        except Exception as error:  # the chain is unreachable for a moment: judge next round
            logger.warning("could not read the miners' DHT identities from the chain: %s", error)
            return {}
        return {uid: f"{excluded[peer]} (peer {peer[-8:]}, epoch {epoch})"
                for uid, peers in peers_by_uid.items() for peer in sorted(peers) if peer in excluded}

    @staticmethod
    def apply_exclusion(result: RoundResult, reason: str) -> None:
        """An excluded miner that answers scores 0.3 whatever its answers (silent: 0.1)."""
        if not result.responded:
            return
        result.reason = reason if result.score == SCORE_ACCEPTABLE or result.score is None \
            else f"{reason}; {result.reason}"
        result.score = combine(result.score, SCORE_UNACCEPTABLE)

    def apply_verdict(self, result: RoundResult) -> None:
        """Lower ``result``'s probe score to its update verdict (a silent miner stays at 0.1)."""
        verdict = self.verdicts.get(result.uid)
        if verdict is None:
            return
        score, reason, record = verdict
        result.update = record
        if not result.responded:
            return
        combined = combine(result.score, score)
        if combined != result.score:
            result.reason = reason if result.score == SCORE_ACCEPTABLE else \
                f"{result.reason}; {reason}"
        result.score = combined

    def make_request(self, block_hash: str, uid: int, epoch: int) -> ProbeRequest:
        seed = derive_seed(block_hash, self.chain.hotkey, uid) % 2**63
        batch = self.data.probe_batch(seed, self.cfg.probe_batch_size, self.seq_len)
        return ProbeRequest(**request_fields(batch), seed=seed, expected_epoch=epoch,
                            n_coords=N_COORDS)

    async def probe_all(self, targets: dict, requests: dict,
                        epoch: int) -> dict[int, ProbeReply | None]:
        """Probe every served miner at once (one client, one call); fetch the swarm's state the
        moment one answers from an epoch newer than any held.

        Waiting for every probe first (the slowest takes the whole timeout) let the swarm step
        again meanwhile, and a validator whose round outlasted two swarm epochs (update checks on
        a loaded machine) never fetched an answer two epochs ahead: it scored every honest miner
        0.3 for its own lag. One such fetch per round, so a miner claiming a future epoch costs
        the validator at most one state download a round.
        """
        served = {uid: t for uid, t in targets.items() if t is not None}
        fetching = asyncio.Lock()
        fetches_left = [FORCED_SYNCS_PER_ROUND]

        def unheld(reply) -> bool:
            return reply is not None and reply.response.epoch > max(self.snapshots)

        async def fetch_if_unheld(uid: int, reply: ProbeReply | None) -> None:
            if unheld(reply) and fetches_left[0]:
                async with fetching:
                    if unheld(reply) and fetches_left[0]:  # not fetched by another answer meanwhile
                        fetches_left[0] -= 1
                        await asyncio.to_thread(self.sync_model, swarm_is_ahead=True)

        return await probe_miners(self.chain.wallet, list(served.values()),
                                  {uid: requests[uid] for uid in served}, self.cfg.timeout,
                                  on_reply=fetch_if_unheld)

    def judge(self, uid: int, hotkey: str, request: ProbeRequest, reply: ProbeReply | None,
              epoch: int) -> RoundResult:
        if reply is None:
            score, reason = classify(ProbeOutcome(responded=False), self.tolerances)
            return RoundResult(uid, hotkey, False, None, math.nan, math.nan, math.nan, score,
                               math.nan, reason)
        answer = reply.response
        # The swarm was at every epoch from the request's to the newest fetched in this round:
        # an answer is current when it is within the lag of that window.
        current = min(max(answer.epoch, epoch), max(self.snapshots))
        # Recompute at the epoch the miner reports, never at another: one outer step moves the
        # gradient far enough (cosine -0.4 to 0.9) to fail an honest answer.
        if answer.epoch not in self.snapshots:
            lag = abs(answer.epoch - current)
            reason = (f"epoch {answer.epoch} is {lag} away from {current} "
                      f"(max {self.cfg.max_epoch_lag})" if lag > self.cfg.max_epoch_lag else
                      f"epoch {answer.epoch} is not one the validator holds "
                      f"({sorted(self.snapshots)})")
            return RoundResult(uid, hotkey, True, answer.epoch, answer.loss, math.nan, math.nan,
                               SCORE_UNACCEPTABLE, math.nan, reason,
                               param_digest=answer.param_digest)
        self.reference_model.load_state_dict(self.snapshots[answer.epoch])
        reference = probe_loss_and_grad(self.reference_model, request_inputs(request),
                                        request.seed, request.n_coords)
        coords_match = [tuple(c) for c in answer.coords] == [tuple(c) for c in reference.coords]
        similarity = cosine(answer.grad_values, reference.grad_values) if coords_match else math.nan
        outcome = ProbeOutcome(responded=True, reported_epoch=answer.epoch, reference_epoch=current,
                               reported_loss=answer.loss, reference_loss=reference.loss,
                               coords_match=coords_match, grad_cosine=similarity)
        score, reason = classify(outcome, self.tolerances)
        return RoundResult(uid, hotkey, True, answer.epoch, answer.loss, reference.loss,
                           similarity, score, math.nan, reason,
                           self.snapshot_digests[answer.epoch], answer.param_digest)

    def heldout_loss(self) -> float:
        """The swarm model's loss on fixed held-out batches, as the validator holds it."""
        self.reference_model.load_state_dict(self.snapshots[max(self.snapshots)])
        return mean_loss(self.reference_model, self.heldout)

    def report(self, results: list[RoundResult], epoch: int, block: int,
               heldout_loss: float, checked_epoch: int | None) -> None:
        lines = [f"round at block {block}, swarm epoch {epoch}, held-out loss {heldout_loss:.3f}, "
                 f"updates checked at epoch {checked_epoch}:",
                 f"{'uid':>4} {'hotkey':<10} {'resp':<5} {'loss':>7} {'ref':>7} {'cos':>6} "
                 f"{'score':>5} {'ema':>5}  reason"]
        for r in results:
            lines.append(f"{r.uid:>4} {r.hotkey[:10]:<10} {str(r.responded):<5} {r.loss:7.3f} "
                         f"{r.reference_loss:7.3f} {r.cosine:6.3f} {_fmt(r.score)} {r.ema:5.3f}  "
                         f"{r.reason}")
        logger.info("\n".join(lines))
        self.telemetry.log("round", block=block, epoch=epoch, heldout_loss=heldout_loss,
                           checked_epoch=checked_epoch,
                           results=[r.__dict__ for r in results],
                           **{f"score/uid{r.uid}": r.ema for r in results})

    def maybe_set_weights(self, block: int, uids: list[int]) -> None:
        if block - self.last_weights_block < self.cfg.weights_every:
            return
        weights = score_weights(self.scores, uids, self.cfg.weighting)
        if not weights:
            return
        if self.chain.set_weights(list(weights), list(weights.values())):
            self.last_weights_block = block
            logger.info("set weights at block %d: %s", block,
                        ", ".join(f"uid{u}={w:.3f}" for u, w in weights.items()))
            self.telemetry.log("weights", block=block,
                               **{f"weight/uid{u}": w for u, w in weights.items()})


def _fmt(score: float | None) -> str:
    return "  -  " if score is None else f"{score:5.2f}"


def _target(uid: int, hotkey: str, axon: str | None):
    """``(uid, hotkey, ip, port)`` for a served endpoint, None when the uid serves nothing."""
    if not axon:
        return None
    ip, _, port = axon.rpartition(":")
    return (uid, hotkey, ip.strip("[]"), int(port))
