"""Everything hivetrain asks of a Bittensor chain; the only package that imports ``bittensor``.

:class:`Chain` is the facade neurons use on any network, :class:`DevChain` the embedded SQLite
chain for local swarms and tests, and :class:`ChainError` the one exception a user sees.
"""

from hivetrain.chain.devchain import DevChain
from hivetrain.chain.devchain_runtime import SubnetParams
from hivetrain.chain.devtools import init_dev_chain, register_dev, stake_dev
from hivetrain.chain.errors import ChainError
from hivetrain.chain.metagraph import MetagraphSnapshot
from hivetrain.chain.subtensor import Chain
from hivetrain.chain.wallets import create_dev_wallet, load_wallet

__all__ = [
    "Chain",
    "ChainError",
    "DevChain",
    "MetagraphSnapshot",
    "SubnetParams",
    "create_dev_wallet",
    "init_dev_chain",
    "load_wallet",
    "register_dev",
    "stake_dev",
]
