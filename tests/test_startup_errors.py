"""Start-up on a bad run directory: one line that says what to do, exit code 2, nothing lost.

Also: a failed start leaves no empty run directory, and ``export`` to a read-only folder. Each
fails before it imports torch, transformers or hivemind: in about a second, not six (the export
took 46 s in a CI run, importing for a check that needs none of them).

The neurons run as real processes (``hivetrain.cli.main`` in a fresh interpreter, as ``python -m
hivetrain`` runs it). Every case here fails before the chain is opened, so no chain is needed.
Read-only and full file systems are real ones (small tmpfs mounts), which needs root; elsewhere
those cases are skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hivetrain.validator.state import SCORES_FILE


# A neuron started as ``python -m hivetrain`` starts it, which also prints the slow-to-import
# libraries it had loaded when it gave up: every check here must come before them (issue 13).
START = """
import sys
from hivetrain.cli import main
code = main(sys.argv[1:])
print(*sorted(m for m in ("torch", "transformers", "hivemind", "wandb") if m in sys.modules))
sys.exit(code)
"""


def start(role: str, run_dir: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", START, role, "--neuron.dir", str(run_dir),
                           "--wandb.off", "--subtensor.network", "embedded",
                           "--chain.path", str(run_dir.parent / "no-chain.sqlite"), *flags],
                          capture_output=True, text=True, timeout=300)


def assert_one_line_exit_2(result: subprocess.CompletedProcess, *phrases: str) -> str:
    assert result.returncode == 2, result.stderr
    if "-c" in result.args:  # started by start(): it failed before the slow imports
        assert result.stdout.split() == [], f"imported {result.stdout} before failing"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in lines[0]
    return lines[0]


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe garbage", b'{"scores": 3}'])
def test_corrupt_scores_stop_the_validator_and_keep_the_file(tmp_path, content):
    run_dir = tmp_path / "validator"
    run_dir.mkdir()
    (run_dir / SCORES_FILE).write_bytes(content)
    line = assert_one_line_exit_2(start("validator", run_dir), str(run_dir / SCORES_FILE),
                                  "left untouched", f"mv {run_dir / SCORES_FILE} ")
    assert (run_dir / SCORES_FILE).read_bytes() == content  # nothing lost ...
    assert sorted(os.listdir(run_dir)) == [SCORES_FILE]  # ... and nothing moved or added
    aside = line.split(f"mv {run_dir / SCORES_FILE} ")[1].strip()
    assert Path(aside).parent == run_dir and Path(aside).name.startswith(f"{SCORES_FILE}.corrupt.")


@pytest.fixture
def small_fs(tmp_path):
    """``mount(options) -> folder``: a 256 KiB tmpfs with those mount options, unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    mounted = []

    def mount(options: str) -> Path:
        target = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
        target.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=256k,{options}", "tmpfs",
                                 str(target)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount tmpfs here: {result.stderr.strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", str(target)], check=True)


@pytest.mark.parametrize("role", ["miner", "validator"])
def test_read_only_run_dir_names_the_flag(small_fs, role):
    run_dir = small_fs("ro") / role
    assert_one_line_exit_2(start(role, run_dir), f"--neuron.dir {run_dir} is not writable",
                           "Read-only file system")


@pytest.mark.parametrize("role", ["miner", "validator"])
def test_full_disk_names_the_flag(small_fs, role):
    disk = small_fs("rw")
    run_dir = disk / role
    run_dir.mkdir()
    with open(disk / "filler", "wb", buffering=0) as filler:  # fill it to the last block
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError:
            pass
    assert_one_line_exit_2(start(role, run_dir), f"--neuron.dir {run_dir} is not writable",
                           "No space left on device")
    assert os.listdir(run_dir) == []  # the failed check left no temporary file behind


@pytest.mark.parametrize("role", ["miner", "validator"])
def test_a_failed_start_leaves_no_empty_run_dir(tmp_path, role):
    """No wallet here: the start fails after the run directory was created and checked."""
    wallets = ["--wallet.path", str(tmp_path / "no-wallets")]
    run_dir = tmp_path / "fresh" / role
    assert_one_line_exit_2(start(role, run_dir, *wallets), "wallet default/default not found")
    assert not run_dir.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    assert_one_line_exit_2(start(role, kept, *wallets), "wallet default/default not found")
    assert kept.is_dir()  # the operator's own folder stays


def test_export_to_a_read_only_folder_is_one_line(small_fs, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    out = small_fs("ro") / "model"
    result = subprocess.run([sys.executable, "-c", START, "export", "--checkpoint",
                             str(tmp_path / "junk.pt"), "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert_one_line_exit_2(result, f"--out {out} is not writable (Read-only file system)",
                           "pick another --out")
