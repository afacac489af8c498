"""Image-caption data as multimodal neurons read it, with the API of :class:`TokenData`.

A batch is ``{"input_ids", "labels", "pixel_values"}``: each row is one image span (the
placeholder convention of :mod:`hivetrain.model.multimodal`) followed by the caption and EOS,
padded with EOS; labels score the caption and its EOS only (-100 elsewhere), and pixels are
uint8, which keeps validator probe payloads small and exact.

Two sources: the embedded shapes set (:mod:`hivetrain.data.shapes`, no network), and image-caption
pairs read with ``datasets`` from a hub dataset, a local image folder (``imagefolder`` with a
``metadata.jsonl``/``.csv`` of captions) or local ``.parquet`` files. For those, a pair is held
out by a hash of its caption (:func:`hivetrain.data.split.is_heldout`), so duplicated captions
never straddle the split and every peer agrees on it.
"""

from __future__ import annotations

import glob
import hashlib
import io
import itertools
import json
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from hivetrain.data.shapes import render, scene
from hivetrain.data.split import is_heldout
from hivetrain.data.tokenizer import eos_id
from hivetrain.data.tokens import derive_seed
from hivetrain.image_tokens import IMAGE_END, IMAGE_SLOT, IMAGE_START

Item = tuple[np.ndarray, str]  # uint8 [3, H, W] image and its caption
Batch = dict[str, torch.Tensor]
# Assigned data per (miner, epoch) comes from one range of this many consecutive pairs: about
# the ~200 blocks a text miner's epoch draws from (hivetrain.data.tokens.ASSIGNED_SHARDS), so
# an epoch's 20 x 4 samples repeat some pairs and leave a mark on them. Not yet measured on
# multimodal runs.
ASSIGNED_PAIRS = 256


class ImageCaptionData:
    """Training pairs and held-out pairs, turned into batches for a model with ``n_latents``.

    :param train_item, heldout_item: index -> (uint8 [3, S, S] image, caption).
    :param digest: names the pairs (it enters the run_id); see :func:`named_digest`.
    :ivar vocab_size: number of token ids the tokenizer can produce.
    """

    def __init__(self, tokenizer, n_latents: int, train_item: Callable[[int], Item],
                 n_train: int, heldout_item: Callable[[int], Item], n_heldout: int,
                 digest: str):
        if n_train < 1 or n_heldout < 1:
            raise ValueError(f"need training and held-out pairs, got {n_train} and {n_heldout}; "
                             f"add data or change the held-out fraction")
        self.tokenizer, self.n_latents = tokenizer, n_latents
        self.vocab_size = len(tokenizer)
        self.train_item, self.n_train = train_item, n_train
        self.heldout_item, self.n_heldout = heldout_item, n_heldout
        self.digest = digest

    def train_batches(self, identity: str, batch_size: int, seq_len: int) -> Iterator[Batch]:
        """Training batches forever, in an order fixed by ``identity`` (a new shuffle each pass)."""
        order = itertools.chain.from_iterable(
            np.random.default_rng(derive_seed("captions", identity, epoch)).permutation(self.n_train)
            for epoch in itertools.count())
        while True:
            chosen = itertools.islice(order, batch_size)
            yield self.batch([self.train_item(int(i)) for i in chosen], seq_len)

    def assigned_rows(self, run_id: str, hotkey: str, epoch: int, indices, seq_len: int) -> Batch:
        """Pairs ``indices`` of miner ``hotkey``'s data for ``epoch``: drawn (with replacement,
        one hash per sample) from :data:`ASSIGNED_PAIRS` consecutive pairs."""
        indices = [int(i) for i in indices]
        if not indices or min(indices) < 0:
            raise ValueError(f"sample indices must be >= 0 and not empty, got {indices[:8]}")
        shards = max(1, self.n_train // ASSIGNED_PAIRS)
        shard = derive_seed("assigned-shard", run_id, hotkey, epoch) % shards
        low, high = shard * self.n_train // shards, (shard + 1) * self.n_train // shards
        picks = [low + derive_seed("assigned", run_id, hotkey, epoch, j) % (high - low)
                 for j in indices]
        return self.batch([self.train_item(i) for i in picks], seq_len)

    def assigned_batches(self, run_id: str, hotkey: str, epoch: int, batch_size: int,
                         seq_len: int) -> Iterator[Batch]:
        """The assigned pairs of one epoch in order, ``batch_size`` at a time, forever."""
        for start in itertools.count(0, batch_size):
            yield self.assigned_rows(run_id, hotkey, epoch, range(start, start + batch_size),
                                     seq_len)

    def heldout_batches(self, n_batches: int, batch_size: int, seq_len: int) -> list[Batch]:
        """``n_batches`` fixed evaluation batches spread evenly over the held-out pairs."""
        index = np.linspace(0, self.n_heldout - 1, n_batches * batch_size).round().astype(int)
        return [self.batch([self.heldout_item(int(i)) for i in chunk], seq_len)
                for chunk in np.split(index, n_batches)]

    def probe_batch(self, seed: int, batch_size: int, seq_len: int) -> Batch:
        """Held-out pairs drawn from ``seed`` (an int >= 0): the same batch for the same seed."""
        index = np.random.default_rng(seed).integers(0, self.n_heldout, size=batch_size)
        return self.batch([self.heldout_item(int(i)) for i in index], seq_len)

    def image_span(self) -> list[int]:
        """The placeholder ids one image occupies in ``input_ids``."""
        return [IMAGE_START] + [IMAGE_SLOT] * self.n_latents + [IMAGE_END]

    def batch(self, items: Sequence[Item], seq_len: int) -> Batch:
        """Rows of image span + caption + EOS, cut to ``seq_len`` and padded with unscored EOS."""
        span, eos = self.image_span(), eos_id(self.tokenizer)
        if seq_len <= len(span):
            raise ValueError(f"--data.seq_len {seq_len} leaves no room for text after an "
                             f"image's {len(span)} positions")
        texts = self.tokenizer.backend_tokenizer.encode_batch_fast(
            [caption for _, caption in items], add_special_tokens=False)
        input_ids = torch.full((len(items), seq_len), eos, dtype=torch.long)
        labels = torch.full((len(items), seq_len), -100, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = (span + text.ids + [eos])[:seq_len]
            input_ids[row, :len(ids)] = torch.tensor(ids)
            labels[row, len(span):len(ids)] = input_ids[row, len(span):len(ids)]
        pixels = torch.from_numpy(np.stack([image for image, _ in items]))
        return {"input_ids": input_ids, "labels": labels, "pixel_values": pixels}


def named_digest(*facts) -> str:
    """A digest of what names a set of pairs: images are decoded lazily, so hashing their bytes
    at start-up would read the whole dataset; the generated shapes are fixed by their code."""
    return hashlib.sha256(json.dumps(["captions", *facts], default=str).encode()).hexdigest()


def shapes_data(tokenizer, n_latents: int, image_size: int = 32, n_train: int = 100_000,
                n_heldout: int = 1_000) -> ImageCaptionData:
    """The embedded shapes set (rendered on demand, so its size costs no memory)."""
    def item(split: str) -> Callable[[int], Item]:
        def get(index: int) -> Item:
            drawn = scene(split, index)
            return render(drawn, image_size), drawn.caption
        return get

    return ImageCaptionData(tokenizer, n_latents, item("train"), n_train, item("heldout"),
                            n_heldout, named_digest("shapes", image_size, n_train, n_heldout))


def load_image_caption_data(source: str, tokenizer, n_latents: int, image_size: int = 32,
                            image_column: str = "image", caption_column: str = "caption",
                            heldout_fraction: float = 0.02,
                            cache_dir: str | None = None) -> ImageCaptionData:
    """Image-caption pairs from ``source``: ``shapes`` (embedded), a folder of images with a
    captions metadata file, a glob of ``.parquet`` files, or a hub dataset name.

    Images are converted to RGB and resized to ``image_size`` squares when read.
    """
    if source == "shapes":
        return shapes_data(tokenizer, n_latents, image_size)
    dataset = _load_dataset(source, cache_dir)
    for kind, column in (("image", image_column), ("caption", caption_column)):
        if column not in dataset.column_names:
            raise ValueError(f"{kind} column {column!r} is not in {source}; its columns are "
                             f"{', '.join(dataset.column_names)}")
    captions = dataset[caption_column]
    heldout = [i for i, text in enumerate(captions) if is_heldout(text, heldout_fraction)]
    held = set(heldout)
    train = [i for i in range(len(captions)) if i not in held]

    def item(rows: list[int]) -> Callable[[int], Item]:
        def get(index: int) -> Item:
            row = dataset[rows[index]]
            return _pixels(row[image_column], image_size), row[caption_column]
        return get

    return ImageCaptionData(tokenizer, n_latents, item(train), len(train), item(heldout),
                            len(heldout), named_digest(source, image_column, caption_column,
                                                       heldout_fraction, image_size, len(captions)))


def _load_dataset(source: str, cache_dir: str | None):
    from datasets import load_dataset  # a second's import, only paid when used

    options = {"split": "train", "cache_dir": cache_dir}
    if Path(source).expanduser().is_dir():
        return load_dataset("imagefolder", data_dir=str(Path(source).expanduser()), **options)
    paths = sorted(glob.glob(str(Path(source).expanduser()), recursive=True))
    if paths:
        if {Path(p).suffix for p in paths} != {".parquet"}:
            raise ValueError(f"{source!r} must match .parquet files (or name an image folder)")
        return load_dataset("parquet", data_files=paths, **options)
    if any(ch in source for ch in "*?[") or source.startswith((".", "/", "~")):
        raise FileNotFoundError(f"{source!r} matched no files")
    return load_dataset(source, **options)


def _pixels(value, size: int) -> np.ndarray:
    """A dataset image cell (PIL image, {"bytes", "path"} dict, bytes or path) as uint8 [3, S, S]."""
    from PIL import Image

    if isinstance(value, dict):
        value = value.get("bytes") or value.get("path")
    if isinstance(value, bytes):
        value = Image.open(io.BytesIO(value))
    elif isinstance(value, str):
        value = Image.open(value)
    if not isinstance(value, Image.Image):
        raise ValueError(f"cannot read an image from a {type(value).__name__} cell")
    image = value.convert("RGB").resize((size, size), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1).copy()
