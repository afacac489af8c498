"""The embedded corpus: English prose that every peer already has, so training needs no network.

It is built from the documentation of the installed Python standard library, which the Python
Software Foundation licence lets us use and redistribute:

* the reference topics that ``help()`` shows (``pydoc_data.topics``);
* module, class and function docstrings, read with :mod:`ast` from the ``.py`` sources (the
  modules are never imported, so nothing runs), including the pip and setuptools wheels that
  ``ensurepip`` bundles (MIT-licensed);
* blocks of consecutive ``#`` comment lines, which in the standard library are mostly prose.

Tests, IDLE, lib2to3, codec tables and site-packages are skipped, as are texts shorter than
:data:`MIN_CHARS` (one-line docstrings teach little). Duplicates are dropped and documents are
ordered by their SHA-256, so the same Python build always gives the same corpus and digest. The
result is a few MB, cached as JSON under ``--data.cache_dir`` after the first build.
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import logging
import re
import sys
import sysconfig
import time
import tokenize
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from pydoc_data.topics import topics
from typing import Iterator

from hivetrain.atomic import atomic_write
from hivetrain.data.cache import cache_root
from hivetrain.data.split import is_heldout

logger = logging.getLogger(__name__)

RECIPE = 1  # bump whenever the extraction below changes, so stale caches are not reused
MIN_CHARS = 200
SKIP_DIRS = frozenset({"test", "tests", "idlelib", "lib2to3", "site-packages", "encodings",
                       "__pycache__"})
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_COMMENT_LINE = re.compile(r"^[ \t]*#+ ?(.*?)\s*$")


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


def load_corpus(cache_dir: str = "~/.cache/hivetrain") -> Corpus:
    """The embedded corpus, built on first use (a few seconds) and read from the cache after."""
    key = hashlib.sha256(json.dumps([RECIPE, MIN_CHARS, sys.version, str(stdlib_dir())])
                         .encode()).hexdigest()[:16]
    path = cache_root(cache_dir) / f"corpus-{key}.json"
    if path.exists():
        cached = json.loads(path.read_text(encoding="utf-8"))
        return Corpus(cached["documents"], cached["digest"])
    started = time.monotonic()
    logger.info("building the embedded corpus from %s (first run only, cached in %s)",
                stdlib_dir(), path.parent)
    corpus = build_corpus()
    payload = json.dumps({"digest": corpus.digest, "documents": corpus.documents})
    atomic_write(path, lambda f: f.write(payload.encode("utf-8")))
    logger.info("embedded corpus: %d documents, %.1f MB, digest %s, built in %.1fs",
                len(corpus.documents), corpus.num_bytes / 1e6, corpus.digest[:16],
                time.monotonic() - started)
    return corpus


def build_corpus() -> Corpus:
    """Extract, deduplicate and order every document; no cache involved."""
    texts = [text.strip() for _, text in sorted(topics.items())]
    count = 0
    for count, (name, source) in enumerate(_python_sources(stdlib_dir()), 1):
        texts.extend(_texts_in_source(source))
        if count % 200 == 0:
            logger.info("  read %d source files (at %s)", count, name)
    logger.info("  read %d source files", count)
    by_hash = {hashlib.sha256(t.encode("utf-8")).hexdigest(): t for t in texts if len(t) >= MIN_CHARS}
    order = sorted(by_hash)
    digest = hashlib.sha256("".join(order).encode()).hexdigest()
    return Corpus([by_hash[h] for h in order], digest)


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _python_sources(root: Path) -> Iterator[tuple[str, bytes]]:
    """``(name, source bytes)`` of every kept ``.py`` file, in a fixed order."""
    for path in sorted(root.rglob("*.py")):
        if not SKIP_DIRS.intersection(path.relative_to(root).parts):
            yield str(path.relative_to(root)), path.read_bytes()
    for wheel in sorted((root / "ensurepip" / "_bundled").glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            for name in sorted(archive.namelist()):
                if name.endswith(".py") and not SKIP_DIRS.intersection(PurePosixPath(name).parts):
                    yield f"{wheel.name}/{name}", archive.read(name)


def _texts_in_source(source: bytes) -> list[str]:
    """Docstrings and comment blocks of one module; a file that does not parse yields nothing."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(source).readline)
        text = source.decode(encoding)
        with warnings.catch_warnings():  # invalid escapes in old sources warn on newer Pythons
            warnings.simplefilter("ignore")
            tree = ast.parse(text)
    except (SyntaxError, UnicodeDecodeError, LookupError, ValueError):
        return []
    docstrings = [ast.get_docstring(node, clean=True) for node in ast.walk(tree)
                  if isinstance(node, _DOC_NODES)]
    return [doc.strip() for doc in docstrings if doc] + list(_comment_blocks(text))


def _comment_blocks(text: str) -> Iterator[str]:
    """Runs of whole-line ``#`` comments, each joined into one text without the ``#`` marks."""
    block: list[str] = []
    for line in text.splitlines():
        match = _COMMENT_LINE.match(line)
        if match:
            block.append(match.group(1))
        elif block:
            yield "\n".join(block).strip()
            block = []
    if block:
        yield "\n".join(block).strip()
