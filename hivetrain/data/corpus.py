"""The embedded corpus: English prose shipped with hivetrain, so training needs no network.

It used to be built on each machine from the host Python's own standard library, so two peers
on different Python versions trained on different data under one run_id (issue 14). It is now
built once (:mod:`hivetrain.data.corpus_build`, from CPython's documentation, PSF licence, and
the pip and setuptools wheels it bundles, MIT; see ``assets/corpus/LICENSE.md``) and shipped as
``assets/corpus/embedded.json.gz``: every peer reads the same bytes whatever its Python. Its
digest names exactly this content; it is checked on load and is part of the run_id.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import hivetrain
from hivetrain.data.split import is_heldout

SHIPPED = Path(hivetrain.__file__).resolve().parents[1] / "assets" / "corpus" / "embedded.json.gz"


@dataclass(frozen=True)
class Corpus:
    """The documents in canonical order and a digest that names exactly this content."""

    documents: list[str]
    digest: str

    def split(self, heldout_fraction: float) -> tuple[list[str], list[str]]:
        """``(train, heldout)`` documents, decided per document by :func:`is_heldout`."""
        train, heldout = [], []
        for doc in self.documents:
            (heldout if is_heldout(doc, heldout_fraction) else train).append(doc)
        return train, heldout

    @property
    def num_bytes(self) -> int:
        return sum(len(doc.encode("utf-8")) for doc in self.documents)


def corpus_digest(documents: list[str]) -> str:
    """SHA-256 over the documents' own SHA-256s, in order: what :class:`Corpus` calls its digest."""
    return hashlib.sha256("".join(hashlib.sha256(d.encode("utf-8")).hexdigest()
                                  for d in documents).encode()).hexdigest()


def load_corpus(path: Path = SHIPPED) -> Corpus:
    """The shipped corpus, checked against the digest it was written with."""
    try:
        stored = json.loads(gzip.decompress(path.read_bytes()).decode("utf-8"))
    except (OSError, EOFError, ValueError) as error:
        raise RuntimeError(f"the embedded corpus {path} cannot be read ({error}); restore it "
                           f"with `git checkout -- {path.name}` or reinstall hivetrain") from None
    corpus = Corpus(stored["documents"], stored["digest"])
    if corpus_digest(corpus.documents) != corpus.digest:
        raise RuntimeError(f"the embedded corpus {path} does not match its digest; restore it "
                           f"with `git checkout -- {path.name}` or reinstall hivetrain")
    return corpus
