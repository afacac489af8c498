"""The local subnet behind ``make demo``: every run in its own folder, so a second run is clean.

issue 14: a second ``make demo`` in the same folder reused the first run's chain and peer.json
files; its miners dialled the old addresses, each started a swarm of its own (``peers 1``), and
the display and report mixed both runs.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from helpers.polling import records, wait_until
from hivetrain.localnet.cli import new_run_dir
from hivetrain.miner.neuron import PEER_FILE


def test_each_run_gets_a_new_numbered_folder_and_earlier_ones_stay(tmp_path):
    parent = tmp_path / "demo"
    assert new_run_dir(parent) == parent / "1"
    (parent / "1" / "report.json").write_text("{}")
    (parent / "notes").mkdir()  # not a run: ignored, untouched
    (parent / "7").mkdir()
    assert new_run_dir(parent) == parent / "8"
    assert (parent / "1" / "report.json").read_text() == "{}"
    assert sorted(p.name for p in parent.iterdir()) == ["1", "7", "8", "notes"]
    assert list((parent / "8").iterdir()) == []


SWARM = ["--swarm.miners", "2", "--swarm.validators", "0", "--model.preset", "tiny",
         "--data.seq_len", "64", "--train.batch_size", "4", "--train.log_every", "2",
         "--train.eval_batches", "1", "--wandb.off"]


def one_swarm(run_dir):
    """Both miners of the run trained in a swarm of two."""
    return all(any(r["peers"] == 2 for r in records(run_dir / miner, "train"))
               for miner in ("miner1", "miner2"))


def test_make_demo_twice_gives_two_clean_runs(tmp_path):
    """Two real local swarms, one after the other, with the same --swarm.dir: the first (one
    miner) runs out a short --swarm.duration, the second (two miners) is stopped by SIGTERM (as
    ``kill`` or a CI timeout would) once both miners train together, and leaves no neuron
    running. Each run keeps to its own folder and ends with a clean stop and its report."""
    parent = tmp_path / "demo"
    command = [sys.executable, "-m", "hivetrain", "swarm", "--swarm.dir", str(parent), *SWARM]
    first = subprocess.run([*command, "--swarm.miners", "1", "--swarm.duration", "2"],
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # A run without validators has no scores to label: its report drew an empty legend, with a
    # matplotlib UserWarning in the operator's terminal.
    assert "No artists with labels" not in first.stderr, first.stderr[-3000:]

    second = subprocess.Popen([*command, "--swarm.duration", "600"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: second.poll() is not None or one_swarm(parent / "2"), 300,
                   "both miners of the second run to train in one swarm")
        assert second.poll() is None, second.communicate()[0][-3000:]
        pids = [json.loads((parent / "2" / miner / PEER_FILE).read_text())["pid"]
                for miner in ("miner1", "miner2")]
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=180)
    finally:
        if second.poll() is None:
            second.kill()
    assert second.returncode == 0, output[-3000:]
    assert "SIGTERM: stopping the swarm" in output
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()], "a miner outlived the swarm"

    assert one_swarm(parent / "2")
    for run, stdout, miners in (("1", first.stdout, ["miner1"]),
                                ("2", output, ["miner1", "miner2"])):
        assert f"wallets in {parent / run}" in stdout
        report = json.loads((parent / run / "report.json").read_text())
        assert report
        assert sorted(p.name for p in (parent / run).glob("miner*")) == miners
        for miner in miners:
            assert len(records(parent / run / miner, "start")) == 1  # nothing from the other run
            assert records(parent / run / miner, "stop"), (run, miner)  # a clean stop


def test_the_report_plots_each_rounds_score_beside_the_moving_average(tmp_path):
    """issue 14: with only the EMA drawn, rounds a miner scored 1.0 did not show."""
    from types import SimpleNamespace

    from hivetrain.localnet.report import score_series, write_report

    rounds = [{"kind": "round", "time": 100.0 + 10 * i, "epoch": i,
               "results": [{"uid": 0, "score": score, "ema": ema},
                           {"uid": 1, "score": None, "ema": 0.1}]}
              for i, (score, ema) in enumerate([(1.0, 0.55), (0.3, 0.43), (1.0, 0.71)])]
    series = score_series(rounds)
    assert series[0] == {"seconds": [0.0, 10.0, 20.0], "ema": [0.55, 0.43, 0.71],
                         "round_seconds": [0.0, 10.0, 20.0], "score": [1.0, 0.3, 1.0]}
    assert series[1]["score"] == [] and series[1]["ema"] == [0.1, 0.1, 0.1]

    validator = tmp_path / "validator1"
    validator.mkdir()
    (validator / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rounds))
    options = SimpleNamespace(out_dir=tmp_path, validators=1)
    png, report = write_report(options, [], {"initial_loss_bound": 8.3, "chain": {}})
    assert png.read_bytes().startswith(b"\x89PNG") and json.loads(report.read_text())["chain"] == {}
