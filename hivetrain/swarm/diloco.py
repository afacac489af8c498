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
from typing import Callable, Sequence

import hivemind
import torch
from hivemind.averaging import DecentralizedAverager
from hivemind.averaging.control import StepControl
from hivemind.compression import (CompressionInfo, NoCompression, RoleAdaptiveCompression,
                                  TensorRole)
from hivemind.optim.progress_tracker import ProgressTracker
from hivemind.utils.crypto import RSAPrivateKey
from hivemind.utils.timed_storage import get_dht_time

from hivetrain.config import TrainConfig
from hivetrain.swarm.traffic import ByteCounter, CountingCompression

logger = logging.getLogger(__name__)

# Peers compare their global parameters as the L2 norms of SKETCH_SIZE contiguous chunks. An
# all-reduce part that did not arrive (hivemind logs "received 82.7% results" and goes on) leaves
# a peer with its own change over a whole chunk: a relative difference of 1e-3 or more in that
# chunk's norm. Float rounding and fp16 compression of the averaged change move norms by ~1e-6 per
# round; when that drift adds up past the tolerance, the minority simply reloads the state.
AGREEMENT_RTOL = 1e-4
SKETCH_SIZE = 64
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


def _cancel(control: StepControl) -> None:
    """Cancel a round unless it already ended (hivemind raises on cancelling a finished one)."""
    if not control.done():
        try:
            control.cancel()
        except InvalidStateError:  # it finished in the meantime
            pass


class SwarmMovedOn(Exception):
    """The swarm completed the round this peer was waiting to average."""


class _GlobalStateAverager(DecentralizedAverager):
    """All-reduces pseudo-gradients; serves the owner's global state to peers that load it."""

    def __init__(self, get_state: Callable, *args, **kwargs):
        self._get_state = get_state
        super().__init__(*args, **kwargs)

    def get_current_state(self):
        return self._get_state()


class DiLoCoOptimizer:
    """Drop-in for the miner's ``hivemind.Optimizer``: call :meth:`step` after every backward.

    :param params: the trainable parameters (frozen ones are neither stepped nor averaged).
    :param inner_optimizer: ``params -> torch optimizer`` for the local steps (AdamW in practice).
    :param inner_schedule: ``global inner step -> learning-rate factor``; counted over the whole
        run so a joining peer warms up where the swarm is, not from zero.
    :param observer: follow the swarm's global state without training or averaging (validators).
    :param compression: hivemind compression for the averaged pseudo-gradients.
    :param state_compression: compression for the outer momentum sent to joining peers (the
        global parameters are always sent exactly).
    """

    def __init__(self, dht: hivemind.DHT, run_id: str, params: Sequence[torch.nn.Parameter],
                 train: TrainConfig, inner_optimizer: Callable, *, inner_schedule: Callable,
                 compression, state_compression, observer: bool = False):
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
        self.bytes_sent = ByteCounter()
        self.rounds_ended = self.rounds_averaged = self.rounds_alone = 0
        self._pseudo_grads = [torch.zeros_like(g) for g in self.global_params]
        self.averager = _GlobalStateAverager(
            self._current_state, averaged_tensors=self._pseudo_grads, dht=dht,
            prefix=f"{run_id}_diloco", start=True, min_matchmaking_time=train.matchmaking_time,
            # hivemind warns that requests slower than matchmaking can deadlock it.
            request_timeout=min(3.0, train.matchmaking_time / 2),
            compression=CountingCompression(compression, self.bytes_sent),
            # Global parameters travel exactly: a rounded copy would never agree with the swarm's.
            state_compression=RoleAdaptiveCompression(parameter=NoCompression(),
                                                      default=state_compression),
            allow_state_sharing=not observer,
            client_mode=dht.client_mode, next_chunk_timeout=train.averaging_timeout)
        # Its own signing key, not hivemind's process-wide one: progress records are keyed by the
        # signer, so two optimizers in one process would otherwise overwrite each other's.
        self.tracker = ProgressTracker(dht, prefix=run_id, start=True, client_mode=observer,
                                       target_batch_size=train.inner_steps * train.batch_size,
                                       private_key=RSAPrivateKey())
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
        try:
            self._end_round(change, samples)
        except SwarmMovedOn:
            logger.info("the swarm finished epoch %d without this peer: loading its state",
                        self.local_epoch)
            self.load_state_from_peers()

    def _end_round(self, change: list[torch.Tensor], samples: int) -> None:
        if not self.overlap:
            round_ = self._average(change, samples)
            self._advance(self._finish(round_) if round_ else change)
            self._move_local(self.global_params)
        else:
            previous = self._finish(self._pending) if self._pending is not None else None
            with self._lock:
                self._pending = None
            round_ = self._average(change, samples)  # keyed and sketched before the outer step
            if round_ is None:  # alone in the swarm: nothing to overlap with
                if previous is not None:
                    self._outer_step(previous)
                self._advance(change)
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
        with self._lock, self.averager.get_tensors() as buffers:
            for buffer, tensor in zip(buffers, change):
                buffer.copy_(tensor)
        control.weight = float(samples)
        control.allow_allreduce()
        return _Round(control, change, sketch)

    def _finish(self, round_: _Round) -> list[torch.Tensor]:
        """The averaged change of ``round_``, or this peer's own change when the round failed."""
        if round_.averaged is not None:  # downloaded with the global state
            return round_.averaged
        try:
            # An overlapped round is already in the past: the swarm moving on says nothing.
            gathered = self._wait(round_.control, may_abandon=not self.overlap)
        except SwarmMovedOn:
            raise
        except Exception as error:
            _cancel(round_.control)
            gathered = None
            logger.warning("averaging round failed (%r); applying this peer's own change", error)
        if not gathered:
            self.rounds_alone += 1
            return round_.change
        with self.averager.get_tensors() as buffers:
            averaged = [buffer.clone() for buffer in buffers]
        self.rounds_averaged += 1
        self._check_agreement(gathered, round_.sketch)
        logger.info("averaged the parameter change with %d peers", len(gathered))
        return averaged

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
        """Tell the tracker; a peer whose global parameters disagreed with its group reloads."""
        with self.tracker.pause_updates():
            self.tracker.update_epoch(self.local_epoch)
        if not self._agrees_with_swarm:
            logger.warning("this peer's global parameters differ from its group's: reloading them")
            self.load_state_from_peers()

    def _move_local(self, values: list[torch.Tensor]) -> None:
        """Set the live (trainable) parameters to ``values`` and start the next round there."""
        with torch.no_grad():
            for param, value in zip(self.params, values):
                param.copy_(value.to(param.device, param.dtype))
        self._round_start = [value.detach().clone() for value in values]

    # ---- agreement and the global state ------------------------------------------------------

    def _sketch(self) -> list[float]:
        flat = torch.cat([g.reshape(-1) for g in self.global_params]).double()
        return [chunk.norm().item() for chunk in flat.tensor_split(SKETCH_SIZE)]

    def _check_agreement(self, gathered: dict, own_sketch: list[float]) -> None:
        """Mark this peer as diverged when its group's reference holds other global parameters.

        A round that failed for some peers but not others, or a part of the all-reduce that never
        arrived, leaves peers with different ``G``; averaging changes never repairs that. The
        reference is the sketch most peers agree with, ties broken by the lowest peer id, so with
        two peers exactly one of them reloads the other's state.
        """
        sketches = [data["sketch"] for _, data in sorted(gathered.items(), key=lambda kv: str(kv[0]))
                    if isinstance(data, dict) and len(data.get("sketch", ())) == SKETCH_SIZE]
        if not sketches:
            return

        def close(a, b):
            return all(abs(x - y) <= AGREEMENT_RTOL * max(abs(x), abs(y), 1e-12)
                       for x, y in zip(a, b))

        support = [sum(close(s, other) for other in sketches) for s in sketches]
        reference = sketches[support.index(max(support))]
        self._agrees_with_swarm = close(own_sketch, reference)

    def _share_state_priority(self) -> None:
        """Peers download from the newest epoch, and among equals from those in agreement."""
        if self.averager.allow_state_sharing:  # observers and client-mode peers share nothing
            self.averager.state_sharing_priority = self.local_epoch + 0.5 * self._agrees_with_swarm

    def _current_state(self):
        """What a peer downloading the state receives: epoch, global parameters, outer momentum,
        and with overlap the finished average of the round whose outer step is still to come."""
        with self._lock:
            n = len(self.global_params)
            momentum = [self.outer.state.get(g, {}).get("momentum_buffer") for g in self.global_params]
            has_momentum = momentum[0] is not None
            pending = self._finished_pending()
            tensors = [g.detach().clone() for g in self.global_params]
            roles = [TensorRole.PARAMETER] * n
            if has_momentum:
                tensors += [m.detach().clone() for m in momentum]
                roles += [TensorRole.OPTIMIZER] * n
            if pending is not None:
                tensors += pending
                roles += [TensorRole.PARAMETER] * n  # it decides the next G: sent exactly
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
                or not control.result():
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

    def load_state_from_peers(self) -> bool:
        """Download the swarm's global state and restart the local round from it."""
        self._cancel_rounds()
        loaded = self.averager.load_state_from_peers(timeout=self.load_state_timeout)
        if loaded is None:
            logger.warning("no peer could send the global state; continuing from our own")
            return False
        metadata, tensors = loaded
        n = len(self.global_params)
        parts = 1 + bool(metadata.get("has_momentum")) + bool(metadata.get("has_pending"))
        if len(tensors) != parts * n or any(t.shape != g.shape
                                            for t, g in zip(tensors, self.global_params * parts)):
            logger.warning("a peer sent a global state of another shape; ignoring it")
            return False
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
        logger.info("loaded the global state of epoch %d", self.local_epoch)
        return True

    # ---- the miner-facing interface shared with sync mode ------------------------------------

    def global_parameters(self) -> list[torch.Tensor]:
        """The swarm-global parameters, aligned with :attr:`params` (what probes must see)."""
        return self.global_params

    def averaging_facts(self) -> dict:
        """Counters for the epoch log: bytes sent, rounds averaged with peers and alone."""
        return {"bytes_sent": self.bytes_sent.total, "rounds_averaged": self.rounds_averaged,
                "rounds_alone": self.rounds_alone}

    def load_global_state(self) -> None:
        self.load_state_from_peers()

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
