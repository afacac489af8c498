"""A whole subnet on 127.0.0.1: embedded chain, wallets, miners and a validator.

The launcher creates the dev chain and password-less wallets under the output folder, registers
every hotkey (the validator also gets stake and a permit), then starts real neuron processes
with the same flags an operator would use against finney. Miners find each other through the
DHT addresses they commit on chain; nothing is passed between them by hand.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from hivetrain.chain import (SubnetParams, create_dev_wallet, init_dev_chain, register_dev,
                             stake_dev)
from hivetrain.localnet.processes import HIVETRAIN, ProcessGroup
from hivetrain.localnet.report import (progress_line, summarise, validator_line, write_report)
from hivetrain.miner.neuron import PEER_FILE
from hivetrain.telemetry import read_metrics

logger = logging.getLogger(__name__)

NETUID = 1
VALIDATOR_STAKE_TAO = 1000.0


@dataclass
class SwarmOptions:
    """How big and how long; ``neuron_flags`` are passed to every neuron unchanged."""

    out_dir: Path
    miners: int = 3
    validators: int = 1
    duration: float = 240.0
    block_time: float = 1.0
    progress_every: float = 10.0
    ready_timeout: float = 180.0
    neuron_flags: list[str] = field(default_factory=list)

    @property
    def chain_path(self) -> Path:
        return self.out_dir / "chain.sqlite"

    @property
    def wallet_path(self) -> Path:
        return self.out_dir / "wallets"


def prepare_chain(options: SwarmOptions) -> None:
    """Create the chain, the subnet and a registered wallet per neuron (idempotent)."""
    wallets = str(options.wallet_path)
    owner = create_dev_wallet("owner", "default", wallets)
    init_dev_chain(options.chain_path, options.block_time, NETUID, owner,
                   SubnetParams(tempo=20, weights_rate_limit=5))
    for i in range(1, options.miners + 1):
        register_dev(options.chain_path, NETUID, create_dev_wallet(f"miner{i}", "default", wallets))
    for i in range(1, options.validators + 1):
        wallet = create_dev_wallet(f"validator{i}", "default", wallets)
        register_dev(options.chain_path, NETUID, wallet)
        stake_dev(options.chain_path, NETUID, wallet.hotkey.ss58_address, VALIDATOR_STAKE_TAO,
                  permit=True)


def neuron_args(role: str, name: str, options: SwarmOptions, extra: list[str] = ()) -> list[str]:
    """The command line of one local neuron: the operator's flags, pointed at the dev chain."""
    return [role, "--netuid", str(NETUID), "--subtensor.network", "embedded",
            "--chain.path", str(options.chain_path), "--wallet.path", str(options.wallet_path),
            "--wallet.name", name, "--wallet.hotkey", "default",
            "--neuron.dir", str(options.out_dir / name), "--dht.host_ip", "127.0.0.1",
            "--axon.port", "0", "--train.threads", "1", *options.neuron_flags, *extra]


def start_neurons(group: ProcessGroup, options: SwarmOptions, validator_flags: list[str] = (),
                  miner_program: tuple[str, ...] = HIVETRAIN):
    """Start the first miner, wait until it has committed its address, then all the others.

    ``miner_program`` runs every miner from another entry point (a benchmark's baseline miner)."""
    names = [f"miner{i}" for i in range(1, options.miners + 1)]
    first = group.start(names[0], options.out_dir / names[0],
                        neuron_args("miner", names[0], options), program=miner_program)
    group.wait_for_file(first, PEER_FILE, options.ready_timeout)
    others = [group.start(name, options.out_dir / name, neuron_args("miner", name, options),
                          program=miner_program)
              for name in names[1:]]
    validators = [group.start(f"validator{i}", options.out_dir / f"validator{i}",
                              neuron_args("validator", f"validator{i}", options,
                                          list(validator_flags)))
                  for i in range(1, options.validators + 1)]
    for neuron in others:
        group.wait_for_file(neuron, PEER_FILE, options.ready_timeout)
    return names, validators


def _interrupt(signum, frame) -> None:
    """The first SIGTERM stops the swarm as Ctrl-C does; later ones wait for that stop."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def run_local_swarm(options: SwarmOptions) -> dict:
    """Run the swarm and return the report summary; raises LaunchError if a neuron dies.

    SIGTERM (``kill``, a CI timeout, a closed terminal's supervisor) stops it as Ctrl-C does:
    Python's default for SIGTERM ends the process on the spot, and left its miners and validators
    training, orphaned, until someone found them."""
    signal.signal(signal.SIGTERM, _interrupt)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    print(f"creating the dev chain and wallets in {options.out_dir}", flush=True)
    prepare_chain(options)
    started = time.monotonic()
    with ProcessGroup() as group:
        names, _ = start_neurons(group, options, ["--validator.interval", "15"])
        print(f"{options.miners} miners and {options.validators} validator(s) up; training for "
              f"{options.duration:.0f} s (Ctrl-C stops early)", flush=True)
        try:
            watch(group, options, names, time.monotonic() + options.duration)
        except KeyboardInterrupt:
            print("\nCtrl-C or SIGTERM: stopping the swarm", flush=True)
        print("stopping neurons (each miner writes a checkpoint)...", flush=True)
    summary = summarise(options, names, time.monotonic() - started)
    png, report = write_report(options, names, summary)
    print(f"report: {png} and {report}", flush=True)
    return summary


def watch(group: ProcessGroup, options: SwarmOptions, names: list[str], deadline: float) -> None:
    """Print one progress block every few seconds until the deadline or a neuron dies."""
    while time.monotonic() < deadline:
        group.check_alive()
        remaining = deadline - time.monotonic()
        lines = [progress_line(name, read_metrics(options.out_dir / name)) for name in names]
        lines += [validator_line(f"validator{i}", read_metrics(options.out_dir / f"validator{i}"))
                  for i in range(1, options.validators + 1)]
        print(f"--- {remaining:5.0f} s left\n" + "\n".join(lines), flush=True)
        sys.stdout.flush()
        time.sleep(min(options.progress_every, max(remaining, 0)))  # display cadence
