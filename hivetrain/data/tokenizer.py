"""The tokenizer every peer must share, and a digest that proves two peers share it.

By default hivetrain uses a 4096-token byte-level BPE (GPT-2's scheme, with ``<|endoftext|>`` as
token 0) trained on the embedded corpus and committed in ``assets/tokenizer``, so a fresh
checkout tokenizes offline and every peer gets identical ids. A small vocabulary keeps the
embedding matrix of the tiny presets small. ``--data.tokenizer`` swaps in any transformers
tokenizer (a hub name such as ``gpt2`` or a local folder).

The shipped files are made by ``python -m hivetrain.data.train_tokenizer``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Iterable, Iterator

from transformers import AutoTokenizer, PreTrainedTokenizerFast

import hivetrain

EOS = "<|endoftext|>"
SHIPPED = Path(hivetrain.__file__).resolve().parents[1] / "assets" / "tokenizer"
# Parts of tokenizer.json that decide which ids a text gets; padding/truncation settings do not.
_TOKENIZING_KEYS = ("added_tokens", "normalizer", "pre_tokenizer", "post_processor", "model")


def load_tokenizer(name_or_path: str | None = None) -> PreTrainedTokenizerFast:
    """The shipped BPE when ``name_or_path`` is None, else ``AutoTokenizer.from_pretrained``."""
    if name_or_path is None:
        if not (SHIPPED / "tokenizer.json").exists():
            raise FileNotFoundError(f"the shipped tokenizer is missing from {SHIPPED}; retrain it "
                                    f"with: python -m hivetrain.data.train_tokenizer")
        return PreTrainedTokenizerFast.from_pretrained(str(SHIPPED))
    return AutoTokenizer.from_pretrained(name_or_path)


def tokenizer_digest(tokenizer: PreTrainedTokenizerFast) -> str:
    """SHA-256 (16 hex) of vocabulary, merges, special tokens and pre/post-processing.

    Peers put it in the swarm fingerprint, so two peers average together only if the same
    text becomes the same ids on both.
    """
    state = json.loads(tokenizer.backend_tokenizer.to_str())
    facts = {key: state.get(key) for key in _TOKENIZING_KEYS}
    facts["special_tokens"] = sorted(tokenizer.all_special_tokens)
    payload = json.dumps(facts, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def eos_id(tokenizer: PreTrainedTokenizerFast) -> int:
    """The id that separates documents: EOS, else SEP for encoder-style tokenizers."""
    token_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    if token_id is None:
        raise ValueError(f"tokenizer {tokenizer.name_or_path!r} has no EOS or SEP token to "
                         f"separate documents")
    return token_id


def encode_documents(tokenizer: PreTrainedTokenizerFast, texts: Iterable[str],
                     batch: int = 1024) -> Iterator[list[int]]:
    """Each text's ids followed by the separator, ``batch`` texts at a time.

    Calls the Rust backend directly: it uses every core, skips offsets, and does not warn about
    documents longer than the model's context (they are cut into blocks later).
    """
    separator = [eos_id(tokenizer)]
    backend = tokenizer.backend_tokenizer
    texts = iter(texts)
    while chunk := list(itertools.islice(texts, batch)):
        for encoding in backend.encode_batch_fast(chunk, add_special_tokens=False):
            yield encoding.ids + separator
