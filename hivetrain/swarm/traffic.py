"""Counting the bytes a peer puts on the wire when it averages, for the communication figures.

hivemind serialises every tensor part it sends through the averager's compression, in the
averager's own (forked) process. :class:`CountingCompression` wraps that compression and adds the
size of each serialised buffer to a counter in shared memory, so the training process reads the
total without any hook into hivemind's networking.

What it counts: the tensor payload a peer sends as a *sender* of its parts, compressed. In
hivemind's butterfly all-reduce the peer reducing a part returns a delta of the same size and
compression, which hivemind serialises without this wrapper, so a peer's whole upload is about
twice the count (for equal shares); protocol framing adds a few dozen bytes per part. Every mode
is counted the same way, so ratios between modes are exact.

:class:`DHTRequests` counts the other traffic averaging makes: the lookups and stores a DHT node
serves, per key (tests/test_dht_cost.py, bench/dht_requests.py).
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections import Counter

import hivemind
import torch
from hivemind.compression import CompressionBase, CompressionInfo
from hivemind.dht.routing import DHTID
from hivemind.proto import runtime_pb2


class ByteCounter:
    """A byte total shared with the averager processes forked after it was created."""

    def __init__(self):
        self._total = mp.Value("q", 0)

    def add(self, n: int) -> None:
        with self._total.get_lock():
            self._total.value += n

    @property
    def total(self) -> int:
        return self._total.value


class CountingCompression(CompressionBase):
    """``inner`` compression that also counts the bytes of every tensor it serialises."""

    def __init__(self, inner: CompressionBase, counter: ByteCounter):
        self.inner, self.counter = inner, counter

    def compress(self, tensor: torch.Tensor, info: CompressionInfo,
                 allow_inplace: bool = False) -> runtime_pb2.Tensor:
        serialized = self.inner.compress(tensor, info, allow_inplace)
        self.counter.add(len(serialized.buffer))
        return serialized

    def extract(self, serialized_tensor: runtime_pb2.Tensor) -> torch.Tensor:
        return self.inner.extract(serialized_tensor)

    def estimate_compression_ratio(self, info: CompressionInfo) -> float:
        return self.inner.estimate_compression_ratio(info)

    def __repr__(self):
        return f"CountingCompression({self.inner!r})"


def step_together(averagers, timeout: float) -> list:
    """One averaging round of ``averagers`` at once, each on its own thread, as peers on
    separate machines step; each one's result (None where it did not average or hung)."""
    results = [None] * len(averagers)

    def step(index):
        results[index] = averagers[index].step(timeout=timeout)

    threads = [threading.Thread(target=step, args=(i,)) for i in range(len(averagers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=2 * timeout + 20)
    return results


class DHTRequests:
    """The lookups and stores one DHT node served, per key, since this object was made.

    Every lookup and store a peer makes reaches the DHT nodes nearest the key, and on a swarm of
    a few peers that is every node, so a bystander node's counts are what the swarm asked of the
    DHT. The counters live in the node's own process (``DHT.run_coroutine``), around its storage.
    """

    def __init__(self, dht: hivemind.DHT):
        self.dht = dht
        dht.run_coroutine(_count_requests)

    def count(self, kind: str, key: str) -> int:
        """How many times ``kind`` ("lookup" or "store") reached this node for ``key``."""
        return self.dht.run_coroutine(_read_requests)[kind, DHTID.generate(source=key)]


async def _count_requests(dht, node) -> None:
    counts = Counter()
    storage = node.protocol.storage

    def counted(kind, method):
        def call(key, *args, **kwargs):
            counts[kind, key] += 1
            return method(key, *args, **kwargs)
        return call

    storage.get = counted("lookup", storage.get)
    storage.store = counted("store", storage.store)
    storage.store_subkey = counted("store", storage.store_subkey)
    node.request_counts = counts


async def _read_requests(dht, node) -> Counter:
    return Counter(node.request_counts)
