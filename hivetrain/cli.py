"""``hivetrain``: one entry point with a subcommand per job.

    hivetrain miner      train with the swarm
    hivetrain swarm      run a whole local swarm on 127.0.0.1 (what ``make demo`` does)

Bad flags and bad values stop with one line that says what to change (exit code 2), never a
traceback; ``--help`` on each subcommand lists every option with its default.
"""

from __future__ import annotations

import argparse
import logging
import sys

from hivetrain import __version__
from hivetrain.config import ConfigError, add_config_arguments, config_from_args

logger = logging.getLogger("hivetrain")


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but an error is one line plus a pointer to --help instead of the usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="hivetrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"hivetrain {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=OneLineErrorParser)

    miner = commands.add_parser("miner", help="train the shared model with the swarm",
                                description="Join the swarm's DHT and train the shared model.")
    add_config_arguments(miner)
    miner.set_defaults(handler=_run_miner)

    from hivetrain.localnet.cli import add_swarm_command

    add_swarm_command(commands)
    return parser


def _run_miner(args: argparse.Namespace) -> None:
    cfg = config_from_args(args, role="miner")  # validate before the slow imports
    from hivetrain.miner.neuron import run_miner
    from hivetrain.telemetry import setup_logging

    setup_logging(cfg)
    run_miner(cfg)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except ConfigError as error:
        print(f"hivetrain {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def run_role(role: str, argv: list[str] | None = None) -> int:
    """Entry for the thin ``neurons/<role>.py`` wrappers kept for SN25-style habits."""
    return main([role, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
