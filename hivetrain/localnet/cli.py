"""``hivetrain swarm``: flags of the local swarm; model/data/train/validator flags go to every
neuron."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from hivetrain.config import add_config_arguments, config_from_args

FORWARDED_SECTIONS = ["model", "data", "train", "validator", "wandb", "logging"]

# A local swarm shares a few CPU cores, so epochs of the defaults (500 DiLoCo inner steps, or
# 1024 samples in sync mode) would come too rarely to see learning and scoring in minutes:
# shorter epochs with a slightly higher learning rate show both within 240 s with 3 miners on 2
# cores. Flags given on the command line come later and win.
LOCAL_TRAIN_FLAGS = ["--train.inner_steps", "20", "--train.target_batch_size", "256",
                     "--train.lr", "2e-3", "--train.warmup_epochs", "2"]


def add_swarm_command(commands) -> None:
    swarm = commands.add_parser(
        "swarm", help="run a whole local subnet on 127.0.0.1 (make demo)",
        description="Create an embedded dev chain and wallets, start real miner processes that "
                    "train one model together through hivemind and a validator that scores them, "
                    "show their progress, stop them cleanly and write a report (report.png, "
                    "report.json). Model, data, train and validator flags go to every neuron.")
    group = swarm.add_argument_group("swarm options")
    group.add_argument("--swarm.miners", dest="swarm_miners", type=int, default=3,
                       metavar="N", help="number of miner processes (default: 3)")
    group.add_argument("--swarm.validators", dest="swarm_validators", type=int, default=1,
                       metavar="N", help="number of validator processes (default: 1)")
    group.add_argument("--swarm.duration", dest="swarm_duration", type=float, default=240.0,
                       metavar="SECONDS", help="training time before the swarm stops (default: 240)")
    group.add_argument("--swarm.dir", dest="swarm_dir", default=None, metavar="DIR",
                       help="parent folder of the runs: each run gets a new numbered folder in "
                            "it (DIR/1, DIR/2, ...) for its chain, wallets, run directories and "
                            "report (default: runs/swarm-<timestamp>)")
    add_config_arguments(swarm, FORWARDED_SECTIONS)
    swarm.set_defaults(handler=run_swarm_command)


def forwarded_flags(args: argparse.Namespace) -> list[str]:
    """Re-emit the model/data/train flags the user gave, for each miner's command line."""
    flags = []
    for dest, value in vars(args).items():
        if "." not in dest or dest.split(".")[0] not in FORWARDED_SECTIONS:
            continue
        if isinstance(value, bool):
            flags.append(f"--{dest}" if value else f"--no-{dest}")
        elif isinstance(value, list):
            flags += [f"--{dest}", *map(str, value)]
        elif value is not None:
            flags += [f"--{dest}", str(value)]
    return flags


def new_run_dir(parent: Path) -> Path:
    """``parent/<n>``, one more than the highest numbered run there, created empty.

    Every run starts from nothing: a second run in the same folder reused the first one's chain
    (stale DHT commitments) and peer.json files, so its neurons dialled dead addresses, each
    started a swarm of its own, and the display and report mixed both runs. Earlier runs stay as
    they were.
    """
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        runs = [int(p.name) for p in parent.iterdir() if p.is_dir() and p.name.isdigit()]
        candidate = parent / str(max(runs, default=0) + 1)
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:  # another swarm took this number first
            continue


def run_swarm_command(args: argparse.Namespace) -> None:
    from hivetrain.config import ConfigError
    from hivetrain.localnet.processes import LaunchError
    from hivetrain.localnet.swarm import SwarmOptions, run_local_swarm

    config_from_args(args, role="miner", sections=FORWARDED_SECTIONS)  # fail fast on bad values
    if args.swarm_miners < 1 or args.swarm_validators < 0 or args.swarm_duration <= 0:
        raise ConfigError("--swarm.miners and --swarm.duration must be positive, "
                          "--swarm.validators zero or more")
    out_dir = (new_run_dir(Path(args.swarm_dir)) if args.swarm_dir else
               Path(f"runs/swarm-{time.strftime('%Y%m%d-%H%M%S')}"))
    options = SwarmOptions(out_dir=out_dir, miners=args.swarm_miners,
                           validators=args.swarm_validators, duration=args.swarm_duration,
                           neuron_flags=LOCAL_TRAIN_FLAGS + forwarded_flags(args))
    try:
        run_local_swarm(options)
    except LaunchError as error:
        print(f"hivetrain swarm: {error}", file=sys.stderr)
        raise SystemExit(1) from None
