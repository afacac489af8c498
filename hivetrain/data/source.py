"""``load_token_data``: turn ``--data.*`` flags into the :class:`TokenData` a neuron reads.

Three sources, first match wins:

* ``--data.files GLOB``: local .txt (one document per blank-line separated paragraph), .jsonl
  or .parquet files (one document per row, text in ``--data.text_column``), read with
  ``datasets``;
* ``--data.dataset embedded`` (the default): the corpus shipped in :mod:`hivetrain.data.corpus`;
* any other ``--data.dataset``: a hub dataset, streamed (:mod:`hivetrain.data.stream`).

Local and embedded data are tokenized once into flat uint16 arrays (uint32 for vocabularies over
65536 ids) of EOS-separated documents, saved as ``.npy`` under ``--data.cache_dir`` and
memory-mapped afterwards. The cache file names carry a digest of everything that decides their
content: the corpus or files, the tokenizer digest and the held-out fraction.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import logging
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from hivetrain.config import DataConfig
from hivetrain.atomic import atomic_write
from hivetrain.data.cache import cache_root
from hivetrain.data.corpus import load_corpus
from hivetrain.data.split import is_heldout
from hivetrain.data.stream import StreamTokenData
from hivetrain.data.tokenizer import encode_documents, tokenizer_digest
from hivetrain.data.tokens import ArrayTokenData, TokenData

logger = logging.getLogger(__name__)

BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}


def load_token_data(data_cfg: DataConfig, tokenizer) -> TokenData:
    """The token data named by ``data_cfg``, tokenized with ``tokenizer``."""
    if data_cfg.files:
        return _local_files(data_cfg, tokenizer)
    if data_cfg.dataset == "embedded":
        return _embedded(data_cfg, tokenizer)
    return StreamTokenData(data_cfg.dataset, data_cfg.text_column, tokenizer,
                           data_cfg.heldout_fraction)


def _embedded(data_cfg: DataConfig, tokenizer) -> ArrayTokenData:
    corpus = load_corpus()
    return _cached_arrays(data_cfg, tokenizer, ["embedded", corpus.digest],
                          lambda: corpus.documents)


def _local_files(data_cfg: DataConfig, tokenizer) -> ArrayTokenData:
    paths = sorted(glob.glob(str(Path(data_cfg.files).expanduser()), recursive=True))
    if not paths:
        raise FileNotFoundError(f"--data.files {data_cfg.files!r} matched no files")
    suffixes = {Path(p).suffix for p in paths}
    if len(suffixes) > 1 or not suffixes <= BUILDERS.keys():
        raise ValueError(f"--data.files must match files of one type among "
                         f"{', '.join(BUILDERS)}; got {', '.join(sorted(suffixes))}")
    builder = BUILDERS[suffixes.pop()]
    column = "text" if builder == "text" else data_cfg.text_column
    stats = [(str(Path(p).resolve()), Path(p).stat().st_size, Path(p).stat().st_mtime_ns)
             for p in paths]

    def documents() -> Iterable[str]:
        from datasets import load_dataset  # a second's import, only paid when files are used

        options = {"sample_by": "paragraph"} if builder == "text" else {}
        dataset = load_dataset(builder, data_files=paths, split="train", **options,
                               cache_dir=str(cache_root(data_cfg.cache_dir) / "datasets"))
        if column not in dataset.column_names:
            raise KeyError(f"--data.text_column {column!r} is not in {data_cfg.files} "
                           f"(columns: {', '.join(dataset.column_names)})")
        for rows in dataset.iter(batch_size=1000):
            yield from (text.strip() for text in rows[column] if text and text.strip())

    return _cached_arrays(data_cfg, tokenizer, ["files", stats, column], documents)


def _cached_arrays(data_cfg: DataConfig, tokenizer, source_key: list,
                   documents) -> ArrayTokenData:
    """Train/held-out arrays of ``documents()``, from the cache or tokenized now and cached."""
    key = hashlib.sha256(json.dumps([source_key, tokenizer_digest(tokenizer),
                                     data_cfg.heldout_fraction]).encode()).hexdigest()[:16]
    root = cache_root(data_cfg.cache_dir)
    paths = {split: root / f"tokens-{key}-{split}.npy" for split in ("train", "heldout")}
    if not all(path.exists() for path in paths.values()):
        started = time.monotonic()
        logger.info("tokenizing %s into %s (first run only)", source_key[0], root)
        arrays = _tokenize_split(documents(), tokenizer, data_cfg.heldout_fraction)
        for split, array in arrays.items():
            atomic_write(paths[split], lambda f, a=array: np.save(f, a))
        logger.info("tokenized: %d training and %d held-out tokens in %.1fs", len(arrays["train"]),
                    len(arrays["heldout"]), time.monotonic() - started)
    train, heldout = (np.load(paths[split], mmap_mode="r") for split in ("train", "heldout"))
    return ArrayTokenData(train, heldout, len(tokenizer))


def _tokenize_split(texts: Iterable[str], tokenizer, heldout_fraction: float) -> dict[str, np.ndarray]:
    """Tokenize every text once and route its ids to the train or held-out array by content."""
    dtype = np.uint16 if len(tokenizer) <= 1 << 16 else np.uint32
    parts: dict[str, list[np.ndarray]] = {"train": [], "heldout": []}
    texts = iter(texts)
    while chunk := list(itertools.islice(texts, 4096)):
        for text, ids in zip(chunk, encode_documents(tokenizer, chunk)):
            split = "heldout" if is_heldout(text, heldout_fraction) else "train"
            parts[split].append(np.asarray(ids, dtype=dtype))
    return {split: np.concatenate(chunks) if chunks else np.zeros(0, dtype)
            for split, chunks in parts.items()}
