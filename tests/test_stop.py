"""Stopping a miner under a real pm2 with wandb on (offline): the final checkpoint, a clean exit.

``pm2 stop`` signals the neuron's whole process tree, so wandb's service process dies at the same
moment as the neuron it serves; wandb's calls then fail (issue 14: every pm2 stop with wandb on
lost the last checkpoint and ended in SIGKILL). The miner runs on an embedded dev chain, alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from helpers.polling import records, wait_until
from hivetrain.localnet.swarm import SwarmOptions, neuron_args, prepare_chain
from hivetrain.miner.checkpoint import CHECKPOINT_NAME

ROOT = Path(__file__).resolve().parents[1]
PM2 = ROOT / "node_modules" / ".bin" / "pm2"
FLAGS = ["--model.preset", "tiny", "--data.seq_len", "64", "--train.batch_size", "4",
         "--train.inner_steps", "5", "--train.matchmaking_time", "1",
         "--train.averaging_timeout", "10", "--train.log_every", "1", "--train.eval_batches", "1",
         "--train.checkpoint_every", "1000"]  # only the stop writes a checkpoint


@pytest.fixture
def pm2_home():
    if not PM2.exists():
        pytest.skip("pm2 is not installed: run `npm ci`")
    home = Path(tempfile.mkdtemp(prefix="pm2-", dir="/tmp"))  # unix socket paths are short
    env = {**os.environ, "PM2_HOME": str(home)}
    yield home, env
    subprocess.run([str(PM2), "kill"], env=env, capture_output=True, timeout=60)
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("signal", ["SIGINT", "SIGTERM"])
def test_pm2_stop_with_wandb_writes_the_checkpoint_and_exits_0(tmp_path, pm2_home, signal):
    home, env = pm2_home
    options = SwarmOptions(out_dir=tmp_path, miners=1, validators=0, block_time=0.5,
                           neuron_flags=FLAGS)
    prepare_chain(options)
    run_dir = tmp_path / "miner1"
    # PM2_KILL_SIGNAL is read by the pm2 daemon this test's first pm2 command starts.
    env = {**env, "PM2_KILL_SIGNAL": signal, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1",
           "NETRC": str(tmp_path / "no-netrc"), "PYTHONPATH": str(ROOT)}
    env.pop("WANDB_API_KEY", None)
    args = neuron_args("miner", "miner1", options)[1:]
    subprocess.run([str(PM2), "start", str(ROOT / "neurons" / "miner.py"), "--name", "miner",
                    "--interpreter", sys.executable, "--no-autorestart", "--kill-timeout", "60000",
                    "--", *args],
                   env=env, check=True, capture_output=True, timeout=120)

    def running() -> bool:
        out = subprocess.run([str(PM2), "jlist"], env=env, capture_output=True, text=True).stdout
        app = json.loads(out[out.index("["):])[0]
        assert app["pm2_env"]["status"] == "online", "the miner died; see its pm2 logs above"
        return len(records(run_dir, "epoch")) >= 1 and len(records(run_dir, "train")) >= 2

    wait_until(running, 300, "the miner to train past its first epoch")
    assert list((run_dir / "wandb").glob("offline-run-*")), "wandb should be recording"
    assert not (run_dir / CHECKPOINT_NAME).exists()

    started = time.monotonic()
    subprocess.run([str(PM2), "stop", "miner"], env=env, check=True, capture_output=True,
                   timeout=120)
    print(f"pm2 stop took {time.monotonic() - started:.1f} s")

    daemon_log = (home / "pm2.log").read_text()
    # The neuron itself exits 0 (no kill-timeout SIGKILL of the neuron: that would leave no stop
    # record and no final checkpoint, asserted below). On a loaded machine wandb's service
    # processes can outlive it by a moment, and pm2 then SIGKILLs those leftovers of the tree.
    assert "exited with code [0]" in daemon_log, daemon_log[-2000:]
    checkpoint = torch.load(run_dir / CHECKPOINT_NAME, map_location="cpu", weights_only=False)
    (stop,) = records(run_dir, "stop")
    assert checkpoint["epoch"] == stop["epoch"] >= 1  # the epoch it reached, not an older one
    out_log = "".join(p.read_text() for p in (home / "logs").glob("miner-out*.log"))
    assert "checkpoint at epoch" in out_log and "miner stopped at epoch" in out_log
