"""Where built corpora and token arrays are cached.

Several neurons on one machine may build the same corpus or token arrays at once; they write
through :func:`hivetrain.atomic.atomic_write`, so a reader never sees a torn file and the last
finished writer wins with identical content.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | os.PathLike) -> Path:
    """The cache folder named by ``--data.cache_dir``, ``~`` expanded and created if missing."""
    root = Path(cache_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root
