"""Train the shipped tokenizer: ``python -m hivetrain.data.train_tokenizer [--out DIR]``.

A GPT-2-style byte-level BPE with 4096 ids, ``<|endoftext|>`` first, trained on the embedded
corpus's training split only (held-out documents stay unseen). Training is deterministic: the
same corpus gives a byte-identical ``tokenizer.json``, so anyone can check the committed files
in ``assets/tokenizer`` against the shipped corpus (``assets/corpus``).
"""

from __future__ import annotations

import argparse
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from hivetrain.config import DataConfig
from hivetrain.data.corpus import load_corpus
from hivetrain.data.tokenizer import EOS, SHIPPED, tokenizer_digest

VOCAB_SIZE = 4096


def train_tokenizer(texts: Iterable[str], vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``texts``: every byte is a token, so no text is unknown."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOS, eos_token=EOS,
                                   unk_token=EOS, model_max_length=1 << 30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(SHIPPED), help="Output folder (default: %(default)s).")
    args = parser.parse_args(argv)
    corpus = load_corpus()
    train_docs, _ = corpus.split(DataConfig.heldout_fraction)
    tokenizer = train_tokenizer(train_docs)
    tokenizer.save_pretrained(args.out)
    print(f"trained on {len(train_docs)} documents of corpus {corpus.digest[:16]}: "
          f"{len(tokenizer)} tokens, digest {tokenizer_digest(tokenizer)}, saved to {args.out}")


if __name__ == "__main__":
    main()
