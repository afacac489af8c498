"""Dev-chain helpers for the local swarm: create the chain and subnet, register, stake.

These edit the embedded chain only. Registration still goes through the real SDK path
(``BurnedRegister``, MEV-shielded, signed by the coldkey) so the swarm exercises what btcli
does on a real network; stake and validator permits are set directly, as dev tooling.
"""

from __future__ import annotations

import os

import bittensor as bt

from hivetrain.chain.devchain import DevChain
from hivetrain.chain.devchain_runtime import SubnetParams
from hivetrain.chain.errors import ChainError
from hivetrain.chain.subtensor import EMBEDDED_ENDPOINT


def init_dev_chain(chain_path: str | os.PathLike, block_time: float, netuid: int, owner: bt.Wallet,
                   params: SubnetParams | None = None) -> tuple[DevChain, bool]:
    """Create (or reuse) the chain file and subnet ``netuid``; True when the subnet is new."""
    chain = DevChain.create(chain_path, block_time)
    created = chain.create_subnet(netuid, owner.coldkeypub.ss58_address, owner.hotkey.ss58_address, params)
    return chain, created


def register_dev(chain_path: str | os.PathLike, netuid: int, wallet: bt.Wallet) -> int:
    """Register ``wallet``'s hotkey through the SDK (idempotent); returns its uid."""
    subtensor = bt.Subtensor(EMBEDDED_ENDPOINT, substrate=DevChain.open(chain_path))
    uid_item = bt.storage.SubtensorModule.Uids
    try:
        uid = subtensor.query(uid_item, [netuid, wallet.hotkey.ss58_address])
        if uid is not None:
            return int(uid)
        result = subtensor.execute(bt.BurnedRegister(netuid=netuid), wallet)
        if not result.success:
            raise ChainError(f"registration of {wallet.name}/{wallet.hotkey_str} on subnet {netuid} refused: "
                             f"{result.message}")
        return int(subtensor.query(uid_item, [netuid, wallet.hotkey.ss58_address]))
    finally:
        subtensor.close()


def stake_dev(chain_path: str | os.PathLike, netuid: int, hotkey: str, tao: float = 0.0,
              permit: bool | None = None) -> int:
    """Add ``tao`` stake to ``hotkey`` and optionally set its validator permit; returns stake in rao."""
    chain = DevChain.open(chain_path)
    rao = chain.add_stake(netuid, hotkey, tao)
    if permit is not None:
        chain.set_validator_permit(netuid, hotkey, permit)
    return rao
