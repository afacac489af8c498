"""Assigned data: what each miner must train on in each epoch, reproducible by any validator."""

import itertools

import pytest
import torch

from hivetrain.config import DataConfig
from hivetrain.data import load_token_data, load_tokenizer
from hivetrain.data.captions import shapes_data


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(DataConfig().tokenizer)


@pytest.fixture(scope="module")
def embedded(tokenizer):
    return load_token_data(DataConfig(), tokenizer)


def test_any_sample_of_the_stream_can_be_drawn_alone_whatever_the_batch_size(embedded):
    stream = embedded.assigned_batches("run", "hk", 3, 4, 64)
    first, second = next(stream), next(stream)
    assert first.shape == (4, 64)
    drawn = embedded.assigned_rows("run", "hk", 3, [5, 0], 64)
    assert torch.equal(drawn[0], second[1]) and torch.equal(drawn[1], first[0])
    by_two = list(itertools.islice(embedded.assigned_batches("run", "hk", 3, 2, 64), 4))
    assert torch.equal(torch.cat(by_two), torch.cat([first, second]))


def test_the_stream_depends_on_run_hotkey_and_epoch(embedded):
    base = next(embedded.assigned_batches("run", "hk", 3, 8, 64))
    for other in [("run2", "hk", 3), ("run", "hk2", 3), ("run", "hk", 4)]:
        assert not torch.equal(next(embedded.assigned_batches(*other, 8, 64)), base), other


def test_an_epoch_reads_one_region_of_the_corpus(embedded):
    """Four consecutive shards (wrapping around), so training leaves a mark on that region."""
    train = embedded.train
    block_of = {train[i * 64:(i + 1) * 64].tobytes(): i for i in range(embedded.num_blocks(64))}
    owner = {b: s for s, shard in enumerate(embedded.shards(64)) for b in shard}
    for epoch in range(3):
        rows = embedded.assigned_rows("run", "hk", epoch, range(200), 64)
        used = {owner[block_of[row.numpy().astype(train.dtype).tobytes()]] for row in rows}
        count = len(embedded.shards(64))
        first = next(s for s in used if (s - 1) % count not in used)
        assert used <= {(first + i) % count for i in range(4)}, used


def test_bad_indices_are_clear_errors(embedded):
    with pytest.raises(ValueError, match=">= 0"):
        embedded.assigned_rows("run", "hk", 0, [-1], 64)
    with pytest.raises(ValueError, match="not empty"):
        embedded.assigned_rows("run", "hk", 0, [], 64)


def test_image_caption_pairs_have_the_same_contract(tokenizer):
    data = shapes_data(tokenizer, 4, n_train=1000, n_heldout=50)
    first, second = itertools.islice(data.assigned_batches("run", "hk", 1, 2, 40), 2)
    drawn = data.assigned_rows("run", "hk", 1, [3], 40)
    assert torch.equal(drawn["input_ids"][0], second["input_ids"][1])
    assert torch.equal(drawn["pixel_values"][0], second["pixel_values"][1])
    other = data.assigned_rows("run", "hk", 2, [3], 40)
    assert not torch.equal(other["pixel_values"], drawn["pixel_values"])
