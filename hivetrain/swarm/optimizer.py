"""The swarm optimizer of each training mode: DiLoCo (default) or hivemind's gradient averaging.

:func:`make_optimizer` builds either; the trainer, the miner's catch-up and the validator use only
what both offer: ``step``, ``zero_grad``, ``local_epoch``, the :class:`~hivetrain.swarm.view.SwarmView`
members, ``global_parameters``,
``load_state_from_peers``, ``load_global_state``, ``state_dict`` and ``averaging_facts``.

In sync mode every peer accumulates gradients until the swarm as a whole has processed
``--train.target_batch_size`` samples; then the peers all-reduce their gradients and each applies
the same optimizer step. Parameters are then averaged too (state averaging), which repairs the
drift of a peer that missed a round or rounded differently under compression. One such step is one *epoch* in hivemind's
vocabulary and the unit in which progress, checkpoints and validator probes are counted.
"""

from __future__ import annotations

import logging

import hivemind
import torch
from hivemind.compression import (Float16Compression, NoCompression, RoleAdaptiveCompression,
                                  Uniform8BitQuantization)

from hivetrain.config import TrainConfig
from hivetrain.swarm.diloco import DiLoCoOptimizer
from hivetrain.swarm.traffic import ByteCounter, CountingCompression
from hivetrain.swarm.view import SwarmView

logger = logging.getLogger(__name__)

COMPRESSION = {
    "none": NoCompression,
    "fp16": Float16Compression,
    "int8": Uniform8BitQuantization,
}


def load_state_compression(name: str) -> RoleAdaptiveCompression:
    """How a joining peer downloads the state: parameters as configured, optimizer statistics exact.

    AdamW's second moment holds squared gradients, around 1e-10 after the first steps of the tiny
    model and smaller for bigger ones: fp16 flushes most of it to zero (int8 even more). A peer
    that loads such a state takes its next step with m / sqrt(v) tens of times too large, and the
    state averaging right after hands that damage to every peer: the whole swarm's held-out loss
    jumped from 8.2 to 11.8 at the epoch after two miners joined. The download happens once per
    join, so sending the statistics uncompressed costs little.
    """
    return RoleAdaptiveCompression(parameter=COMPRESSION[name](), optimizer=NoCompression(),
                                   default=COMPRESSION[name]())


def optimizer_factory(train: TrainConfig, device: torch.device):
    """``params -> torch optimizer`` for the configured recipe (AdamW or bitsandbytes 8-bit)."""
    kwargs = dict(lr=train.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=train.weight_decay)
    if train.optimizer == "adamw8bit":
        import bitsandbytes as bnb  # only needed for this recipe; heavy to import

        return lambda params: bnb.optim.AdamW8bit(params, **kwargs)
    return lambda params: torch.optim.AdamW(params, **kwargs)


def warmup_schedule(warmup_epochs: int):
    """Linear warm-up over the first epochs, then constant: swarm size changes epoch length."""
    def factor(epoch: int) -> float:
        return min(1.0, (epoch + 1) / (warmup_epochs + 1))

    return lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, factor)


def inner_step_schedule(warmup_steps: int):
    """Linear warm-up over the first local steps of the run, then constant (DiLoCo inner lr)."""
    return lambda step: min(1.0, (step + 1) / (warmup_steps + 1))


class SyncOptimizer(hivemind.Optimizer, SwarmView):
    """hivemind.Optimizer plus the interface the trainer and validator share with DiLoCo."""

    def __init__(self, *args, bytes_sent: ByteCounter, trainable: list, **kwargs):
        self.bytes_sent, self._trainable = bytes_sent, trainable
        super().__init__(*args, **kwargs)

    def global_parameters(self) -> list[torch.Tensor]:
        """After each epoch's step the live parameters are the swarm-global ones."""
        return self._trainable

    def averaging_facts(self) -> dict:
        """Counters for the epoch log: bytes sent in gradient and state averaging."""
        return {"bytes_sent": self.bytes_sent.total}

    def admit(self, peer_ids) -> None:
        """Gradient averaging takes hivemind's groups as they come: admission, robust reduction
        and verified downloads exist in DiLoCo mode only (docs/security.md)."""

    def load_global_state(self) -> None:
        # The state averager's own loader keeps the epoch the state was saved at; the
        # Optimizer's wrapper would relabel it as the swarm's next epoch while catching up.
        self.state_averager.load_state_from_peers(timeout=self.load_state_timeout)


def make_optimizer(dht: hivemind.DHT, run_id: str, model: torch.nn.Module, train: TrainConfig,
                   device: torch.device, observer: bool = False, admitted=None):
    """The swarm optimizer of ``--train.mode`` over the model's trainable parameters.

    :param run_id: the fingerprinted id; peers with another run_id never meet in matchmaking.
    :param device: where the model lives; on CUDA the optimizer steps on the GPU tensors
        themselves instead of CPU copies, which is what makes 8-bit AdamW worthwhile.
    :param observer: follow the swarm's state without training (validators).
    :param admitted: the DHT peer ids allowed to average and report progress (DiLoCo; see
        :class:`hivetrain.swarm.diloco.DiLoCoOptimizer`); None admits everyone.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    if train.mode == "diloco":
        return DiLoCoOptimizer(
            dht, run_id, trainable, train, optimizer_factory(train, device),
            inner_schedule=inner_step_schedule(train.warmup_epochs * train.inner_steps),
            compression=COMPRESSION[train.grad_compression](), observer=observer,
            admitted=admitted)
    return make_sync_optimizer(dht, run_id, trainable, train, device)


def make_sync_optimizer(dht: hivemind.DHT, run_id: str, trainable: list, train: TrainConfig,
                        device: torch.device) -> SyncOptimizer:
    """Gradient averaging every ``target_batch_size`` samples, parameters averaged each epoch."""
    counter = ByteCounter()
    return SyncOptimizer(
        dht=dht,
        run_id=run_id,
        params=trainable,
        bytes_sent=counter,
        trainable=trainable,
        optimizer=optimizer_factory(train, device),
        scheduler=warmup_schedule(train.warmup_epochs),
        batch_size_per_step=train.batch_size,
        target_batch_size=train.target_batch_size,
        matchmaking_time=train.matchmaking_time,
        averaging_timeout=train.averaging_timeout,
        load_state_timeout=max(60.0, train.averaging_timeout * 2),
        offload_optimizer=device.type == "cpu",
        grad_compression=CountingCompression(COMPRESSION[train.grad_compression](), counter),
        state_averaging_compression=CountingCompression(COMPRESSION[train.state_compression](),
                                                        counter),
        load_state_compression=load_state_compression(train.state_compression),
        average_state_every=1,
        # Average parameters inside the epoch's step rather than in the background, so peers that
        # took part in the round leave it with the same parameters (up to float rounding).
        delay_state_averaging=False,
        verbose=False,
    )
