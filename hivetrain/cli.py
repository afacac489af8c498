"""``hivetrain``: one entry point with a subcommand per job.

    hivetrain miner      train with the swarm
    hivetrain validator  probe miners, verify their answers, set weights
    hivetrain swarm      run a whole local swarm on 127.0.0.1 (what ``make demo`` does)
    hivetrain status     the swarm at a glance: epochs, peers, scores, endpoints
    hivetrain chain      create and inspect the embedded dev chain
    hivetrain export     write a miner checkpoint as a transformers-style model
    hivetrain generate   caption an image or continue a prompt with an exported model

Bad flags and bad values stop with one line that says what to change (exit code 2), never a
traceback; ``--help`` on each subcommand lists every option with its default.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hivetrain import __version__
from hivetrain.config import add_config_arguments, config_from_args
from hivetrain.errors import OperatorError
from hivetrain.host import check_writable_dir

# The flags that say which swarm (run_id) ``hivetrain export`` downloads and how to reach it.
EXPORT_SECTIONS = ["subtensor", "chain", "dht", "neuron", "model", "data", "train", "logging"]

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
    miner.set_defaults(handler=_run_neuron)

    validator = commands.add_parser("validator", help="probe miners, score them, set weights",
                                    description="Hold the swarm model, probe every miner with "
                                                "signed requests, verify the answers and set "
                                                "weights on chain.")
    add_config_arguments(validator)
    validator.set_defaults(handler=_run_neuron)

    from hivetrain.chain.cli import add_chain_subcommands
    from hivetrain.localnet.cli import add_swarm_command

    from hivetrain.status import add_status_command

    add_swarm_command(commands)
    add_status_command(commands)
    add_chain_subcommands(commands)
    _add_export_commands(commands)
    return parser


def _add_export_commands(commands) -> None:
    export = commands.add_parser(
        "export", help="write the swarm's model (or a checkpoint) as a transformers-style model",
        description="Download the swarm's current model from its peers (--netuid, --subtensor "
                    "and --dht say which subnet; its run and training flags are read from the "
                    "chain and the miners, --model/--data/--train are only checked against them) "
                    "or read a miner's checkpoint.pt, and write a self-contained model folder "
                    "(weights, config, tokenizer).")
    export.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    export.add_argument("--checkpoint", default=None, metavar="FILE",
                        help="export this checkpoint.pt instead of the live swarm (the preset is "
                             "inferred from its tensor shapes unless --model.preset is given)")
    export.add_argument("--push-to-hub", default=None, metavar="REPO",
                        help="also upload the folder to this hub model repo")
    add_config_arguments(export, EXPORT_SECTIONS)
    export.set_defaults(handler=_run_export)

    generate = commands.add_parser("generate", help="caption an image or continue a prompt",
                                   description="Greedy generation with a model folder written by "
                                               "hivetrain export.")
    generate.add_argument("model", metavar="DIR", help="a folder written by hivetrain export")
    generate.add_argument("--image", default=None, metavar="FILE", help="image to caption")
    generate.add_argument("--prompt", default="", help="text to continue")
    generate.add_argument("--max-new-tokens", type=int, default=32, metavar="N",
                          help="stop after this many generated tokens (default: 32)")
    generate.set_defaults(handler=_run_generate)


def _run_export(args: argparse.Namespace) -> None:
    cfg = config_from_args(args, role="export", sections=EXPORT_SECTIONS)
    check_writable_dir(Path(args.out), "--out")  # before the imports, and before any download
    from hivetrain.export import run_export  # torch and transformers: only paid when used

    run_export(args, cfg)


def _run_generate(args: argparse.Namespace) -> None:
    from hivetrain.export import run_generate

    run_generate(args)


def _run_neuron(args: argparse.Namespace) -> None:
    cfg = config_from_args(args, role=args.command)  # validate before the slow imports
    from hivetrain.preflight import check_start
    from hivetrain.telemetry import setup_logging

    setup_logging(cfg)
    existed = cfg.run_dir.exists()
    try:
        check_start(cfg, args.command)  # before the slow imports: a bad start ends in a second
        if args.command == "miner":
            from hivetrain.miner.neuron import run_miner

            run_miner(cfg)
        else:
            from hivetrain.validator.neuron import run_validator

            run_validator(cfg)
    except BaseException:
        # A start that failed (no chain, a taken port, an unregistered hotkey) created the run
        # directory for nothing: an empty folder per attempt misleads the next look at ~/.hivetrain.
        if not existed and cfg.run_dir.is_dir() and not any(cfg.run_dir.iterdir()):
            cfg.run_dir.rmdir()
        raise


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        return 130
    except OperatorError as error:  # its message says what to do: one line, no traceback
        print(f"hivetrain {args.command}: error: {error}", file=sys.stderr)
        return 2


def run_role(role: str, argv: list[str] | None = None) -> int:
    """Entry for the thin ``neurons/<role>.py`` wrappers kept for SN25-style habits."""
    return main([role, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
