"""The pseudo-gradients this peer put into the swarm's all-reduce, kept for the last few epochs.

In DiLoCo a miner's work for epoch ``e`` is one tensor list: ``G_e - theta``, the change its inner
steps made to the global parameters. That is what it averages with the swarm, and it is what a
validator must see to judge the work: the loss it removes on the miner's assigned data and on
random data, and whether it matches what the swarm averaged. The history holds exactly what was
sent (after a round-trip through the averaging compression) with the sample count claimed for it.
"""

from __future__ import annotations

import dataclasses
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
    :param group: the DHT peer ids of the group it was averaged with (empty until the
        all-reduce gathered one, and for a round this peer ended alone): a validator checks
        the swarm's outer step against the updates of exactly this group.
    """

    epoch: int
    tensors: tuple[torch.Tensor, ...]
    samples: int
    group: tuple[str, ...] = ()

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

    def set_group(self, epoch: int, group) -> None:
        """Name the peers ``epoch``'s update was averaged with (known only once the all-reduce
        gathered them, after the update was recorded)."""
        with self._lock:
            kept = self._updates.get(epoch)
            if kept is not None:
                named = dataclasses.replace(kept, group=tuple(sorted(group)))
                if "digest" in kept.__dict__:  # same tensors: keep the hash (0.5 GB on gpt2)
                    named.__dict__["digest"] = kept.__dict__["digest"]
                self._updates[epoch] = named

    def get(self, epoch: int) -> Update | None:
        with self._lock:
            return self._updates.get(epoch)

    def latest(self) -> Update | None:
        with self._lock:
            return next(reversed(self._updates.values()), None)

    def epochs(self) -> list[int]:
        with self._lock:
            return list(self._updates)
