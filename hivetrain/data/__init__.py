"""Data for hivetrain neurons: the shipped tokenizer, the offline corpus and token streams.

Typical use by a neuron::

    tokenizer = load_tokenizer(cfg.data.tokenizer)
    data = load_token_data(cfg.data, tokenizer)
    batches = data.train_batches(peer_id, cfg.train.batch_size, cfg.data.seq_len)
"""

from hivetrain.data.corpus import Corpus, load_corpus
from hivetrain.data.source import load_token_data
from hivetrain.data.split import is_heldout
from hivetrain.data.tokenizer import load_tokenizer, tokenizer_digest
from hivetrain.data.tokens import ArrayTokenData, TokenData

__all__ = ["ArrayTokenData", "Corpus", "TokenData", "is_heldout", "load_corpus", "load_token_data",
           "load_tokenizer", "tokenizer_digest"]
