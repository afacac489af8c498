"""The held-out split, decided by each document's own text.

A document is held out iff a hash of its content falls below ``heldout_fraction``. No index,
order or random state is involved, so every peer (whatever its Python version, file order or
subset of the data) agrees on which documents are held out, validators can probe miners with
text the miners were never given, and raising the fraction only ever adds held-out documents.
"""

from __future__ import annotations

import hashlib

_SALT = b"hivetrain-heldout\0"  # decorrelates the split from content hashes used for ordering


def heldout_score(text: str) -> float:
    """A uniform number in [0, 1) fixed by ``text`` alone."""
    digest = hashlib.sha256(_SALT + text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def is_heldout(text: str, fraction: float) -> bool:
    """Whether ``text`` belongs to the held-out split of size ``fraction``."""
    return heldout_score(text) < fraction
