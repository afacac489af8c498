"""Swarm efficiency: an N-peer hivemind swarm against one standalone trainer, in one run.

    .venv/bin/python bench/swarm_efficiency.py --peers 2 --seconds 120

Both sides use the same model preset, data, batch size and one torch thread per process. The
standalone trainer is plain PyTorch (no hivemind at all), run first in its own process; the swarm
is N real miner processes on 127.0.0.1. Printed figures:

- samples/s of the standalone trainer and of the swarm (sum over peers, after warm-up);
- efficiency = swarm samples/s / (N x standalone samples/s);
- held-out loss each side reached after the same wall time.

Extra miner flags go after ``--``, e.g. ``-- --train.target_batch_size 2048``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hivetrain.localnet.processes import ProcessGroup
from hivetrain.localnet.swarm import SwarmOptions, prepare_chain, start_neurons
from hivetrain.telemetry import read_metrics

COMMON = ["--model.preset", "tiny", "--data.seq_len", "128", "--train.batch_size", "8",
          "--wandb.off", "--train.log_every", "10", "--train.checkpoint_every", "0"]


def standalone(seconds: float, warmup: float, lr: float | None = None) -> dict:
    """Plain PyTorch training with the miner's model, data and optimizer recipe; no swarm."""
    import torch

    from hivetrain.config import Config
    from hivetrain.data import load_token_data, load_tokenizer
    from hivetrain.model.gpt2 import build_model

    torch.set_num_threads(1)
    cfg = Config()
    tokenizer = load_tokenizer(None)
    data = load_token_data(cfg.data, tokenizer)
    model = build_model("tiny", data.vocab_size, 128, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr or cfg.train.lr, betas=(0.9, 0.95),
                            weight_decay=cfg.train.weight_decay)
    batches = data.train_batches("standalone", 8, 128)
    heldout = data.heldout_batches(cfg.train.eval_batches, 8, 128)
    start = time.monotonic()
    counted_from, samples = None, 0
    while time.monotonic() - start < seconds:
        batch = next(batches)
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if counted_from is None and time.monotonic() - start >= warmup:
            counted_from = time.monotonic()
        elif counted_from is not None:
            samples += batch.shape[0]
    rate = samples / (time.monotonic() - counted_from)
    model.eval()
    with torch.no_grad():
        heldout_loss = sum(model(input_ids=b, labels=b).loss.item() for b in heldout) / len(heldout)
    return {"samples_per_second": rate, "heldout_loss": heldout_loss}


def wait_window(group: ProcessGroup, seconds: float) -> float:
    """Let the neurons run for the measuring window, failing if one dies; returns its end."""
    start = time.time()
    while time.time() - start < seconds:
        group.check_alive()
        time.sleep(1.0)  # the benchmark's measuring window, not synchronisation
    return time.time()


def swarm(peers: int, seconds: float, warmup: float, flags: list[str], out: Path) -> dict:
    """N miners on loopback (embedded chain, no validator); rate from their metrics after warm-up."""
    options = SwarmOptions(out_dir=out, miners=peers, validators=0, neuron_flags=COMMON + flags)
    prepare_chain(options)
    with ProcessGroup(grace_seconds=20) as group:
        names, _ = start_neurons(group, options)
        start = time.time()
        end = wait_window(group, seconds)
    dirs = [out / name for name in names]
    total_rate, losses, epochs = 0.0, [], 0
    for run_dir in dirs:
        train = [r for r in read_metrics(run_dir) if r["kind"] == "train"]
        window = [r for r in train if start + warmup <= r["time"] <= end]
        if len(window) >= 2:
            total_rate += (window[-1]["samples"] - window[0]["samples"]) / (window[-1]["time"] -
                                                                            window[0]["time"])
        losses.append(min((r["heldout_loss"] for r in train if r["time"] <= end), default=math.nan))
        epochs = max(epochs, max((r["epoch"] for r in train), default=0))
    return {"samples_per_second": total_rate, "heldout_loss": sum(losses) / len(losses),
            "epochs": epochs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--role", choices=["all", "standalone"], default="all",
                        help=argparse.SUPPRESS)
    args, flags = parser.parse_known_args()
    flags = [f for f in flags if f != "--"]
    if args.role == "standalone":
        print(json.dumps(standalone(args.seconds, args.warmup)))
        return
    single = json.loads(subprocess.run(
        [sys.executable, __file__, "--role", "standalone", "--seconds", str(args.seconds),
         "--warmup", str(args.warmup)], check=True, capture_output=True, text=True).stdout)
    with tempfile.TemporaryDirectory() as tmp:
        many = swarm(args.peers, args.seconds, args.warmup, flags, Path(tmp))
    efficiency = many["samples_per_second"] / (args.peers * single["samples_per_second"])
    print(f"standalone: {single['samples_per_second']:.1f} samples/s, "
          f"held-out loss {single['heldout_loss']:.3f} after {args.seconds:.0f} s")
    print(f"swarm of {args.peers}: {many['samples_per_second']:.1f} samples/s, "
          f"held-out loss {many['heldout_loss']:.3f} after {args.seconds:.0f} s "
          f"({many['epochs']} epochs)")
    print(f"efficiency = swarm / ({args.peers} x standalone) = {efficiency:.2f}")
    print(json.dumps({"standalone": single, "swarm": many, "efficiency": efficiency,
                      "peers": args.peers, "seconds": args.seconds, "miner_flags": COMMON + flags}))


if __name__ == "__main__":
    main()
