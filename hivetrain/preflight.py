"""What a neuron checks before its slow imports: the run directory, the ports, the validator's
scores file and the wallet.

Importing the miner or the validator (torch, transformers, hivemind, bittensor) takes about six
CPU seconds. Each of these checks needs none of that, and each failure is the operator's to fix,
so it should come in about a second, with the line that says what to change, and before anything
is started that would have to be stopped again.
"""

from __future__ import annotations

from hivetrain.config import Config
from hivetrain.host import check_host
from hivetrain.validator import state as score_store


def check_start(cfg: Config, role: str) -> None:
    """Raise the :class:`~hivetrain.errors.OperatorError` a start of ``role`` would meet first."""
    check_host(cfg, serves_api=role == "miner")
    if role == "validator":
        score_store.load(cfg.run_dir / score_store.SCORES_FILE)  # a bad file is kept, not replaced
    from hivetrain.chain import load_wallet  # bittensor: ~0.6 CPU s, a tenth of the whole start

    load_wallet(cfg.wallet.name, cfg.wallet.hotkey, cfg.wallet.path)
