"""Low-communication training: DiLoCo against gradient averaging and a hand-written baseline.

    .venv/bin/python bench/low_communication.py --seconds 150 --inner-steps 100

One run, one machine, 2 peers x 1 torch thread, ``tiny`` preset, batch 8, sequence 128. In order:

1. ``standalone``: plain PyTorch, one process, no hivemind, same learning rate (the reference);
2. ``hivemind``: a hand-written hivemind.Optimizer loop, as a user of the library would write it
   (gradient averaging every 1024 samples, no compression; the reference measured 0.53);
3. ``sync``: hivetrain miners in ``--train.mode sync``;
4. ``diloco/<compression>[+overlap]``: hivetrain miners in ``--train.mode diloco``;
5. ``diloco/fp16+undefended``: the same miners with hivemind's plain all-reduce in place of the
   robust reduction and receiver checks (``bench/undefended_miner.py``): the defences' cost is
   ``diloco/fp16`` against it, in the same run (use ``--peers 3``: with two senders the robust
   reducer only drops non-finite copies).

Printed per configuration: swarm samples/s and efficiency = swarm / (N x standalone); bytes the
peers serialise per training sample (see :mod:`hivetrain.swarm.traffic` for what is counted) and
the reduction against a per-step fp32 all-reduce of the same model; held-out loss at the sample
count every configuration reached (equal samples) and at the end of the window (equal time).

Configurations can be narrowed with ``--only``, e.g. ``--only standalone diloco/fp16+overlap``.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from swarm_efficiency import COMMON, standalone, wait_window  # noqa: E402

from hivetrain.localnet.processes import HIVETRAIN, ProcessGroup  # noqa: E402
from hivetrain.localnet.swarm import SwarmOptions, prepare_chain, start_neurons  # noqa: E402
from hivetrain.telemetry import read_metrics  # noqa: E402

BATCH, SEQ, LR = 8, 128, "2e-3"
UNDEFENDED_MINER = (str(Path(__file__).resolve().parent / "undefended_miner.py"),)
UNDEFENDED = "+undefended"


def configurations(inner_steps: int) -> dict[str, list[str]]:
    """Miner flags of each hivetrain configuration (same learning rate and warm-up for all)."""
    base = ["--train.lr", LR, "--train.warmup_epochs", "0"]
    diloco = base + ["--train.mode", "diloco", "--train.inner_steps", str(inner_steps)]
    return {
        "sync": base + ["--train.mode", "sync", "--train.target_batch_size", "256"],
        "diloco/none": diloco + ["--train.grad_compression", "none"],
        "diloco/fp16": diloco + ["--train.grad_compression", "fp16"],
        "diloco/int8": diloco + ["--train.grad_compression", "int8"],
        "diloco/fp16+overlap": diloco + ["--train.grad_compression", "fp16", "--train.overlap"],
        "diloco/fp16" + UNDEFENDED: diloco + ["--train.grad_compression", "fp16"],
    }


def hivemind_peer(seconds: float, initial_peers: list[str], out: Path) -> None:
    """The hand-written baseline: the hivemind quickstart loop around the same model and data."""
    import hivemind
    import torch
    from hivemind.compression import NoCompression

    from hivetrain.config import Config
    from hivetrain.data import load_token_data, load_tokenizer
    from hivetrain.model.gpt2 import build_model
    from hivetrain.swarm.traffic import ByteCounter, CountingCompression
    from hivetrain.telemetry import Telemetry

    torch.set_num_threads(1)
    cfg = Config()
    cfg.neuron.dir, cfg.wandb.off = str(out), True
    data = load_token_data(cfg.data, load_tokenizer(None))
    model = build_model("tiny", data.vocab_size, SEQ, seed=0)
    dht = hivemind.DHT(start=True, initial_peers=initial_peers,
                       host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    (out / "maddrs.json").write_text(json.dumps([str(a) for a in dht.get_visible_maddrs()]))
    counter = ByteCounter()
    opt = hivemind.Optimizer(
        dht=dht, run_id="handwritten-baseline", batch_size_per_step=BATCH, target_batch_size=1024,
        optimizer=lambda params: torch.optim.AdamW(params, lr=float(LR), betas=(0.9, 0.95)),
        params=model.parameters(), matchmaking_time=3.0, averaging_timeout=30.0,
        grad_compression=CountingCompression(NoCompression(), counter), verbose=False)
    telemetry = Telemetry(cfg, run_name="baseline", group="baseline")
    batches = data.train_batches(str(dht.peer_id), BATCH, SEQ)
    heldout = data.heldout_batches(cfg.train.eval_batches, BATCH, SEQ)
    start = last_report = time.monotonic()
    samples, epoch = 0, opt.local_epoch
    while time.monotonic() - start < seconds:
        batch = next(batches)
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
        samples += BATCH
        if opt.local_epoch != epoch:
            epoch = opt.local_epoch
            telemetry.log("epoch", samples=samples, bytes_sent=counter.total, epoch=epoch)
        if time.monotonic() - last_report >= 10:
            last_report = time.monotonic()
            with torch.no_grad():
                model.eval()
                loss = sum(model(input_ids=b, labels=b).loss.item() for b in heldout) / len(heldout)
                model.train()
            telemetry.log("train", samples=samples, heldout_loss=loss, epoch=opt.local_epoch)
    telemetry.close()
    opt.shutdown()
    dht.shutdown()


def run_baseline(peers: int, seconds: float, out: Path) -> list[Path]:
    """Start the hand-written peers (the first bootstraps the others) and wait for them."""
    dirs = [out / f"peer{i}" for i in range(peers)]
    with ProcessGroup(grace_seconds=20) as group:
        first = group.start("peer0", dirs[0], ["--role", "hivemind-peer", "--seconds",
                                               str(seconds), "--out", str(dirs[0])],
                            program=(__file__,))
        maddrs = group.wait_for_file(first, "maddrs.json", 120)
        rest = [group.start(f"peer{i}", dirs[i], ["--role", "hivemind-peer", "--seconds",
                                                  str(seconds), "--out", str(dirs[i]),
                                                  "--initial-peers", *maddrs],
                            program=(__file__,)) for i in range(1, peers)]
        for neuron in [first, *rest]:
            neuron.process.wait(seconds + 120)
    return dirs


def run_miners(peers: int, seconds: float, flags: list[str], out: Path,
               program: tuple[str, ...] = HIVETRAIN) -> list[Path]:
    options = SwarmOptions(out_dir=out, miners=peers, validators=0, neuron_flags=COMMON + flags)
    prepare_chain(options)
    with ProcessGroup(grace_seconds=20) as group:
        names, _ = start_neurons(group, options, miner_program=program)
        wait_window(group, seconds)
    return [out / name for name in names]


def summarise(dirs: list[Path], warmup: float) -> dict:
    """Swarm rate after warm-up, bytes per sample, and the held-out loss curve over samples.

    A curve point pairs the peers' mean held-out loss of the published (swarm-global) model with
    the samples that model has seen: the swarm's total at the latest epoch boundary. DiLoCo's
    model changes once per round, so counting samples still in an unfinished round would make
    it look behind by up to a round.
    """
    per_peer = [read_metrics(d) for d in dirs]
    trains = [[r for r in m if r["kind"] == "train"] for m in per_peer]
    epochs = [[r for r in m if r["kind"] == "epoch" and "bytes_sent" in r] for m in per_peer]
    t0 = min(t[0]["time"] for t in trains if t)
    rate = 0.0
    for train in trains:
        window = [r for r in train if r["time"] >= t0 + warmup]
        if len(window) >= 2:
            rate += (window[-1]["samples"] - window[0]["samples"]) / (window[-1]["time"]
                                                                      - window[0]["time"])
    sent = sum(e[-1]["bytes_sent"] for e in epochs if e)
    counted = sum(e[-1]["samples"] for e in epochs if e)

    def latest(records, moment):
        return max((r for r in records if r["time"] <= moment), key=lambda r: r["time"],
                   default=None)

    curve = []
    for moment in sorted(r["time"] for t in trains for r in t):
        evaluated = [latest(t, moment) for t in trains]
        boundaries = [latest(e, moment) for e in epochs]
        if all(evaluated):
            seen = sum(b["samples"] for b in boundaries if b)
            curve.append((seen, float(np.mean([r["heldout_loss"] for r in evaluated]))))
    return {"samples_per_second": rate, "bytes_per_sample": sent / counted if counted else math.nan,
            "rounds": max((e[-1]["epoch"] for e in epochs if e), default=0), "curve": curve}


def loss_at(curve: list[tuple[int, float]], samples: float) -> float:
    """Held-out loss of the model that had seen ``samples`` (the last point at or below)."""
    below = [loss for seen, loss in curve if seen <= samples]
    return below[-1] if below else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=150.0)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--inner-steps", type=int, default=100)
    parser.add_argument("--only", nargs="*", help="configurations to run (default: all)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the swarm configurations this many times, in alternating order (A B "
                             "B A ...), so that drift of the machine's load falls on both sides")
    parser.add_argument("--keep", metavar="DIR", help="keep the neurons' folders here")
    parser.add_argument("--role", default="all", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--initial-peers", nargs="*", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "hivemind-peer":
        hivemind_peer(args.seconds, args.initial_peers, Path(args.out))
        return
    if args.role == "standalone":
        print(json.dumps(standalone(args.seconds, args.warmup, float(LR))))
        return
    wanted = set(args.only or ["standalone", "hivemind", *configurations(args.inner_steps)])
    results: dict[str, dict] = {}
    if "standalone" in wanted:
        results["standalone"] = json.loads(subprocess.run(
            [sys.executable, __file__, "--role", "standalone", "--seconds", str(args.seconds),
             "--warmup", str(args.warmup)], check=True, capture_output=True, text=True).stdout)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        if "hivemind" in wanted:
            dirs = run_baseline(args.peers, args.seconds, Path(tmp) / "hivemind")
            results["hivemind"] = summarise(dirs, args.warmup)
        for repetition in range(args.repeat):
            chosen = [(n, f) for n, f in configurations(args.inner_steps).items() if n in wanted]
            for name, flags in chosen[::-1] if repetition % 2 else chosen:
                key = name + (f" #{repetition + 1}" if repetition else "")
                program = UNDEFENDED_MINER if name.endswith(UNDEFENDED) else HIVETRAIN
                dirs = run_miners(args.peers, args.seconds, flags,
                                  Path(tmp) / key.replace("/", "-").replace(" #", "-"), program)
                results[key] = summarise(dirs, args.warmup)
                print(f"{key}: {results[key]['samples_per_second']:.1f} samples/s, "
                      f"{results[key]['rounds']} rounds", flush=True)
    report(results, args)


def report(results: dict, args) -> None:
    """The table. Held-out at equal samples compares each configuration with ``sync`` at the
    sample count of that configuration's last finished epoch within sync's run."""
    single = results.get("standalone", {}).get("samples_per_second", math.nan)
    swarms = {k: v for k, v in results.items() if k != "standalone" and v["curve"]}
    fp32_round = None
    if "diloco/none" in swarms:  # uncompressed pseudo-gradient = one fp32 all-reduce of the model
        fp32_round = swarms["diloco/none"]["bytes_per_sample"] * args.inner_steps * BATCH * args.peers
    sync = swarms.get("sync", {}).get("curve")
    print(f"\nstandalone: {single:.1f} samples/s, held-out "
          f"{results.get('standalone', {}).get('heldout_loss', math.nan):.3f} after "
          f"{args.seconds:.0f} s")
    print(f"{'configuration':<20} {'samples/s':>9} {'effic.':>6} {'bytes/sample':>12} "
          f"{'vs fp32/step':>12} {'held-out end':>12}  equal samples: {'samples':>7} "
          f"{'this':>6} {'sync':>6} {'diff':>6}")
    for name, v in swarms.items():
        per_step = fp32_round / (BATCH * args.peers) if fp32_round else math.nan
        reduction = per_step / v["bytes_per_sample"] if v["bytes_per_sample"] else math.nan
        line = (f"{name:<20} {v['samples_per_second']:9.1f} "
                f"{v['samples_per_second'] / (args.peers * single):6.2f} "
                f"{v['bytes_per_sample']:12.0f} {reduction:11.0f}x {v['curve'][-1][1]:12.3f}")
        if sync:
            seen = max((x for x, _ in v["curve"] if x <= sync[-1][0]), default=0)
            mine, theirs = loss_at(v["curve"], seen), loss_at(sync, seen)
            line += f"  {'':>15}{seen:>7} {mine:6.3f} {theirs:6.3f} {(mine / theirs - 1):+6.1%}"
        print(line)
    ratios = []
    for repetition in range(args.repeat):
        suffix = f" #{repetition + 1}" if repetition else ""
        defended = swarms.get("diloco/fp16" + suffix)
        undefended = swarms.get("diloco/fp16" + UNDEFENDED + suffix)
        if defended and undefended:
            ratios.append(defended["samples_per_second"] / undefended["samples_per_second"])
            seen = min(defended["curve"][-1][0], undefended["curve"][-1][0])
            print(f"defences' cost{suffix} (diloco/fp16 against diloco/fp16{UNDEFENDED}): "
                  f"samples/s ratio {ratios[-1]:.3f} ({1 - ratios[-1]:.1%} lost); held-out at "
                  f"{seen} samples {loss_at(defended['curve'], seen):.3f} against "
                  f"{loss_at(undefended['curve'], seen):.3f}")
    if len(ratios) > 1:
        print(f"defences' cost over {len(ratios)} pairs: samples/s ratio median "
              f"{float(np.median(ratios)):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}")
    if fp32_round:
        print(f"one fp32 all-reduce of the model: {fp32_round / 1e6:.2f} MB serialised per round "
              f"(both peers together); per-step fp32 averaging = that per {BATCH * args.peers} samples")
    print(json.dumps({k: {**v, "curve": v.get("curve", [])[-3:]} for k, v in results.items()}))


if __name__ == "__main__":
    main()
