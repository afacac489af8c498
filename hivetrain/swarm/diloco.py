"""DiLoCo: many local optimizer steps, then one outer step on the swarm-averaged parameter change.

Gradient averaging (``--train.mode sync``) all-reduces a model-sized tensor every few local
steps: about 0.9 GB per peer per round for GPT-2 124M in fp32, more than a home link moves in the
time a GPU takes for the steps. DiLoCo (Douillard et al. 2023) and OpenDiLoCo (Jaghouar et al.
2024, on hivemind) average once per ``H`` inner steps instead:

1. every peer starts a round from the same *global* parameters ``G`` and takes local AdamW
   steps on its own data, reaching ``theta``, until the swarm has taken ``H`` steps per peer;
2. the peers all-reduce the *pseudo-gradient* ``G - theta``, weighted by their samples;
3. every peer applies the same outer optimizer step, SGD with Nesterov momentum, to ``G`` with
   the averaged pseudo-gradient, and continues from the new ``G``.

One outer step is one *epoch*. ``G`` and the outer momentum are the swarm's state: what a joining
or lagging peer downloads, what checkpoints store and what validators probe. A peer that is
behind the swarm's epoch never averages its stale change: it loads the global state and starts the
next round from it.

With ``overlap`` the all-reduce of round ``k`` runs in the background while round ``k + 1``
trains; its outer step is applied at the end of round ``k + 1`` and the local progress of that
round is kept on top of the new ``G`` (one round of staleness, as in streaming/eager DiLoCo).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import hivemind
import torch
from hivemind.averaging.control import StepControl
from hivemind.compression import (CompressionInfo, NoCompression, TensorRole,
                                  deserialize_torch_tensor)
from hivemind.utils.crypto import RSAPrivateKey
from hivemind.utils.timed_storage import get_dht_time

from hivetrain.config import TrainConfig
from hivetrain.swarm.averager import SwarmAverager
from hivetrain.swarm.robust import part_sizes
from hivetrain.swarm.state_check import SKETCH_SIZE, SketchBoard, finite, sketch, sketches_agree
from hivetrain.swarm.tracker import SwarmProgressTracker
from hivetrain.swarm.traffic import ByteCounter, CountingCompression
from hivetrain.swarm.updates import UpdateHistory
from hivetrain.swarm.view import SwarmView

logger = logging.getLogger(__name__)

# A state download tries at most this many peers before giving up until the next attempt.
MAX_STATE_SOURCES = 4
# Group keys carry the round's epoch in this many bits, so rounds of different epochs never mix.
EPOCH_BITS = 16
# Each progress report is a signed DHT store that both peers' DHT and p2pd processes handle; one
# per inner step (hivemind's Optimizer reports every step) cost the 2-core benchmark machine
# several percent of its throughput. A round ends at most this much later, still training.
REPORT_EVERY = 1.0


@dataclass
class _Round:
    """One all-reduce in flight: its control, this peer's own change to fall back on, the sketch
    of ``G`` it was started with, and (for a round downloaded with the state) its result."""

    control: StepControl | None
    change: list[torch.Tensor]
    sketch: list[float]
    averaged: list[torch.Tensor] | None = None
    epoch: int | None = None  # the epoch whose change is averaged (named in the update kept)


@dataclass(frozen=True)
class OuterState:
    """One epoch's outer-optimizer state, as :meth:`DiLoCoOptimizer.outer_state` copies it.

    :param momentum: the Nesterov momentum buffers; None before the first outer step.
    """

    epoch: int
    params: list[torch.Tensor]
    momentum: list[torch.Tensor] | None
    lr: float
    mu: float


def _cancel(control: StepControl) -> None:
    """Cancel a round unless it already ended (hivemind raises on cancelling a finished one)."""
    if not control.done():
        try:
            control.cancel()
        except InvalidStateError:  # it finished in the meantime
            pass


class SwarmMovedOn(Exception):
    """The swarm completed the round this peer was waiting to average."""


class DiLoCoOptimizer(SwarmView):
    """Drop-in for the miner's ``hivemind.Optimizer``: call :meth:`step` after every backward.

    :param params: the trainable parameters (frozen ones are neither stepped nor averaged).
    :param inner_optimizer: ``params -> torch optimizer`` for the local steps (AdamW in practice).
    :param inner_schedule: ``global inner step -> learning-rate factor``; counted over the whole
        run so a joining peer warms up where the swarm is, not from zero.
    :param observer: follow the swarm's global state without training or averaging (validators).
    :param compression: hivemind compression for the averaged pseudo-gradients.
    :param admitted: DHT peer ids allowed to average with this peer and to count in the swarm's
        progress (chain-committed identities of registered hotkeys, kept current with
        :meth:`admit`); None admits everyone (a private swarm, tests).
    """

    def __init__(self, dht: hivemind.DHT, run_id: str, params: Sequence[torch.nn.Parameter],
                 train: TrainConfig, inner_optimizer: Callable, *, inner_schedule: Callable,
                 compression, observer: bool = False,
                 admitted: Iterable[str] | None = None):
        self.params = list(params)
        self.train, self.observer = train, observer
        self.inner_steps, self.overlap = train.inner_steps, train.overlap
        self.averaging_timeout = train.averaging_timeout
        self.load_state_timeout = max(60.0, train.averaging_timeout * 2)
        self.inner = inner_optimizer(self.params)
        self._inner_schedule = inner_schedule
        self._base_lrs = [group["lr"] for group in self.inner.param_groups]
        self.local_epoch = 0
        self.inner_step = 0  # local steps taken in the current round
        self._lock = threading.RLock()  # guards the global state against concurrent downloads
        self.global_params = [p.detach().to("cpu", torch.float32, copy=True) for p in self.params]
        self.outer = torch.optim.SGD(self.global_params, lr=train.outer_lr,
                                     momentum=train.outer_momentum, nesterov=True)
        self._round_start = [g.clone() for g in self.global_params]  # where this round began
        self._pending: _Round | None = None  # overlap: the round being averaged
        self._scheduled: tuple[StepControl, list] | None = None  # a group found ahead of time
        self._last_report = -float("inf")
        self._agrees_with_swarm = True
        self._reference_holders: frozenset[str] = frozenset()  # see _check_agreement
        self.bytes_sent = ByteCounter()
        self.rounds_ended = self.rounds_averaged = self.rounds_alone = self.rounds_skipped = 0
        self.last_group: list[str] = []  # the peers of the last all-reduce this peer took part in
        self._pseudo_grads = [torch.zeros_like(g) for g in self.global_params]
        self._compression = compression
        self.updates = UpdateHistory()  # what this peer contributed, for validators to check
        self.averager = SwarmAverager(
            self._current_state, averaged_tensors=self._pseudo_grads, dht=dht, admitted=admitted,
            prefix=f"{run_id}_diloco", start=True, min_matchmaking_time=train.matchmaking_time,
            # hivemind warns that requests slower than matchmaking can deadlock it.
            request_timeout=min(3.0, train.matchmaking_time / 2),
            compression=CountingCompression(compression, self.bytes_sent),
            # The state travels exactly. A rounded G would never agree with the swarm's; a rounded
            # momentum enters every later outer step, so a joiner given fp16 momentum stayed apart
            # from the peers it averaged with for good (tests/test_robust_swarm.py: 7e-6 per
            # parameter after its first round, up to 2e-4 within 30). It is sent once per join.
            state_compression=NoCompression(),
            allow_state_sharing=not observer,
            client_mode=dht.client_mode, next_chunk_timeout=train.averaging_timeout,
            # hivemind's default (None) lets an all-reduce whose step the host cancelled run on,
            # holding the averaged tensors: measured on a loaded machine, five of seven miners
            # then waited in get_tensors() for minutes and the swarm stopped at one epoch.
            allreduce_timeout=train.averaging_timeout)
        # Its own signing key, not hivemind's process-wide one: progress records are keyed by the
        # signer, so two optimizers in one process would otherwise overwrite each other's.
        # One signing key for this peer's progress records and sketches: the DHT keeps the first
        # RSA signature validator it is given, and records are keyed by the signer, so two
        # optimizers in one process (tests) must not share hivemind's process-wide key.
        signing_key = RSAPrivateKey()
        self.tracker = SwarmProgressTracker(
            dht, prefix=run_id, start=True, client_mode=observer, admitted=admitted,
            target_batch_size=train.inner_steps * train.batch_size, private_key=signing_key)
        self.sketches = SketchBoard(dht, run_id, self.tracker.counts, signing_key)
        self._apply_schedule()

    # ---- the training step -------------------------------------------------------------------

    def step(self) -> None:
        """One inner step; ends the round with the outer step once the swarm has done its share."""
        self.inner.step()
        self.inner_step += 1
        self._apply_schedule()
        if time.monotonic() - self._last_report >= REPORT_EVERY or self.inner_step == 1:
            self._last_report = time.monotonic()
            self.tracker.report_local_progress(self.local_epoch,
                                               self.inner_step * self.train.batch_size)
        # With overlap a peer that ended the round a moment earlier is already one epoch ahead
        # (nothing holds it back until everyone averaged), which is no reason to reload.
        if self.tracker.global_epoch > self.local_epoch + self.overlap:
            logger.info("swarm moved on to epoch %d while this peer was at %d: loading its state",
                        self.tracker.global_epoch, self.local_epoch)
            self.load_state_from_peers()
        elif self._swarm_round_done():
            self.end_round()
        else:
            self._maybe_schedule_round()

    def _training_peers(self) -> int:
        progress = self.tracker.global_progress
        return max(1, progress.num_peers - progress.num_clients)

    def _swarm_round_done(self) -> bool:
        """Whether the swarm has taken ``inner_steps`` steps per training peer this round.

        Counting the swarm's samples rather than this peer's steps makes every peer end the round
        at the same moment, so all of them meet in one all-reduce: a faster peer takes a few more
        steps, a slower one fewer, and the average weighs each change by its samples. Ending at
        a fixed local step count instead leaves the slowest peer outside every group.
        """
        target = self.inner_steps * self.train.batch_size * self._training_peers()
        self.tracker.target_batch_size = target
        # Samples only: hivemind's time estimate also says "ready" when its ETA has passed, which
        # right after a state download (stale ETA) ended a joiner's round after one step.
        return self.tracker.global_progress.samples_accumulated >= target

    def _maybe_schedule_round(self) -> None:
        """Start matchmaking ``matchmaking_time`` before the round's expected end (as hivemind's
        Optimizer does for gradients), so the all-reduce can begin as soon as the round ends
        instead of the whole swarm waiting out matchmaking every round."""
        if self._scheduled is not None or self._training_peers() <= 1:
            return
        if self._pending is not None and self._pending.control is not None \
                and not self._pending.control.done():
            return  # overlap: the group key must stay the pending round's until it is done
        if self.tracker.estimated_next_update_time - get_dht_time() > self.train.matchmaking_time:
            return
        self._scheduled = self._start_step(self.local_epoch, require_trigger=True)

    def _start_step(self, epoch: int, require_trigger: bool) -> tuple[StepControl, list] | None:
        """Look for a group of the peers at ``epoch``; the all-reduce waits for the trigger."""
        self.averager.set_group_bits(format(epoch % 2 ** EPOCH_BITS, f"0{EPOCH_BITS}b"))
        sketch = self._sketch()  # G does not change during a round
        try:
            control = self.averager.step(gather={"epoch": epoch, "sketch": sketch},
                                         timeout=self.averaging_timeout, wait=False,
                                         require_trigger=True)
        except Exception as error:  # the averager process is gone: train on alone
            logger.warning("could not start averaging round %d: %r", epoch, error)
            return None
        return control, sketch

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def end_round(self) -> None:
        """Average this round's parameter change with the swarm and apply the outer step.

        Without overlap the outer step uses this round's average at once. With overlap it uses
        the previous round's (already averaged in the background) and this round's all-reduce
        runs during the next round; a peer that has no previous round yet applies nothing.
        """
        with torch.no_grad():
            local = [p.detach().to("cpu", torch.float32) for p in self.params]
            change = [start - theta for start, theta in zip(self._round_start, local)]
        samples, self.inner_step = self.inner_step * self.train.batch_size, 0
        self.rounds_ended += 1
        self.last_group = []
        if not self.observer:
            self.updates.record(self.local_epoch, self._as_sent(change), samples)
        try:
            self._end_round(change, samples)
        except SwarmMovedOn:
            logger.info("the swarm finished epoch %d without this peer: loading its state",
                        self.local_epoch)
            self.load_state_from_peers()

    def _end_round(self, change: list[torch.Tensor], samples: int) -> None:
        if not self.overlap:
            round_ = self._average(change, samples)
            self._advance(self._finish(round_) if round_ else change if finite(change) else None)
            self._move_local(self.global_params)
        else:
            previous = self._finish(self._pending) if self._pending is not None else None
            with self._lock:
                self._pending = None
            round_ = self._average(change, samples)  # keyed and sketched before the outer step
            if round_ is None:  # alone in the swarm: nothing to overlap with
                if previous is not None:
                    self._outer_step(previous)
                self._advance(change if finite(change) else None)
                self._move_local(self.global_params)
            else:  # keep this round's progress on top of the new global state
                with self._lock:
                    self._pending = round_
                self._advance(previous)
                self._move_local([g - c for g, c in zip(self.global_params, change)])
        self._after_epoch()

    def _average(self, change: list[torch.Tensor], samples: int) -> _Round | None:
        """Run the all-reduce of ``change``, weighted by ``samples``, with the peers at this epoch
        (in the group scheduled during the round when there is one); None when alone."""
        scheduled, self._scheduled = self._scheduled, None
        if scheduled is not None and scheduled[0].done():  # matchmaking failed or expired
            scheduled = None
        if self._training_peers() <= 1:
            if scheduled is not None:
                _cancel(scheduled[0])
            self.rounds_alone += 1
            return None
        scheduled = scheduled or self._start_step(self.local_epoch, require_trigger=True)
        if scheduled is None:
            self.rounds_alone += 1
            return None
        control, sketch = scheduled
        # Not under self._lock: the averager process holds its tensors for a whole all-reduce, and
        # one it still runs for an abandoned round would stall every state download from this
        # peer meanwhile (the lock guards G, which this copy does not touch, and no finished
        # pending round is served from these buffers once _end_round has taken it).
        with self.averager.get_tensors() as buffers:
            for buffer, tensor in zip(buffers, change):
                buffer.copy_(tensor)
        control.weight = float(samples)
        control.allow_allreduce()
        return _Round(control, change, sketch, epoch=self.local_epoch)

    def _finish(self, round_: _Round) -> list[torch.Tensor] | None:
        """The averaged change of ``round_``; this peer's own change when the round failed; None
        (skip the outer step) when what came back cannot be trusted."""
        if round_.averaged is not None:  # downloaded with the global state
            return round_.averaged
        try:
            # An overlapped round is already in the past: the swarm moving on says nothing.
            result = self._wait(round_.control, may_abandon=not self.overlap)
        except SwarmMovedOn:
            raise
        except Exception as error:
            _cancel(round_.control)
            result = None
            logger.warning("averaging round failed (%r); applying this peer's own change", error)
        gathered = result["gathered"] if result else None
        if not gathered:
            self.rounds_alone += 1
            return round_.change if finite(round_.change) else None
        self.last_group = sorted(str(peer) for peer in gathered)
        if not self.observer and round_.epoch is not None:
            self.updates.set_group(round_.epoch, self.last_group)
        self._judge(result["verdicts"])
        with self.averager.get_tensors() as buffers:
            averaged = [buffer.clone() for buffer in buffers]
        if result["verdicts"].get("bad_reducers") or not finite(averaged):
            self.rounds_skipped += 1
            logger.warning("epoch %d: refused the averages reduced by %s; skipping this outer step",
                           self.local_epoch, ", ".join(result["verdicts"].get("bad_reducers", []))
                           or "a peer (non-finite result)")
            return None
        self.rounds_averaged += 1
        self._check_agreement(gathered, round_.sketch)
        logger.info("averaged the parameter change with %d peers", len(gathered))
        return averaged

    def _judge(self, verdicts: dict) -> None:
        """Log what the robust reduction found; ban the offenders here too (the averager process
        already did) so that the swarm's progress stops counting them."""
        for peer, reasons in verdicts.get("notes", {}).items():
            logger.info("epoch %d: bounded %s's contribution (%s)", self.local_epoch, peer,
                        "; ".join(reasons))
        offenders = verdicts.get("offenders", {})
        for peer, reasons in offenders.items():
            logger.warning("epoch %d: excluding peer %s from the next groups: %s",
                           self.local_epoch, peer, "; ".join(reasons))
        if offenders:
            self.averager.ban(offenders)
            self.tracker.exclude(offenders)

    def _wait(self, control: StepControl, may_abandon: bool):
        """The round's gathered data; gives up early (``may_abandon``) when the swarm finished the
        round without us (its group formed before this peer looked for one), instead of idling
        for the whole timeout."""
        deadline = time.monotonic() + self.averaging_timeout + self.train.matchmaking_time
        while True:
            try:
                return control.result(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
            except FutureTimeoutError:
                if time.monotonic() >= deadline:
                    raise
                if may_abandon and not control.began_allreduce \
                        and self.tracker.global_epoch > self.local_epoch:
                    _cancel(control)
                    raise SwarmMovedOn from None

    def _outer_step(self, averaged_change: list[torch.Tensor]) -> None:
        with self._lock:
            for param, grad in zip(self.global_params, averaged_change):
                param.grad = grad
            self.outer.step()
            self.outer.zero_grad(set_to_none=True)

    def _advance(self, averaged_change: list[torch.Tensor] | None) -> None:
        """Apply the outer step (if any) and count the epoch in one step under the lock, so a
        peer downloading the state never gets the new parameters with the old epoch."""
        with self._lock:
            if averaged_change is not None:
                self._outer_step(averaged_change)
            self.local_epoch += 1
            self._share_state_priority()

    def _after_epoch(self) -> None:
        """Tell the tracker and publish the new ``G``'s sketch; a peer whose global parameters
        disagreed with its group reloads."""
        with self.tracker.pause_updates():
            self.tracker.update_epoch(self.local_epoch)
        if self._agrees_with_swarm:
            self.sketches.publish(self.local_epoch, self._sketch(), self.averager.banned_peers())
        self._adopt_swarm_exclusions()
        if not self._agrees_with_swarm:
            logger.warning("this peer's global parameters differ from its group's: reloading them")
            self.load_state_from_peers(behind_allowed=1, vouched=self._reference_holders)

    def _adopt_swarm_exclusions(self) -> None:
        """Ban here too the peers a majority of the swarm's reducers banned (their records of
        this epoch and the one before, which every peer has published by now).

        A peer bans a sender only for what it saw in the parts it reduced; one that was not in
        the sender's group, or in a group of two (where a flipped sign cannot be told from an
        honest disagreement), would otherwise let the sender into its next group. The majority
        rule keeps one accuser, or a colluding minority, from excluding an honest peer."""
        if self.observer:
            return
        banned = set(self.averager.banned_peers())
        found: dict[str, str] = {}
        for epoch in (self.local_epoch - 1, self.local_epoch):
            found.update(self.sketches.excluded(epoch))
        new = {peer: why for peer, why in found.items()
               if peer not in banned and peer != str(self.averager.peer_id)}
        for peer, why in new.items():
            logger.warning("epoch %d: excluding peer %s from the next groups, as the swarm did (%s)",
                           self.local_epoch, peer, why)
        if new:
            self.averager.ban(new)
            self.tracker.exclude(new)

    def _move_local(self, values: list[torch.Tensor]) -> None:
        """Set the live (trainable) parameters to ``values`` and start the next round there."""
        with torch.no_grad():
            for param, value in zip(self.params, values):
                param.copy_(value.to(param.device, param.dtype))
        self._round_start = [value.detach().clone() for value in values]

    def _as_sent(self, change: list[torch.Tensor]) -> list[torch.Tensor]:
        """``change`` as the other peers receive it: after the averaging compression's round trip."""
        sent = []
        for index, tensor in enumerate(change):
            info = CompressionInfo.from_tensor(tensor, key=index, role=TensorRole.GRADIENT)
            sent.append(deserialize_torch_tensor(
                self._compression.compress(tensor, info, allow_inplace=False)))
        return sent

    # ---- agreement and the global state ------------------------------------------------------

    def _sketch(self) -> list[float]:
        return sketch(self.global_params)

    def _check_agreement(self, gathered: dict, own_sketch: list[float]) -> None:
        """Mark this peer as diverged when its group's reference holds other global parameters.

        A round that failed for some peers but not others, or a part of the all-reduce that never
        arrived, leaves peers with different ``G``; averaging changes never repairs that. The
        reference is the sketch most peers agree with, ties broken by the lowest peer id, so with
        two peers exactly one of them reloads the other's state. A peer that differs remembers
        which peers held the reference: their one published vote lets it load that state.
        """
        valid = [(str(peer), data["sketch"]) for peer, data in sorted(gathered.items(),
                                                                      key=lambda kv: str(kv[0]))
                 if isinstance(data, dict) and len(data.get("sketch", ())) == SKETCH_SIZE]
        if not valid:
            return
        peers, sketches = zip(*valid)

        support = [sum(sketches_agree(s, other) for other in sketches) for s in sketches]
        reference = sketches[support.index(max(support))]
        self._agrees_with_swarm = sketches_agree(own_sketch, reference)
        self._reference_holders = frozenset() if self._agrees_with_swarm else frozenset(
            peer for peer, s in zip(peers, sketches) if sketches_agree(s, reference))

    def _share_state_priority(self) -> None:
        """Peers download from the newest epoch, and among equals from those in agreement."""
        if self.averager.allow_state_sharing:  # observers and client-mode peers share nothing
            self.averager.state_sharing_priority = self.local_epoch + 0.5 * self._agrees_with_swarm

    def _current_state(self):
        """What a peer downloading the state receives: epoch, global parameters, outer momentum,
        and with overlap the finished average of the round whose outer step is still to come."""
        with self._lock:
            n = len(self.global_params)
            momentum = self._momentum_buffers()
            has_momentum = momentum is not None
            pending = self._finished_pending()
            tensors = [g.detach().clone() for g in self.global_params]
            roles = [TensorRole.PARAMETER] * n
            if has_momentum:
                tensors += [m.detach().clone() for m in momentum]
                roles += [TensorRole.OPTIMIZER] * n
            if pending is not None:
                tensors += pending
                roles += [TensorRole.PARAMETER] * n
            infos = [CompressionInfo.from_tensor(t, key=i, role=role)
                     for i, (t, role) in enumerate(zip(tensors, roles))]
            metadata = {"epoch": self.local_epoch, "has_momentum": has_momentum,
                        "has_pending": pending is not None}
            return metadata, tensors, infos

    def _finished_pending(self) -> list[torch.Tensor] | None:
        """The averaged change of the overlapped round, if its all-reduce already succeeded."""
        round_ = self._pending
        if round_ is None:
            return None
        if round_.averaged is not None:
            return [t.clone() for t in round_.averaged]
        control = round_.control
        if not control.done() or control.cancelled() or control.exception() is not None \
                or not control.result()["gathered"] or control.result()["verdicts"].get("bad_reducers"):
            return None
        with self.averager.get_tensors() as buffers:
            return [buffer.clone() for buffer in buffers]

    def _cancel_rounds(self) -> None:
        """Abandon the overlapped and the pre-scheduled round (before reloading or stopping)."""
        with self._lock:
            if self._pending is not None and self._pending.control is not None:
                _cancel(self._pending.control)
            if self._scheduled is not None:
                _cancel(self._scheduled[0])
            self._pending = self._scheduled = None

    def load_state_from_peers(self, behind_allowed: int = 0,
                              vouched: frozenset[str] = frozenset()) -> bool:
        """Download the swarm's global state, verified, and restart the local round from it.

        Each candidate must be finite, of the right shape, and match the sketch a quorum of
        admitted peers published for its epoch (:mod:`hivetrain.swarm.state_check`). A peer that
        sends what no honest peer holds (non-finite values, another shape, an epoch beyond every
        admitted peer's progress report) is banned; one whose state is only older, ahead of the
        quorum's epoch but reported by some peer, or not the quorum's (an honest peer can drift
        too), is skipped. Banning those isolated an honest peer: measured, a miner one
        epoch ahead of its group banned both honest peers for "behind" states and trained alone.

        :param behind_allowed: epochs the state may be behind this peer's: 1 when this peer's
            ``G`` differs from its group's, whose consensus may carry the epoch before.
        :param vouched: the peers that held its group's reference ``G`` then: asked first, and
            one vote of theirs is enough (:meth:`~hivetrain.swarm.state_check.SketchBoard.judge`).
        """
        self._cancel_rounds()
        skip: set[str] = set()
        prefer = set(vouched) or self._majority_holders()
        for _ in range(MAX_STATE_SOURCES):
            loaded = self.averager.download_state(timeout=self.load_state_timeout, skip=skip,
                                                  prefer=prefer)
            if loaded is None:
                break
            peer, metadata, tensors = loaded
            problem, offence = self._state_problem(metadata, tensors, behind_allowed, vouched)
            if problem is None:
                self._apply_state(metadata, tensors)
                logger.info("loaded the global state of epoch %d from %s", self.local_epoch, peer)
                if not self.observer:  # it holds that state now: one more vote for the next joiner
                    self.sketches.publish(self.local_epoch, self._sketch(),
                                          self.averager.banned_peers())
                return True
            logger.warning("rejected the global state from %s: %s; %sasking another peer", peer,
                           problem, "banning it, " if offence else "")
            skip.add(peer)
            if offence:
                self.averager.ban([peer])
                self.tracker.exclude([peer])
        logger.warning("no peer could send a verified global state; continuing from our own")
        return False

    def _majority_holders(self) -> set[str]:
        """The peers holding the best-supported ``G`` of the newest epoch that has one (the
        swarm's, or the one before while its sketches are still being stored)."""
        trainers = self._training_peers() - (not self.observer)
        newest = max(self.swarm_epoch, self.local_epoch)
        for epoch in (newest, newest - 1):
            holders = self.sketches.holders(epoch, trainers)
            if holders:
                return holders
        return set()

    def _state_problem(self, metadata, tensors, behind_allowed: int = 0,
                       vouched: frozenset[str] = frozenset()) -> tuple[str | None, bool]:
        """Why a downloaded state must not be used (None if it may), and whether sending it is
        an offence no honest peer commits."""
        n = len(self.global_params)
        if not isinstance(metadata, dict) or not isinstance(metadata.get("epoch"), int):
            return "no epoch in its metadata", True
        parts = 1 + bool(metadata.get("has_momentum")) + bool(metadata.get("has_pending"))
        if len(tensors) != parts * n or any(t.shape != g.shape
                                            for t, g in zip(tensors, self.global_params * parts)):
            return "tensors of another shape", True
        if not finite(tensors):
            return "non-finite values", True
        if metadata["epoch"] > max(self.swarm_epoch, self.local_epoch) + 1:
            self.tracker.refresh()  # the scheduled view can be several fast epochs old
        if metadata["epoch"] > max(self.swarm_epoch, self.local_epoch) + 1:
            reported = self.tracker.highest_reported_epoch
            if metadata["epoch"] > reported + 1:
                return (f"epoch {metadata['epoch']} is ahead of every admitted peer's progress "
                        f"report (the highest is {reported})"), True
            # The quorum is the second-highest report: one joining or lagging peer holds it back
            # while the honest rest trains on. Banning those peers for being ahead of it left a
            # validator with every miner excluded and its epoch stuck for 10 minutes.
            return (f"epoch {metadata['epoch']} is ahead of the swarm's {self.swarm_epoch}, which "
                    f"a quorum of peers reports (the highest report is {reported})"), False
        if metadata["epoch"] < self.local_epoch - behind_allowed:
            return f"epoch {metadata['epoch']} is behind this peer's {self.local_epoch}", False
        trainers = self._training_peers() - (not self.observer)
        return self.sketches.judge(metadata["epoch"], sketch(tensors[:n]), trainers,
                                   vouched=vouched,
                                   corroborated=metadata["epoch"] <= self.swarm_epoch), False

    def _apply_state(self, metadata: dict, tensors: list[torch.Tensor]) -> None:
        n = len(self.global_params)
        with self._lock, torch.no_grad():
            for g, t in zip(self.global_params, tensors[:n]):
                g.copy_(t)
            self.outer.state.clear()
            if metadata.get("has_momentum"):
                for g, m in zip(self.global_params, tensors[n:2 * n]):
                    self.outer.state[g]["momentum_buffer"] = m.clone()
            if metadata.get("has_pending"):
                self._pending = _Round(None, [], [], averaged=list(tensors[-n:]))
            self.local_epoch = int(metadata["epoch"])
            self._agrees_with_swarm = True
            self._share_state_priority()
        self._move_local(self.global_params)
        self.inner_step = 0
        self._apply_schedule()
        with self.tracker.pause_updates():
            self.tracker.update_epoch(self.local_epoch)

    # ---- the miner-facing interface shared with sync mode ------------------------------------

    def global_parameters(self) -> list[torch.Tensor]:
        """The swarm-global parameters, aligned with :attr:`params` (what probes must see)."""
        return self.global_params

    def averaging_facts(self) -> dict:
        """Counters for the epoch log: bytes sent, rounds averaged with peers, alone and skipped
        (a reducer's average refused), and the peers this one has banned."""
        return {"bytes_sent": self.bytes_sent.total, "rounds_averaged": self.rounds_averaged,
                "rounds_alone": self.rounds_alone, "rounds_skipped": self.rounds_skipped,
                "group": self.last_group, "banned": self.averager.banned_peers()}

    def averaging_parts(self) -> list[int]:
        """The sizes of the parts the all-reduce cuts the flattened change into, in order: the
        robust reducers bound each part on its own (validator/consistency.py fits to that)."""
        return part_sizes(self._pseudo_grads, self._compression)

    def excluded_peers(self, epoch: int) -> dict[str, str]:
        """Peer id -> why, for the peers a majority of the swarm's reducers banned by ``epoch``
        (what validators score, :func:`hivetrain.swarm.state_check.excluded_by_majority`)."""
        return self.sketches.excluded(epoch)

    def peers_holding(self, epoch: int, params: Sequence[torch.Tensor]) -> set[str]:
        """The peers whose published sketch of ``epoch`` matches ``params``: those that hold
        that ``G`` (validators ask which averaging group produced their copy)."""
        return self.sketches.holding(epoch, sketch(params))

    def admit(self, peer_ids: Iterable[str] | None) -> None:
        """Replace the set of peers allowed to average with this one and to count in progress
        (None: keep the current set, e.g. after a failed chain read)."""
        if peer_ids is None:
            return
        self.averager.set_admitted(peer_ids)
        self.tracker.admit(peer_ids)

    def load_global_state(self) -> None:
        self.load_state_from_peers()

    def outer_state(self) -> OuterState:
        """``G`` and the outer momentum of this epoch, copied together under the lock: from two
        consecutive epochs' a validator derives the change the swarm averaged between them."""
        with self._lock:
            momentum = self._momentum_buffers()
            return OuterState(
                self.local_epoch, [g.detach().clone() for g in self.global_params],
                None if momentum is None else [m.detach().clone() for m in momentum],
                self.train.outer_lr, self.train.outer_momentum)

    def _momentum_buffers(self) -> list[torch.Tensor] | None:
        """The outer optimizer's momentum per global parameter (not copied; call under the
        lock); None before the first outer step created them."""
        momentum = [self.outer.state.get(g, {}).get("momentum_buffer") for g in self.global_params]
        return None if momentum[0] is None else momentum

    def state_dict(self) -> dict:
        with self._lock:
            return {"epoch": self.local_epoch, "global_params": [g.clone() for g in self.global_params],
                    "outer": self.outer.state_dict(), "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Resume from a checkpoint: global state and epoch; the next round starts from ``G``."""
        with self._lock, torch.no_grad():
            for g, saved in zip(self.global_params, state["global_params"]):
                g.copy_(saved)
            self.outer.load_state_dict(state["outer"])
            self.local_epoch = int(state["epoch"])
            self._share_state_priority()
        self.inner.load_state_dict(state["inner"])
        self._move_local(self.global_params)
        self.inner_step = 0
        self._apply_schedule()
        with self.tracker.pause_updates():
            self.tracker.update_epoch(self.local_epoch)

    def _apply_schedule(self) -> None:
        factor = self._inner_schedule(self.local_epoch * self.inner_steps + self.inner_step)
        for group, base in zip(self.inner.param_groups, self._base_lrs):
            group["lr"] = base * factor

    def shutdown(self) -> None:
        self._cancel_rounds()
        self.tracker.shutdown()
        self.averager.shutdown()
