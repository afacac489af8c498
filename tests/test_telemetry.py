"""Metrics reach metrics.jsonl and a real wandb run (offline: no API key on test machines)."""

import json
import os
import subprocess
import sys
import time

from hivetrain.config import Config
from hivetrain.telemetry import Telemetry, read_metrics


def test_metrics_land_in_jsonl_and_offline_wandb_files(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = Config(role="miner")
    cfg.neuron.dir = str(tmp_path / "run")
    telemetry = Telemetry(cfg, run_name="miner-uid3-5Gabcdef", group="hivetrain-tiny-abc")
    for step in range(3):
        telemetry.log("train", loss=8.0 - step, heldout_loss=8.1 - step, samples_per_second=40.0,
                      epoch=step, peers=2, samples=64 * step)
    telemetry.close()

    records = read_metrics(cfg.run_dir)
    assert [r["heldout_loss"] for r in records] == [8.1, 7.1, 6.1]
    run_files = list((cfg.run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(run_files) == 1, "wandb should have written one offline run"
    # wandb-core, a separate process, may still be flushing the file after finish() returns.
    deadline = time.monotonic() + 30
    while b"train/peers" not in run_files[0].read_bytes() and time.monotonic() < deadline:
        time.sleep(0.2)
    data = run_files[0].read_bytes()
    for metric in ("train/loss", "train/heldout_loss", "train/samples_per_second", "train/epoch",
                   "train/peers"):
        assert metric.encode() in data, metric
    assert b"miner-uid3-5Gabcdef" in data and b"hivetrain-tiny-abc" in data
    assert json.loads(json.dumps(records[-1]))["kind"] == "train"


LOG_EACH_LEVEL = """
import logging
from hivetrain.config import Config
from hivetrain.telemetry import setup_logging
setup_logging(Config(role="miner"))
log = logging.getLogger("hivetrain.miner.trainer")
log.debug("hidden detail")
log.info("epoch 3 | loss 2.1")
log.warning("peer slow")
log.error("probe failed")
logging.getLogger("hivemind.averaging").warning("all-reduce timed out")
"""


def test_info_goes_to_stdout_warnings_and_errors_to_stderr():
    """pm2 files stderr as the error log: progress lines must not land there."""
    result = subprocess.run([sys.executable, "-c", LOG_EACH_LEVEL], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out, err = result.stdout.splitlines(), result.stderr.splitlines()
    assert len(out) == 1 and "miner INFO hivetrain.miner.trainer: epoch 3 | loss 2.1" in out[0]
    assert len(err) == 3
    assert [line.split(" ", 2)[2] for line in err] == [
        "WARNING hivetrain.miner.trainer: peer slow", "ERROR hivetrain.miner.trainer: probe failed",
        "WARNING hivemind.averaging: all-reduce timed out"]


WANDB_SERVICE_DIES = """
import os, signal, subprocess, sys
from hivetrain.config import Config
from hivetrain.telemetry import Telemetry, setup_logging
cfg = Config(role="miner")
cfg.neuron.dir = sys.argv[1]
setup_logging(cfg)
telemetry = Telemetry(cfg, run_name="miner-uid1-5Gabcdef", group="hivetrain-tiny-abc")
telemetry.log("train", loss=2.0)
# What `pm2 stop` does to the process tree: wandb's service process dies with the neuron.
for child in subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True,
                            text=True).stdout.split():
    os.kill(int(child), signal.SIGINT)
    os.waitpid(int(child), 0)
telemetry.log("train", loss=1.0)
telemetry.log("stop", epoch=3)
telemetry.close()
print("closed")
"""


def test_a_dead_wandb_service_never_stops_the_neuron(tmp_path):
    """Issue 14: a stop under pm2 raised ConnectionResetError in wandb and skipped the rest."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "NETRC": str(tmp_path / "no-netrc")}
    env.pop("WANDB_API_KEY", None)
    result = subprocess.run([sys.executable, "-c", WANDB_SERVICE_DIES, str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0 and result.stdout.split()[-1] == "closed", result.stderr
    assert "Traceback" not in result.stderr  # wandb's own exit hook is gone too
    warnings = result.stderr.splitlines()
    assert warnings and all(" WARNING hivetrain: wandb " in line for line in warnings), warnings
    assert [r["kind"] for r in read_metrics(tmp_path / "run")] == ["train", "train", "stop"]
