"""Token data streamed from a Hugging Face hub dataset, for miners with internet access.

Nothing is downloaded up front. Each miner streams the ``train`` split shuffled with a seed
derived from its identity (for multi-file datasets this also shuffles the file order, so miners
start in different files), drops held-out documents by content hash, tokenizes on the fly and
packs documents into ``seq_len`` blocks. The held-out pool is the first held-out documents of
the unshuffled stream, so every peer, validators included, builds the same pool.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from typing import Iterator

import numpy as np
import torch

from hivetrain.data.split import is_heldout
from hivetrain.data.tokenizer import encode_documents
from hivetrain.data.tokens import TokenData, derive_seed

logger = logging.getLogger(__name__)

HELDOUT_POOL_TOKENS = 1 << 18  # enough for many distinct probes; ~13k documents scanned at 2%
SHUFFLE_BUFFER = 10_000


class StreamTokenData(TokenData):
    """Reads ``name``'s train split through ``datasets`` streaming, never materialising it."""

    def __init__(self, name: str, text_column: str, tokenizer, heldout_fraction: float):
        super().__init__(len(tokenizer))
        self.name, self.text_column, self.tokenizer = name, text_column, tokenizer
        self.heldout_fraction = heldout_fraction
        self._heldout_pool: np.ndarray | None = None

    @property
    def digest(self) -> str:
        """A hub stream is only named, never read whole: its name, column and split stand in."""
        named = json.dumps(["hub", self.name, self.text_column, self.heldout_fraction])
        return hashlib.sha256(named.encode()).hexdigest()

    def _texts(self, shuffle_seed: int | None = None, epoch: int = 0) -> Iterator[str]:
        from datasets import load_dataset  # a second's import, only paid when streaming

        stream = load_dataset(self.name, split="train", streaming=True)
        if shuffle_seed is not None:
            stream = stream.shuffle(seed=shuffle_seed, buffer_size=SHUFFLE_BUFFER)
            stream.set_epoch(epoch)
        for row in stream:
            if self.text_column not in row:
                raise KeyError(f"dataset {self.name!r} has no column {self.text_column!r} "
                               f"(columns: {', '.join(row)}); set --data.text_column")
            text = (row[self.text_column] or "").strip()
            if text:
                yield text

    def train_batches(self, identity: str, batch_size: int, seq_len: int) -> Iterator[torch.LongTensor]:
        seed = derive_seed("stream", identity) % 2**32
        buffer: list[int] = []
        for epoch in itertools.count():
            texts = (t for t in self._texts(seed, epoch) if not is_heldout(t, self.heldout_fraction))
            yield from _packed(encode_documents(self.tokenizer, texts, batch=64), batch_size,
                               seq_len, buffer)

    def assigned_batches(self, run_id: str, hotkey: str, epoch: int, batch_size: int,
                         seq_len: int) -> Iterator[torch.LongTensor]:
        """The stream shuffled by ``(run_id, hotkey, epoch)``: a fresh order each epoch."""
        seed = derive_seed("assigned", run_id, hotkey, epoch) % 2**32
        texts = (t for t in self._texts(seed) if not is_heldout(t, self.heldout_fraction))
        return _packed(encode_documents(self.tokenizer, texts, batch=64), batch_size, seq_len)

    def assigned_rows(self, run_id: str, hotkey: str, epoch: int, indices,
                      seq_len: int) -> torch.LongTensor:
        """A stream has no random access: read it once, row by row, up to the largest index."""
        indices = [int(i) for i in indices]
        if not indices or min(indices) < 0:
            raise ValueError(f"sample indices must be >= 0 and not empty, got {indices[:8]}")
        rows = itertools.islice(self.assigned_batches(run_id, hotkey, epoch, 1, seq_len),
                                max(indices) + 1)
        wanted = set(indices)
        found = {j: row[0] for j, row in enumerate(rows) if j in wanted}
        return torch.stack([found[j] for j in indices])

    def heldout_tokens(self) -> np.ndarray:
        if self._heldout_pool is None:
            logger.info("collecting %d held-out tokens from the start of %s", HELDOUT_POOL_TOKENS,
                        self.name)
            texts = (t for t in self._texts() if is_heldout(t, self.heldout_fraction))
            pool: list[int] = []
            for ids in encode_documents(self.tokenizer, texts, batch=16):
                pool.extend(ids)
                if len(pool) >= HELDOUT_POOL_TOKENS:
                    break
            self._heldout_pool = np.asarray(pool[:HELDOUT_POOL_TOKENS], dtype=np.int64)
        return self._heldout_pool


def _packed(documents, batch_size: int, seq_len: int, buffer: list[int] | None = None
            ) -> Iterator[torch.LongTensor]:
    """Token id lists packed into [batch_size, seq_len] batches; ``buffer`` carries the rest."""
    buffer = [] if buffer is None else buffer
    need = batch_size * seq_len
    for ids in documents:
        buffer.extend(ids)
        while len(buffer) >= need:
            yield torch.tensor(buffer[:need], dtype=torch.long).view(batch_size, seq_len)
            del buffer[:need]
