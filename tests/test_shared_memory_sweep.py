"""The test session's sweep of the shared-memory tensors its dead processes left (conftest.py)."""

import mmap
import os
import subprocess
import sys

from conftest import SESSION_START, release_shared_memory


def test_only_files_of_this_session_whose_creator_is_dead_are_unlinked(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    left = tmp_path / f"torch_{dead_pid}_1234_1"
    in_use = tmp_path / f"torch_{os.getpid()}_1234_1"
    older = tmp_path / f"torch_{dead_pid}_1234_2"
    other = tmp_path / f"psm_{dead_pid}"
    for path in (left, in_use, older, other):
        path.write_bytes(b"\0" * 64)
    os.utime(older, (SESSION_START - 60, SESSION_START - 60))

    assert release_shared_memory(tmp_path) == [left]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (in_use, older, other))


def test_a_file_a_live_process_still_holds_is_kept(tmp_path):
    """torch unlinks a file itself when its last tensor is freed, and aborts if it is gone."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    held, mapped = (tmp_path / f"torch_{dead.stdout.strip()}_1234_{n}" for n in (1, 2))
    for path in (held, mapped):
        path.write_bytes(b"\0" * 4096)
    with open(held, "rb"), open(mapped, "r+b") as backing:
        view = mmap.mmap(backing.fileno(), 0)
        backing.close()  # only the mapping keeps it now
        assert release_shared_memory(tmp_path) == []
        view.close()
    assert sorted(release_shared_memory(tmp_path)) == sorted([held, mapped])
