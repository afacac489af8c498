"""The miner's training loop, readable top to bottom: batch, forward, backward, swarm step.

Local work is ordinary PyTorch; the swarm optimizer (DiLoCo or hivemind's gradient averaging, see
:mod:`hivetrain.swarm.optimizer`) decides when the swarm steps together. The loop only watches
for the epoch changing, which is when it publishes a copy of the new swarm-global parameters for
the API to probe, records the parameter sketch (peers at the same epoch must agree on it) and
writes checkpoints.

Probes, held-out loss and checkpoints use the published copy, never the live model: in DiLoCo the
live parameters are this peer's local progress since the last outer step, and ``opt.step()`` can
spend seconds in matchmaking and all-reduce, which a probe must neither wait for nor read halfway.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import threading
import time
from dataclasses import dataclass, field

import torch

from hivetrain.config import TrainConfig
from hivetrain.miner.checkpoint import Checkpoint, save_checkpoint
from hivetrain.model.gpt2 import param_digest, param_sketch
from hivetrain.model.inputs import model_inputs, rows
from hivetrain.telemetry import Telemetry

logger = logging.getLogger(__name__)

# Above this size the per-epoch digest would cost noticeable time on every step boundary.
DIGEST_MAX_PARAMS = 50_000_000
# Peers re-read the admitted set from the chain each epoch, so one that registered and committed
# its address mid-epoch was turned away from their groups until the next epoch (for ~6 s of
# 4-second rounds in loaded tests; a whole round on a real swarm). Its progress records make this
# miner read the chain again at once, and then at most this often while a peer that never
# registers keeps reporting.
ADMISSION_RETRY_SECONDS = 5.0


@dataclass
class TrainingState:
    """What the loop has done so far; read by the miner API for probes and status."""

    samples: int = 0
    samples_since_probe: int = 0
    samples_per_second: float = 0.0
    last_loss: float = math.nan
    heldout_loss: float = math.nan
    started: float = field(default_factory=time.time)


class Trainer:
    """Runs the training loop until ``stop`` is set, the duration passes or max_epochs is hit.

    :param batches: ``epoch -> iterator of batches``: the data this miner is assigned for that
        epoch (:meth:`hivetrain.data.tokens.TokenData.assigned_batches`), [batch, seq] token
        tensors or dicts of model inputs (:func:`hivetrain.model.inputs.model_inputs`). The loop
        switches streams whenever the optimizer's epoch changes, because validators check each
        epoch's update against the first batches of that epoch's stream.
    :param heldout: fixed held-out batches, never trained on, for the held-out loss.
    :param refresh_admission: re-reads the swarm's admitted peers from the chain; called at each
        new epoch and when peers the swarm does not admit yet report progress.
    """

    def __init__(self, model, optimizer, batches, heldout, train: TrainConfig, device: torch.device,
                 telemetry: Telemetry, run_dir, run_id: str, refresh_admission=lambda: None):
        self.model, self.opt, self.batches, self.heldout = model, optimizer, batches, heldout
        self.train, self.device, self.telemetry = train, device, telemetry
        self.run_dir, self.run_id = run_dir, run_id
        self._refresh_admission, self._admission_read = refresh_admission, -math.inf
        self.state = TrainingState()
        self.stop = threading.Event()
        self._small_model = sum(p.numel() for p in model.parameters()) <= DIGEST_MAX_PARAMS
        self.published_lock = threading.Lock()
        self.published = copy.deepcopy(model).eval()
        self.publish(optimizer.local_epoch)

    def publish(self, epoch: int) -> None:
        """Copy the swarm-global parameters of ``epoch`` to the model that probes read.

        Frozen parameters never change; the trainable ones come from the optimizer's global copy.
        """
        trainable = [p for p in self.published.parameters() if p.requires_grad]
        with self.published_lock, torch.no_grad():
            for published, value in zip(trainable, self.opt.global_parameters()):
                published.copy_(value)
            self.published_epoch = epoch

    def autocast(self):
        """bf16 autocast on CUDA (parameters and optimizer stay fp32); plain fp32 on the CPU."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run(self) -> None:
        """Train until stopped, then checkpoint: the checkpoint comes first and is written even
        when the loop fails, since it is what a restart (an auto-update, a pm2 stop) resumes from."""
        window_losses: list[float] = []
        try:
            self._loop(window_losses)
        finally:
            self.save()
        self.report(window_losses, self.state.samples_per_second)

    def _loop(self, window_losses: list[float]) -> None:
        train = self.train
        deadline = time.monotonic() + train.duration if train.duration else math.inf
        last_epoch = self.opt.local_epoch
        batches = self.batches(last_epoch)
        window_start, window_samples = time.monotonic(), 0
        self.model.train()
        self.report(window_losses, 0.0)
        while not self.stop.is_set() and time.monotonic() < deadline:
            inputs = model_inputs(next(batches), self.device)
            with self.autocast():
                loss = self.model(**inputs).loss
            loss.backward()
            step_started = time.monotonic()
            self.opt.step()  # an epoch's step includes matchmaking and the all-reduces
            step_seconds = time.monotonic() - step_started
            self.opt.zero_grad()
            window_losses.append(loss.item())
            window_samples += rows(inputs)
            self.state.samples += rows(inputs)
            self.state.samples_since_probe += rows(inputs)
            if self.opt.local_epoch != last_epoch:
                last_epoch = self.opt.local_epoch
                batches = self.batches(last_epoch)
                self.on_new_epoch(last_epoch, step_seconds)
                if train.max_epochs and last_epoch >= train.max_epochs:
                    break
            elif self.opt.newcomers and \
                    time.monotonic() - self._admission_read >= ADMISSION_RETRY_SECONDS:
                self.refresh_admission()
            elapsed = time.monotonic() - window_start
            if elapsed >= train.log_every:
                self.report(window_losses, window_samples / elapsed)
                window_start, window_samples = time.monotonic(), 0
                window_losses.clear()

    def refresh_admission(self) -> None:
        self._admission_read = time.monotonic()
        self._refresh_admission()

    def on_new_epoch(self, epoch: int, averaging_seconds: float) -> None:
        """:param averaging_seconds: how long the step that ended the epoch took (averaging)."""
        self.publish(epoch)
        self.refresh_admission()
        with self.published_lock:
            digest = param_digest(self.published) if self._small_model else None
            sketch = param_sketch(self.published) if self._small_model else None
        peers = self.opt.swarm_peers
        facts = self.opt.averaging_facts()
        self.telemetry.log("epoch", epoch=epoch, digest=digest, sketch=sketch, peers=peers,
                           samples=self.state.samples, averaging_seconds=averaging_seconds,
                           **facts)
        logger.info("epoch %d (peers %d, averaging %.1f s, %.2f MB sent so far, digest %s)",
                    epoch, peers, averaging_seconds, facts["bytes_sent"] / 1e6, digest)
        every = self.train.checkpoint_every
        if every and epoch % every == 0:
            self.save()

    @torch.no_grad()
    def heldout_loss(self) -> float:
        """Loss of the published swarm-global model on the fixed held-out batches."""
        losses = []
        with self.published_lock:
            for batch in self.heldout:
                with self.autocast():
                    losses.append(self.published(**model_inputs(batch, self.device)).loss.item())
        return sum(losses) / len(losses)

    def report(self, losses: list[float], samples_per_second: float) -> None:
        state = self.state
        state.last_loss = sum(losses) / len(losses) if losses else state.last_loss
        state.samples_per_second = samples_per_second
        state.heldout_loss = self.heldout_loss()
        peers = self.opt.swarm_peers
        self.telemetry.log("train", loss=state.last_loss, heldout_loss=state.heldout_loss,
                           samples_per_second=samples_per_second, epoch=self.opt.local_epoch,
                           peers=peers, samples=state.samples)
        logger.info("epoch %d | loss %.3f | held-out %.3f | %.1f samples/s | %d peers",
                    self.opt.local_epoch, state.last_loss, state.heldout_loss,
                    samples_per_second, peers)

    def save(self) -> None:
        if not self.train.checkpoint_every:
            return
        with self.published_lock:
            model_state = {k: v.detach().clone() for k, v in self.published.state_dict().items()}
        checkpoint = Checkpoint(run_id=self.run_id, epoch=self.published_epoch,
                                samples=self.state.samples, model=model_state,
                                optimizer=self.opt.state_dict())
        path = save_checkpoint(self.run_dir, checkpoint)
        logger.info("checkpoint at epoch %d written to %s", checkpoint.epoch, path)
