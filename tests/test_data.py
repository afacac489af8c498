"""The data package: offline corpus, content-based held-out split, shipped tokenizer, token data."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from hivetrain.config import DataConfig
from hivetrain.data import corpus as corpus_module
from hivetrain.data import corpus_build
from hivetrain.data import load_corpus, load_token_data, load_tokenizer, tokenizer_digest
from hivetrain.data import source as source_module
from hivetrain.data.split import is_heldout
from hivetrain.data.stream import StreamTokenData
from hivetrain.data.tokenizer import encode_documents
from hivetrain.data.tokens import ArrayTokenData
from hivetrain.data.train_tokenizer import train_tokenizer

SEQ = 64
SHIPPED_DIGEST = "cd4cd32f9c62e587"  # the first 16 hex digits; assets/corpus/LICENSE.md says how
BUILT_WITH = "3.11.7"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hivetrain-cache"))


@pytest.fixture(scope="session")
def corpus():
    return load_corpus()


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer(None)


@pytest.fixture(scope="session")
def embedded(cache_dir, corpus, tokenizer):
    return load_token_data(DataConfig(cache_dir=cache_dir), tokenizer)


def encode(tokenizer, texts) -> np.ndarray:
    """What the data package should store for ``texts``: ids, EOS after each document."""
    return np.array([i for ids in encode_documents(tokenizer, texts) for i in ids], dtype=np.int64)


def contains(haystack: np.ndarray, needle: np.ndarray) -> bool:
    """Whether ``needle`` occurs as a contiguous run in ``haystack`` (token-aligned)."""
    data, pattern = haystack.astype("<u4").tobytes(), needle.astype("<u4").tobytes()
    at = data.find(pattern)
    while at != -1 and at % 4:
        at = data.find(pattern, at + 1)
    return at != -1


# --- corpus -------------------------------------------------------------------------------------

def test_corpus_is_sizable_prose_in_hash_order(corpus):
    docs = corpus.documents
    assert len(docs) > 3000 and corpus.num_bytes > 2_500_000
    assert min(map(len, docs)) >= corpus_build.MIN_CHARS
    hashes = [hashlib.sha256(d.encode()).hexdigest() for d in docs]
    assert hashes == sorted(set(hashes)), "documents must be unique and ordered by content hash"
    assert any(d.startswith('The "assert" statement\n****') for d in docs)         # help() topic
    assert any(d.startswith("Command-line parsing library") for d in docs)        # docstring
    assert any(d.startswith("There is no equivalent method for counters") for d in docs)  # comment


def test_the_shipped_corpus_is_the_same_on_every_python(corpus, monkeypatch):
    """Read from assets/corpus only: nothing of the host Python goes into it (issue 14)."""
    def no_build(*_):
        raise AssertionError("the corpus must not be built from the host Python")
    monkeypatch.setattr(corpus_build, "build_corpus", no_build)
    monkeypatch.setattr(corpus_build, "stdlib_dir", no_build)
    monkeypatch.setattr(sys, "version", "3.99.0 (another build)")
    assert load_corpus().digest == corpus.digest and corpus.digest.startswith(SHIPPED_DIGEST)
    raw = corpus_module.SHIPPED.read_bytes()
    assert raw[4:8] == b"\0\0\0\0", "gzip without a timestamp: the bytes depend on content only"


@pytest.mark.skipif(sys.version.split()[0] != BUILT_WITH, reason=f"built with CPython {BUILT_WITH}")
def test_a_rebuild_on_the_python_that_built_it_is_identical(corpus, tmp_path):
    rebuilt = corpus_build.build_corpus()
    assert rebuilt.digest == corpus.digest and rebuilt.documents == corpus.documents
    corpus_build.write_shipped(rebuilt, tmp_path / "embedded.json.gz")
    assert (tmp_path / "embedded.json.gz").read_bytes() == corpus_module.SHIPPED.read_bytes()


def test_a_damaged_corpus_is_a_clear_error(tmp_path):
    stored = json.loads(gzip.decompress(corpus_module.SHIPPED.read_bytes()))
    stored["documents"][0] += " tampered"
    (tmp_path / "changed.json.gz").write_bytes(gzip.compress(json.dumps(stored).encode()))
    with pytest.raises(RuntimeError, match="does not match its digest; restore it"):
        load_corpus(tmp_path / "changed.json.gz")
    (tmp_path / "cut.json.gz").write_bytes(corpus_module.SHIPPED.read_bytes()[:1000])
    with pytest.raises(RuntimeError, match="cannot be read"):
        load_corpus(tmp_path / "cut.json.gz")


def test_the_data_digest_is_part_of_the_run_id(tmp_path, cache_dir):
    """Same text under two paths: one run; other text: another run, with every flag the same."""
    from hivetrain.config import Config
    from hivetrain.recipe import build_recipe

    text = "\n\n".join(f"Paragraph {i} of a small corpus, long enough to be kept. " * 3
                       for i in range(200))
    for name, content in (("a", text), ("b", text), ("c", text.replace("small", "other"))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data.txt").write_text(content)

    def run_id(name):
        cfg = Config()
        cfg.data.files, cfg.data.cache_dir = str(tmp_path / name / "*.txt"), cache_dir
        return build_recipe(cfg).run_id

    assert run_id("a") == run_id("b") != run_id("c")


# --- held-out split ------------------------------------------------------------------------------

def test_heldout_split_depends_only_on_content(corpus):
    train, heldout = corpus.split(0.02)
    assert sorted(train + heldout) == sorted(corpus.documents)
    assert 0.01 < len(heldout) / len(corpus.documents) < 0.035
    assert all(is_heldout(d, 0.02) for d in heldout) and not any(is_heldout(d, 0.02) for d in train)
    _, bigger = corpus.split(0.1)
    assert set(heldout) < set(bigger), "raising the fraction only adds held-out documents"
    assert corpus.split(0.0)[1] == []
    # the decision survives reordering: it is a function of the text alone
    reordered = [d for d in reversed(corpus.documents) if is_heldout(d, 0.02)]
    assert sorted(reordered) == sorted(heldout)


def test_heldout_documents_never_reach_training(embedded, corpus, tokenizer):
    train_docs, heldout_docs = corpus.split(0.02)
    assert np.array_equal(embedded.train, encode(tokenizer, train_docs))
    assert np.array_equal(embedded.heldout, encode(tokenizer, heldout_docs))
    eos = np.array([tokenizer.eos_token_id])
    train = np.asarray(embedded.train)
    for doc in heldout_docs:
        whole = np.concatenate([eos, encode(tokenizer, [doc])])
        assert not contains(train, whole), doc[:80]
    assert contains(train, np.concatenate([eos, encode(tokenizer, [train_docs[5]])]))


def test_token_arrays_are_cached_uint16_memmaps(embedded, cache_dir, tokenizer, monkeypatch):
    assert isinstance(embedded.train, np.memmap) and embedded.train.dtype == np.uint16
    assert embedded.vocab_size == len(tokenizer) == 4096
    monkeypatch.setattr(source_module, "_tokenize_split", lambda *a: pytest.fail("re-tokenized"))
    again = load_token_data(DataConfig(cache_dir=cache_dir), tokenizer)
    assert np.array_equal(again.train, embedded.train)
    other = load_token_data(DataConfig(cache_dir=cache_dir, heldout_fraction=0.02), tokenizer)
    assert np.array_equal(other.heldout, embedded.heldout)


# --- training shards -----------------------------------------------------------------------------

def test_shards_partition_the_training_blocks(embedded):
    shards = embedded.shards(SEQ)
    assert len(shards) == 256
    assert np.array_equal(np.concatenate([np.asarray(s) for s in shards]),
                          np.arange(embedded.num_blocks(SEQ)))
    order = embedded.block_order("miner-a", SEQ)
    assert np.array_equal(np.sort(order), np.arange(embedded.num_blocks(SEQ)))


def test_identities_start_on_different_shards(embedded):
    first = min(len(s) for s in embedded.shards(SEQ))
    a = embedded.block_order("5GrwvaEF-miner-a", SEQ)[:first]
    b = embedded.block_order("5FHneW46-miner-b", SEQ)[:first]
    assert not set(a.tolist()) & set(b.tolist())
    shard_starts = [s.start for s in embedded.shards(SEQ)]
    starts = {np.searchsorted(shard_starts, embedded.block_order(f"peer-{i}", SEQ)[0], "right")
              for i in range(8)}
    assert len(starts) >= 6, "eight miners should mostly start in distinct shards"


def test_train_batches_follow_the_identity_order(embedded):
    batches = embedded.train_batches("peer-x", 4, SEQ)
    got = [next(batches) for _ in range(3)]
    assert all(b.shape == (4, SEQ) and b.dtype == torch.long for b in got)
    blocks = embedded.block_order("peer-x", SEQ)[:12]
    expected = np.stack([embedded.train[k * SEQ:(k + 1) * SEQ] for k in blocks]).astype(np.int64)
    assert torch.equal(torch.cat(got), torch.from_numpy(expected))
    again = embedded.train_batches("peer-x", 4, SEQ)
    assert all(torch.equal(next(again), b) for b in got)
    assert not torch.equal(next(embedded.train_batches("peer-y", 4, SEQ)), got[0])


def test_train_batches_run_forever_covering_each_epoch():
    seq, n_blocks = 8, 10
    data = ArrayTokenData(np.arange(seq * n_blocks + 5), np.arange(100), vocab_size=200,
                          num_shards=3)
    batches = data.train_batches("id", 3, seq)
    rows = torch.cat([next(batches) for _ in range(10)])      # 30 rows = 3 epochs of 10 blocks
    blocks = (rows[:, 0] // seq).tolist()
    assert all(torch.equal(r, torch.arange(r[0], r[0] + seq)) for r in rows)
    for epoch in range(3):
        assert sorted(blocks[epoch * 10:(epoch + 1) * 10]) == list(range(n_blocks))
    assert blocks[:10] != blocks[10:20], "each epoch gets a fresh order"


# --- evaluation and probes -----------------------------------------------------------------------

def test_heldout_batches_are_fixed_heldout_windows(embedded):
    first = embedded.heldout_batches(3, 4, SEQ)
    assert len(first) == 3 and all(b.shape == (4, SEQ) for b in first)
    assert all(torch.equal(x, y) for x, y in zip(first, embedded.heldout_batches(3, 4, SEQ)))
    heldout = np.asarray(embedded.heldout)
    assert all(contains(heldout, row.numpy()) for b in first for row in b)
    assert len({tuple(row.tolist()) for b in first for row in b}) == 12


def test_probe_batch_is_determined_by_seed(embedded):
    probe = embedded.probe_batch(2**200 + 7, 8, SEQ)
    assert probe.shape == (8, SEQ)
    assert torch.equal(probe, embedded.probe_batch(2**200 + 7, 8, SEQ))
    assert not torch.equal(probe, embedded.probe_batch(2**200 + 8, 8, SEQ))
    heldout = np.asarray(embedded.heldout)
    assert all(contains(heldout, row.numpy()) for row in probe)


def test_too_little_heldout_text_is_a_clear_error():
    data = ArrayTokenData(np.arange(1000), np.arange(10), vocab_size=1000)
    with pytest.raises(ValueError, match="heldout_fraction"):
        data.probe_batch(1, 2, 64)


# --- tokenizer ------------------------------------------------------------------------------------

def test_shipped_tokenizer_is_deterministic_and_lossless(tokenizer):
    text = "def f(x):\n    return x ** 2  # squares, naïvely — ok? 日本語\t<|endoftext|>"
    reloaded = load_tokenizer(None)
    ids = tokenizer(text)["input_ids"]
    assert ids == reloaded(text)["input_ids"]
    assert tokenizer_digest(tokenizer) == tokenizer_digest(reloaded)
    assert tokenizer.decode(ids) == text
    assert ids[-1] == tokenizer.eos_token_id == 0 and len(tokenizer) == 4096
    assert len(tokenizer("The function returns a new list.")["input_ids"]) <= 8


def test_load_tokenizer_from_a_local_folder(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path / "tok")
    local = load_tokenizer(str(tmp_path / "tok"))
    assert tokenizer_digest(local) == tokenizer_digest(tokenizer)
    text = "Raise ValueError if the argument is negative."
    assert local(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_tokenizer_training_is_deterministic_and_digest_tracks_vocab(corpus):
    docs = corpus.documents[:400]
    first, second = train_tokenizer(docs, 600), train_tokenizer(docs, 600)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    assert tokenizer_digest(first) == tokenizer_digest(second)
    assert tokenizer_digest(train_tokenizer(corpus.documents[400:800], 600)) != tokenizer_digest(first)


# --- local files and streaming ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def documents(corpus):
    """Sixty corpus documents without blank lines, so .txt paragraphs map one-to-one."""
    return [re.sub(r"\n\s*\n", "\n", d).strip() for d in corpus.documents[:60]]


@pytest.mark.parametrize("kind", ["txt", "jsonl", "parquet"])
def test_local_files(kind, documents, tokenizer, tmp_path):
    half = len(documents) // 2
    for i, part in enumerate((documents[:half], documents[half:])):
        path = tmp_path / f"part{i}.{kind}"
        if kind == "txt":
            path.write_text("\n\n".join(part) + "\n")
        elif kind == "jsonl":
            path.write_text("".join(json.dumps({"body": d}) + "\n" for d in part))
        else:
            pd.DataFrame({"body": part}).to_parquet(path)
    cfg = DataConfig(files=str(tmp_path / f"*.{kind}"), text_column="body", heldout_fraction=0.3,
                     cache_dir=str(tmp_path / "cache"))
    data = load_token_data(cfg, tokenizer)
    train_docs = [d for d in documents if not is_heldout(d, 0.3)]
    heldout_docs = [d for d in documents if is_heldout(d, 0.3)]
    assert heldout_docs and train_docs
    assert np.array_equal(data.train, encode(tokenizer, train_docs))
    assert np.array_equal(data.heldout, encode(tokenizer, heldout_docs))
    assert next(data.train_batches("peer", 2, 32)).shape == (2, 32)


def test_local_files_errors_name_the_flag(tmp_path, tokenizer):
    with pytest.raises(FileNotFoundError, match="--data.files"):
        load_token_data(DataConfig(files=str(tmp_path / "*.txt")), tokenizer)
    (tmp_path / "a.jsonl").write_text('{"text": "hello"}\n')
    with pytest.raises(KeyError, match="--data.text_column"):
        load_token_data(DataConfig(files=str(tmp_path / "*.jsonl"), text_column="body",
                                   cache_dir=str(tmp_path / "cache")), tokenizer)


def test_streamed_dataset_splits_by_content(documents, tokenizer, tmp_path):
    """The hub path, fed a local dataset folder (``load_dataset`` treats both alike)."""
    (tmp_path / "data.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in documents))
    data = StreamTokenData(str(tmp_path), "text", tokenizer, heldout_fraction=0.3)
    heldout_docs = [d for d in documents if is_heldout(d, 0.3)]
    assert np.array_equal(data.heldout_tokens(), encode(tokenizer, heldout_docs))
    train_tokens = encode(tokenizer, [d for d in documents if not is_heldout(d, 0.3)])
    batches = data.train_batches("peer-a", 2, 32)
    rows = [next(batches) for _ in range(len(train_tokens) // 64 + 2)]   # wraps into epoch 2
    stream = torch.cat(rows).flatten().numpy()
    assert sorted(stream[:len(train_tokens)]) == sorted(train_tokens), "epoch 1 = training docs"
    assert not np.array_equal(stream[:len(train_tokens)], train_tokens), "shuffled by identity"
    eos = np.array([tokenizer.eos_token_id])
    for doc in heldout_docs:
        assert not contains(stream, np.concatenate([eos, encode(tokenizer, [doc])]))
    assert torch.equal(next(data.train_batches("peer-a", 2, 32)), rows[0])
    assert not torch.equal(next(data.train_batches("peer-b", 2, 32)), rows[0])
