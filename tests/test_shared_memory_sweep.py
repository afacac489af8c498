"""The test session's sweep of the shared-memory tensors its dead processes left (conftest.py)."""

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
