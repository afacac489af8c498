"""``hivetrain chain init|register|stake|neurons|weights``: the chain from the command line.

``init``, ``register`` and ``stake`` drive the embedded dev chain of a local swarm (real
networks are btcli's job). ``neurons`` and ``weights`` read any network. Wire the group into
the main CLI with :func:`add_chain_subcommands`; each leaf parser sets ``handler``, a callable
taking the parsed namespace and returning an exit code. Problems raise :class:`ChainError` or
:class:`ConfigError`, whose one-line messages the caller prints.
"""

from __future__ import annotations

import argparse
import sys

from hivetrain.chain.devchain_runtime import SubnetParams
from hivetrain.chain.devtools import init_dev_chain, register_dev, stake_dev
from hivetrain.chain.errors import ChainError
from hivetrain.chain.subtensor import Chain
from hivetrain.chain.wallets import create_dev_wallet, load_wallet
from hivetrain.config import Config, ConfigError, add_config_arguments, config_from_args

_SECTIONS = ("wallet", "subtensor", "chain")


def _config(args: argparse.Namespace) -> Config:
    """The typed config; ``--chain.path`` without ``--subtensor.network`` means the dev chain."""
    cfg = config_from_args(args, role="chain", sections=_SECTIONS)
    explicit_network = "subtensor.network" in vars(args) or cfg.subtensor.chain_endpoint
    if cfg.chain.path and not explicit_network:
        cfg.subtensor.network = "embedded"
    return cfg


def _dev_chain_path(cfg: Config, command: str) -> str:
    if cfg.subtensor.network != "embedded" or cfg.subtensor.chain_endpoint:
        raise ConfigError(f"`hivetrain chain {command}` edits the embedded dev chain only; on "
                          f"{cfg.subtensor.chain_endpoint or cfg.subtensor.network} use btcli")
    if not cfg.chain.path:
        raise ConfigError(f"`hivetrain chain {command}` needs --chain.path FILE (the dev chain file)")
    return cfg.chain.path


def _dev_wallet(cfg: Config, args: argparse.Namespace, command: str):
    """The named wallet, created password-less when missing (dev chains only).

    Only a wallet the operator named is created: left to the default, ``chain init`` made a
    password-less ``default`` coldkey among the operator's real wallets without being asked.
    """
    w = cfg.wallet
    try:
        return load_wallet(w.name, w.hotkey, w.path)
    except ChainError:
        if "wallet.name" not in vars(args):
            raise ConfigError(f"`hivetrain chain {command}` creates a password-less dev wallet "
                              f"when the wallet is missing, and there is no wallet "
                              f"{w.name!r} under {w.path}; name the one to create (or use) with "
                              f"--wallet.name NAME, and keep dev keys apart with --wallet.path "
                              f"DIR") from None
        wallet = create_dev_wallet(w.name, w.hotkey, w.path)
        print(f"created password-less dev wallet {w.name}/{w.hotkey} under {w.path} "
              f"(hotkey {wallet.hotkey.ss58_address})")
        return wallet


def _open(cfg: Config, with_wallet: bool) -> Chain:
    if cfg.subtensor.network == "embedded" and not cfg.chain.path and not cfg.subtensor.chain_endpoint:
        raise ConfigError("--subtensor.network embedded needs --chain.path FILE")
    return Chain.from_config(cfg, with_wallet=with_wallet, connect_timeout=15.0)


def cmd_init(args: argparse.Namespace) -> int:
    cfg = _config(args)
    path = _dev_chain_path(cfg, "init")
    params = SubnetParams(tempo=args.tempo, weights_rate_limit=args.weights_rate_limit,
                          max_uids=args.max_uids, immunity_period=args.immunity_period,
                          min_allowed_weights=args.min_allowed_weights)
    owner = _dev_wallet(cfg, args, "init")
    chain, created = init_dev_chain(path, cfg.chain.block_time, cfg.netuid, owner, params)
    state = "created" if created else "already exists; hyperparameters unchanged"
    print(f"dev chain {chain.path} (block {chain.head()}, {chain.store.block_time}s blocks): "
          f"subnet {cfg.netuid} {state}")
    return 0


def cmd_register(args: argparse.Namespace) -> int:
    cfg = _config(args)
    path = _dev_chain_path(cfg, "register")
    wallet = _dev_wallet(cfg, args, "register")
    uid = register_dev(path, cfg.netuid, wallet)
    print(f"{cfg.wallet.name}/{cfg.wallet.hotkey} ({wallet.hotkey.ss58_address}) is uid {uid} "
          f"on subnet {cfg.netuid}")
    return 0


def cmd_stake(args: argparse.Namespace) -> int:
    cfg = _config(args)
    path = _dev_chain_path(cfg, "stake")
    if args.hotkey:
        hotkey = args.hotkey
    else:
        hotkey = load_wallet(cfg.wallet.name, cfg.wallet.hotkey, cfg.wallet.path).hotkey.ss58_address
    rao = stake_dev(path, cfg.netuid, hotkey, args.amount, args.validator_permit)
    permit = "" if args.validator_permit is None else \
        f", validator permit {'on' if args.validator_permit else 'off'}"
    print(f"{hotkey} now has {rao / 1e9:.9f} stake on subnet {cfg.netuid}{permit}")
    return 0


def _format_row(row: dict[int, float]) -> str:
    return " ".join(f"{uid}:{w:.2f}" for uid, w in sorted(row.items(), key=lambda kv: -kv[1])) or "-"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def cmd_neurons(args: argparse.Namespace) -> int:
    chain = _open(_config(args), with_wallet=False)
    try:
        graph, weights = chain.metagraph(refresh=True), chain.weights()
    finally:
        chain.close()
    rows = [[str(uid), graph.hotkeys[uid], f"{graph.stake[uid]:.3f}",
             "yes" if graph.validator_permit[uid] else "", graph.axons[uid] or "-",
             str(graph.last_update[uid]), f"{graph.incentive[uid]:.4f}", f"{graph.dividends[uid]:.4f}",
             _format_row(weights.get(uid, {}))]
            for uid in graph.uids]
    print(f"subnet {graph.netuid} at block {graph.block} (tempo {graph.tempo}), {len(graph)} neurons")
    print(table(["UID", "HOTKEY", "STAKE", "VPERMIT", "AXON", "LAST_UPDATE", "INCENTIVE", "DIVIDENDS",
                 "LAST_WEIGHTS"], rows))
    return 0


def cmd_weights(args: argparse.Namespace) -> int:
    cfg = _config(args)
    chain = _open(cfg, with_wallet=bool(args.set))
    try:
        if args.set:
            pairs = [item.split("=", 1) for item in args.set]
            if any(len(p) != 2 for p in pairs):
                raise ConfigError("--set takes UID=WEIGHT pairs, e.g. --set 0=0.3 1=0.7")
            try:
                uids, values = [int(u) for u, _ in pairs], [float(w) for _, w in pairs]
            except ValueError:
                raise ConfigError(f"--set takes integer uids and numeric weights, got {args.set}") from None
            if not chain.set_weights(uids, values):
                raise ChainError("weights were not set; see the warning above")
        weights, block = chain.weights(), chain.block
    finally:
        chain.close()
    print(f"weights on subnet {cfg.netuid} at block {block}")
    rows = [[str(uid), _format_row(row)] for uid, row in weights.items()]
    print(table(["VALIDATOR_UID", "WEIGHTS (uid:fraction)"], rows))
    return 0


def add_chain_subcommands(subparsers) -> argparse.ArgumentParser:
    """Add ``chain`` and its subcommands to the main CLI's ``subparsers``."""
    summary = "Inspect a chain, or set up the embedded dev chain of a local swarm."
    chain = subparsers.add_parser("chain", help=summary, description=summary)
    commands = chain.add_subparsers(dest="chain_command", metavar="COMMAND", required=True)

    init = commands.add_parser("init", help="Create the dev chain file and subnet (--wallet.* is the owner).")
    defaults = SubnetParams()
    init.add_argument("--tempo", type=int, default=defaults.tempo, help="Blocks between epochs (default: %(default)s)")
    init.add_argument("--weights-rate-limit", type=int, default=defaults.weights_rate_limit,
                      help="Blocks a validator waits between weight updates (default: %(default)s)")
    init.add_argument("--max-uids", type=int, default=defaults.max_uids,
                      help="Subnet size; registering beyond it prunes the lowest-incentive neuron (default: %(default)s)")
    init.add_argument("--immunity-period", type=int, default=defaults.immunity_period,
                      help="Blocks a new neuron cannot be pruned (default: %(default)s)")
    init.add_argument("--min-allowed-weights", type=int, default=defaults.min_allowed_weights,
                      help="Fewest non-zero weights a validator may set (default: %(default)s)")
    init.set_defaults(handler=cmd_init)

    register = commands.add_parser("register", help="Register a wallet's hotkey on the dev chain "
                                                    "(creates a password-less wallet if missing).")
    register.set_defaults(handler=cmd_register)

    stake = commands.add_parser("stake", help="Add stake and set the validator permit on the dev chain.")
    stake.add_argument("--amount", type=float, default=0.0, help="Stake to add, in subnet tokens (default: %(default)s)")
    stake.add_argument("--hotkey", help="Hotkey ss58 address (default: the --wallet.* hotkey).")
    stake.add_argument("--validator-permit", action=argparse.BooleanOptionalAction, default=None,
                       help="Grant or revoke the validator permit (default: leave as is).")
    stake.set_defaults(handler=cmd_stake)

    neurons = commands.add_parser("neurons", help="Table of uids, hotkeys, stake, permits, endpoints, "
                                                  "last weights and incentive.")
    neurons.set_defaults(handler=cmd_neurons)

    weights = commands.add_parser("weights", help="Show the weight matrix; --set sets this wallet's weights.")
    weights.add_argument("--set", nargs="+", metavar="UID=WEIGHT",
                         help="First set weights, signed by the --wallet.* hotkey.")
    weights.set_defaults(handler=cmd_weights)

    for parser in (init, register, stake, neurons, weights):
        add_config_arguments(parser, sections=_SECTIONS)
    return chain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hivetrain")
    add_chain_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ChainError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
