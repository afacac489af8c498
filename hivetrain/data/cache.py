"""Cache files that survive crashes and concurrent peers: every write lands whole or not at all.

Several neurons on one machine may build the same corpus or token arrays at once; writing to a
private temporary file and ``os.replace``-ing it into place means a reader never sees a torn
file and the last finished writer wins with identical content.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def cache_root(cache_dir: str | os.PathLike) -> Path:
    """The cache folder named by ``--data.cache_dir``, ``~`` expanded and created if missing."""
    root = Path(cache_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
