"""Metrics reach metrics.jsonl and a real wandb run (offline: no API key on test machines)."""

import json
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
