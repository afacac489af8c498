"""The pseudo-gradients this peer put into the swarm's all-reduce, kept for the last few epochs.

In DiLoCo a miner's work for epoch ``e`` is one tensor list: ``G_e - theta``, the change its inner
steps made to the global parameters. That is what it averages with the swarm, and it is what a
validator must see to judge the work: the loss it removes on the miner's assigned data and on
random data, and whether it matches what the swarm averaged. The history holds exactly what was
sent (after a round-trip through the averaging compression) with the sample count claimed for it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property

import torch

KEEP_EPOCHS = 4


@dataclass(frozen=True)
class Update:
    """One round's contribution.

    :param epoch: the epoch ``e`` of the global parameters ``G_e`` the round started from.
    :param tensors: ``G_e - theta`` per trainable parameter, float32 on the CPU.
    :param samples: the weight (samples trained) this peer claimed in the all-reduce.
    """

    epoch: int
    tensors: tuple[torch.Tensor, ...]
    samples: int

    @cached_property
    def digest(self) -> str:
        """Computed once (every probe answer carries it; for gpt2 it hashes 0.5 GB)."""
        return update_digest(self.tensors)


def update_digest(tensors) -> str:
    """sha256 over the float32 bytes of every tensor in order (what the miner signs and serves)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


class UpdateHistory:
    """The last ``keep`` epochs' updates; thread-safe (the API thread reads, the trainer writes)."""

    def __init__(self, keep: int = KEEP_EPOCHS):
        self.keep = keep
        self._updates: OrderedDict[int, Update] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, epoch: int, tensors, samples: int) -> Update:
        update = Update(epoch, tuple(t.detach().to("cpu", torch.float32).clone() for t in tensors),
                        int(samples))
        with self._lock:
            self._updates[epoch] = update
            self._updates.move_to_end(epoch)
            while len(self._updates) > self.keep:
                self._updates.popitem(last=False)
        return update

    def get(self, epoch: int) -> Update | None:
        with self._lock:
            return self._updates.get(epoch)

    def latest(self) -> Update | None:
        with self._lock:
            return next(reversed(self._updates.values()), None)

    def epochs(self) -> list[int]:
        with self._lock:
            return list(self._updates)
