"""Loading a neuron's wallet, and creating password-less ones for the local dev swarm.

Only public facts (names, paths, ss58 addresses) ever reach messages or logs; mnemonics are
never printed, not even for throwaway dev wallets.
"""

from __future__ import annotations

from pathlib import Path

import bittensor as bt

from hivetrain.chain.errors import ChainError


def _create_hint(name: str, hotkey: str, path: str) -> str:
    return (f"create it with `btcli wallet create --wallet {name} --wallet-hotkey {hotkey} "
            f"--wallet-path {path}` (or add a hotkey to an existing coldkey with "
            f"`btcli wallet new-hotkey --wallet {name} --wallet-hotkey {hotkey} --wallet-path {path}`)")


def load_wallet(name: str, hotkey: str, path: str) -> bt.Wallet:
    """The wallet a neuron signs with; :class:`ChainError` naming the btcli command if missing.

    Reads the public coldkey and the hotkey up front, so a missing or unreadable keyfile fails
    at start-up rather than at the first extrinsic.
    """
    wallet = bt.Wallet(name, hotkey, str(Path(path).expanduser()))
    missing = [f.path for f in (wallet.coldkeypub_file, wallet.hotkey_file) if not f.exists_on_device()]
    if missing:
        raise ChainError(f"wallet {name}/{hotkey} not found under {path} (missing {', '.join(missing)}); "
                         + _create_hint(name, hotkey, path))
    try:
        wallet.coldkeypub
        wallet.hotkey
    except Exception as error:  # corrupt keyfile, wrong permissions, undecryptable hotkey
        raise ChainError(f"cannot read wallet {name}/{hotkey} under {path}: {error}") from None
    return wallet


def create_dev_wallet(name: str, hotkey: str, path: str) -> bt.Wallet:
    """Create whichever of the coldkey / hotkey is missing, without passwords (dev chains only).

    Existing keys are kept untouched, so this is safe to call on every swarm start.
    """
    wallet = bt.Wallet(name, hotkey, str(Path(path).expanduser()))
    if not wallet.coldkeypub_file.exists_on_device():
        wallet.create_new_coldkey(use_password=False, suppress=True)
    if not wallet.hotkey_file.exists_on_device():
        wallet.create_new_hotkey(use_password=False, suppress=True)
    return load_wallet(name, hotkey, path)
