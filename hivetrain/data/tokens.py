"""Token data as neurons read it: each miner's own training stream, evaluation and probe batches.

Training tokens are cut into fixed blocks of ``seq_len`` and the blocks into contiguous shards.
Each miner walks every shard, but in an order derived from its identity (peer id or hotkey),
so miners that start together work on different text instead of duplicating each other's
gradients; the same identity always gets the same sequence, which keeps runs reproducible.

For proof of training each round (epoch) also has an *assigned* stream per miner:
:meth:`TokenData.assigned_rows` gives the samples at given positions of what miner ``hotkey``
must train on in epoch ``epoch`` of run ``run_id``, and :meth:`TokenData.assigned_batches` walks
them in order, ``batch_size`` at a time. Sample ``j`` is a pure function of those values and
``j`` (not of the batch size), so any validator draws the same samples out of the first ``n``
that a miner claims to have trained, and can check that the miner's update lowers the loss on them more than on
random held-out data. It reads one shard per epoch (text from one region of the corpus), which
makes training on it leave a clearer mark on it than on other text.

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
# A miner's assigned data for one epoch: this many consecutive shards. Measured on the embedded
# corpus (tiny preset, 20 steps of 4 x 64): one shard (51 blocks) leaves the clearest mark on the
# assigned data but its update hurts held-out loss (-0.27); four keep the mark (>= 0.4 nats more
# on assigned than on random data) and hold held-out loss within noise.
ASSIGNED_SHARDS = 4


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

    @property
    @abstractmethod
    def digest(self) -> str:
        """Names the data trained and held out, so that it enters the run_id: peers that would
        train on different data never average together under one run."""

    @abstractmethod
    def train_batches(self, identity: str, batch_size: int, seq_len: int) -> Iterator[torch.LongTensor]:
        """[batch_size, seq_len] training batches forever, in an order fixed by ``identity``."""

    @abstractmethod
    def assigned_rows(self, run_id: str, hotkey: str, epoch: int, indices,
                      seq_len: int) -> torch.LongTensor:
        """Samples ``indices`` (each >= 0) of miner ``hotkey``'s data for ``epoch`` of ``run_id``,
        as one [len(indices), seq_len] batch."""

    def assigned_batches(self, run_id: str, hotkey: str, epoch: int, batch_size: int,
                         seq_len: int) -> Iterator[torch.LongTensor]:
        """The assigned samples of one epoch in order, ``batch_size`` at a time, forever."""
        for start in itertools.count(0, batch_size):
            yield self.assigned_rows(run_id, hotkey, epoch, range(start, start + batch_size),
                                     seq_len)

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
        self._digest: str | None = None

    @property
    def digest(self) -> str:
        """SHA-256 of the token arrays themselves (read once): the same tokens on every peer,
        whatever the files were called or where they were cached."""
        if self._digest is None:
            digest = hashlib.sha256()
            for array in (self.train, self.heldout):
                digest.update(f"{array.dtype.str}:{len(array)};".encode())
                digest.update(np.ascontiguousarray(array).data)
            self._digest = digest.hexdigest()
        return self._digest

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

    def assigned_window(self, run_id: str, hotkey: str, epoch: int, seq_len: int) -> list[int]:
        """The :data:`ASSIGNED_SHARDS` consecutive shard indices (wrapping round) that
        ``(run_id, hotkey, epoch)`` picks: the only data its update may claim to have improved."""
        count = len(self.shards(seq_len))
        first = derive_seed("assigned-shard", run_id, hotkey, epoch, seq_len) % count
        return [(first + i) % count for i in range(min(ASSIGNED_SHARDS, count))]

    def assigned_rows(self, run_id: str, hotkey: str, epoch: int, indices,
                      seq_len: int) -> torch.LongTensor:
        """Blocks drawn (with replacement, one hash per sample) from the :data:`ASSIGNED_SHARDS`
        consecutive shards that ``(run_id, hotkey, epoch)`` picks."""
        indices = [int(i) for i in indices]
        if not indices or min(indices) < 0:
            raise ValueError(f"sample indices must be >= 0 and not empty, got {indices[:8]}")
        shards = self.shards(seq_len)
        pool = np.concatenate([np.asarray(shards[s], dtype=np.int64)
                               for s in self.assigned_window(run_id, hotkey, epoch, seq_len)])
        picks = [derive_seed("assigned", run_id, hotkey, epoch, seq_len, j) % len(pool)
                 for j in indices]
        return gather(self.train, pool[picks] * seq_len, seq_len)

    def train_batches(self, identity: str, batch_size: int, seq_len: int) -> Iterator[torch.LongTensor]:
        blocks = itertools.chain.from_iterable(
            self.block_order(identity, seq_len, epoch) for epoch in itertools.count())
        while True:
            chosen = np.fromiter(itertools.islice(blocks, batch_size), dtype=np.int64, count=batch_size)
            yield gather(self.train, chosen * seq_len, seq_len)
