"""Token data as neurons read it: each miner's own training stream, evaluation and probe batches.

Training tokens are cut into fixed blocks of ``seq_len`` and the blocks into contiguous shards.
Each miner walks every shard, but in an order derived from its identity (peer id or hotkey),
so miners that start together work on different text instead of duplicating each other's
gradients; the same identity always gets the same sequence, which keeps runs reproducible.

Evaluation and probes read only held-out tokens: :meth:`TokenData.heldout_batches` is one fixed
set that every peer computes identically, :meth:`TokenData.probe_batch` a set chosen by a seed
(validators derive it from a block hash and their hotkey, so miners cannot predict it).
"""

from __future__ import annotations

import hashlib
import itertools
from abc import ABC, abstractmethod
from typing import Iterator

import numpy as np
import torch

NUM_SHARDS = 256


def derive_seed(*parts: object) -> int:
    """A 128-bit seed fixed by ``parts`` on every machine (Python's ``hash`` is salted per run)."""
    digest = hashlib.sha256("\0".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:16], "big")


def gather(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> torch.LongTensor:
    """The windows ``tokens[s:s + seq_len]`` for each start, as a [len(starts), seq_len] tensor."""
    index = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(seq_len, dtype=np.int64)
    return torch.from_numpy(np.asarray(tokens[index], dtype=np.int64))


class TokenData(ABC):
    """A tokenized dataset split into training and held-out documents.

    :ivar vocab_size: number of token ids the tokenizer can produce (including special tokens).
    """

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size

    @abstractmethod
    def train_batches(self, identity: str, batch_size: int, seq_len: int) -> Iterator[torch.LongTensor]:
        """[batch_size, seq_len] training batches forever, in an order fixed by ``identity``."""

    @abstractmethod
    def heldout_tokens(self) -> np.ndarray:
        """The held-out documents' tokens, EOS-separated, in a fixed order."""

    def heldout_batches(self, n_batches: int, batch_size: int, seq_len: int) -> list[torch.LongTensor]:
        """``n_batches`` fixed evaluation batches: windows spread evenly over the held-out tokens."""
        tokens = self._heldout(seq_len)
        starts = np.linspace(0, len(tokens) - seq_len, n_batches * batch_size).round()
        return [gather(tokens, chunk, seq_len) for chunk in np.split(starts, n_batches)]

    def probe_batch(self, seed: int, batch_size: int, seq_len: int) -> torch.LongTensor:
        """One held-out [batch_size, seq_len] batch at offsets drawn from ``seed`` (an int >= 0)."""
        tokens = self._heldout(seq_len)
        starts = np.random.default_rng(seed).integers(0, len(tokens) - seq_len + 1, size=batch_size)
        return gather(tokens, starts, seq_len)

    def _heldout(self, seq_len: int) -> np.ndarray:
        tokens = self.heldout_tokens()
        if len(tokens) < seq_len:
            raise ValueError(f"only {len(tokens)} held-out tokens, fewer than one sequence of "
                             f"{seq_len}; raise --data.heldout_fraction or add data")
        return tokens


class ArrayTokenData(TokenData):
    """Token data held in two flat arrays (in memory or memory-mapped ``.npy`` files)."""

    def __init__(self, train: np.ndarray, heldout: np.ndarray, vocab_size: int,
                 num_shards: int = NUM_SHARDS):
        super().__init__(vocab_size)
        self.train, self.heldout, self.num_shards = train, heldout, num_shards

    def heldout_tokens(self) -> np.ndarray:
        return self.heldout

    def num_blocks(self, seq_len: int) -> int:
        """Whole ``seq_len`` blocks in the training tokens (the ragged tail is never read)."""
        return len(self.train) // seq_len

    def shards(self, seq_len: int) -> list[range]:
        """Block indices of each shard: contiguous, near-equal ranges that cover every block once."""
        blocks = self.num_blocks(seq_len)
        if blocks == 0:
            raise ValueError(f"{len(self.train)} training tokens do not fill one sequence of {seq_len}")
        count = min(self.num_shards, blocks)
        bounds = [i * blocks // count for i in range(count + 1)]
        return [range(lo, hi) for lo, hi in zip(bounds, bounds[1:])]

    def block_order(self, identity: str, seq_len: int, epoch: int = 0) -> np.ndarray:
        """Every block index once: shards in an identity-specific order, each shuffled inside."""
        rng = np.random.default_rng(derive_seed("blocks", identity, seq_len, epoch))
        shards = self.shards(seq_len)
        return np.concatenate([rng.permutation(np.asarray(shards[s], dtype=np.int64))
                               for s in rng.permutation(len(shards))])

    def train_batches(self, identity: str, batch_size: int, seq_len: int) -> Iterator[torch.LongTensor]:
        blocks = itertools.chain.from_iterable(
            self.block_order(identity, seq_len, epoch) for epoch in itertools.count())
        while True:
            chosen = np.fromiter(itertools.islice(blocks, batch_size), dtype=np.int64, count=batch_size)
            yield gather(self.train, chosen * seq_len, seq_len)
