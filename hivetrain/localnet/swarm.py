"""A whole swarm on 127.0.0.1: several real miner processes averaging through hivemind.

The first miner starts a new DHT; the others bootstrap from the multiaddrs it publishes in its
run directory. The swarm trains for a bounded time with a progress line per miner, then every
process is stopped gracefully and a report is written.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hivetrain.localnet.processes import ProcessGroup
from hivetrain.localnet.report import progress_line, summarise, write_report
from hivetrain.miner.neuron import PEER_FILE
from hivetrain.telemetry import read_metrics

logger = logging.getLogger(__name__)


@dataclass
class SwarmOptions:
    """How big and how long; ``miner_flags`` are passed to every miner unchanged."""

    out_dir: Path
    miners: int = 3
    duration: float = 240.0
    progress_every: float = 10.0
    ready_timeout: float = 180.0
    miner_flags: list[str] = field(default_factory=list)


def miner_args(run_dir: Path, index: int, initial_peers: list[str], flags: list[str]) -> list[str]:
    args = ["miner", "--neuron.dir", str(run_dir), "--wallet.hotkey", f"miner{index}",
            "--dht.host_ip", "127.0.0.1", "--train.threads", "1", *flags]
    if initial_peers:
        args += ["--dht.initial_peers", *initial_peers]
    return args


def run_local_swarm(options: SwarmOptions) -> dict:
    """Run the swarm and return the report summary; raises LaunchError if a miner dies."""
    options.out_dir.mkdir(parents=True, exist_ok=True)
    run_dirs = {f"miner{i}": options.out_dir / f"miner{i}" for i in range(1, options.miners + 1)}
    started = time.monotonic()
    with ProcessGroup() as group:
        names = list(run_dirs)
        first = group.start(names[0], run_dirs[names[0]],
                            miner_args(run_dirs[names[0]], 1, [], options.miner_flags))
        bootstrap = group.wait_for_file(first, PEER_FILE, options.ready_timeout)["maddrs"]
        print(f"first miner is up as {bootstrap[0]}", flush=True)
        others = [group.start(name, run_dirs[name],
                              miner_args(run_dirs[name], i, bootstrap, options.miner_flags))
                  for i, name in enumerate(names[1:], start=2)]
        for neuron in others:
            group.wait_for_file(neuron, PEER_FILE, options.ready_timeout)
        print(f"{options.miners} miners up; training for {options.duration:.0f} s "
              f"(Ctrl-C stops early)", flush=True)
        training_started = time.monotonic()
        try:
            watch(group, run_dirs, training_started + options.duration, options.progress_every)
        except KeyboardInterrupt:
            print("\nCtrl-C: stopping the swarm", flush=True)
        print("stopping miners (each writes a checkpoint)...", flush=True)
    vocab_size = next((r["vocab_size"] for d in run_dirs.values() for r in read_metrics(d)
                       if r["kind"] == "start" and "vocab_size" in r), None)
    summary = summarise(run_dirs, vocab_size or 4096, time.monotonic() - started)
    png, report = write_report(options.out_dir, run_dirs, summary)
    print(f"report: {png} and {report}", flush=True)
    return summary


def watch(group: ProcessGroup, run_dirs: dict[str, Path], deadline: float, every: float) -> None:
    """Print one progress block every ``every`` seconds until the deadline or a miner dies."""
    while time.monotonic() < deadline:
        group.check_alive()
        remaining = deadline - time.monotonic()
        lines = [progress_line(name, read_metrics(d)) for name, d in run_dirs.items()]
        print(f"--- {remaining:5.0f} s left\n" + "\n".join(lines), flush=True)
        sys.stdout.flush()
        time.sleep(min(every, max(remaining, 0)))  # a display cadence, not synchronisation
