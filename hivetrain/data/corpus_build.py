"""Building the shipped corpus from CPython's documentation: ``python -m hivetrain.data.corpus_build``.

Run by a maintainer, never by a neuron (they read ``assets/corpus/embedded.json.gz``, see
:mod:`hivetrain.data.corpus`). The prose is that of the Python standard library, which the
Python Software Foundation licence lets us use and redistribute:

* the reference topics that ``help()`` shows (``pydoc_data.topics``);
* module, class and function docstrings, read with :mod:`ast` from the ``.py`` sources (the
  modules are never imported, so nothing runs), including the pip and setuptools wheels that
  ``ensurepip`` bundles (MIT-licensed);
* blocks of consecutive ``#`` comment lines, which in the standard library are mostly prose.

Tests, IDLE, lib2to3, codec tables and site-packages are skipped, as are texts shorter than
:data:`MIN_CHARS` (one-line docstrings teach little). Duplicates are dropped and documents are
ordered by their SHA-256. The result depends on the Python build it runs on, which is why it
is built once and shipped; the file records which Python built it.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import io
import json
import logging
import re
import sys
import sysconfig
import tokenize
import warnings
import zipfile
from pathlib import Path, PurePosixPath
from pydoc_data.topics import topics
from typing import Iterator

from hivetrain.atomic import atomic_write
from hivetrain.data.corpus import SHIPPED, Corpus, corpus_digest

logger = logging.getLogger(__name__)

MIN_CHARS = 200
SKIP_DIRS = frozenset({"test", "tests", "idlelib", "lib2to3", "site-packages", "encodings",
                       "__pycache__"})
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_COMMENT_LINE = re.compile(r"^[ \t]*#+ ?(.*?)\s*$")


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
    documents = [by_hash[h] for h in sorted(by_hash)]
    return Corpus(documents, corpus_digest(documents))


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


def write_shipped(corpus: Corpus, path: Path = SHIPPED) -> None:
    """Write ``corpus`` as the shipped file: gzip without a timestamp, so the bytes depend only
    on the content."""
    payload = json.dumps({"built_with": f"CPython {sys.version.split()[0]}",
                          "digest": corpus.digest, "documents": corpus.documents},
                         ensure_ascii=False).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(gzip.compress(payload, 9, mtime=0)))


def main() -> None:
    corpus = build_corpus()
    write_shipped(corpus)
    print(f"wrote {len(corpus.documents)} documents, {corpus.num_bytes / 1e6:.1f} MB, digest "
          f"{corpus.digest[:16]} to {SHIPPED}")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
