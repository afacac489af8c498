"""Who may call the miner's API: registered validators with a permit and enough stake.

A hotkey costs nothing to create, so a caller the cached metagraph does not know is the cheap
attack: if every unknown hotkey re-read the metagraph from chain, a flood of fresh random
hotkeys would keep the chain client busy and slow the real probes behind it (400 of them took
honest probes from 0.06 s to 3.2 s). So the re-read that lets a validator registered since the
last sync in is rationed: at most ``refreshes_per_minute`` over all callers, and a hotkey refused
recently is refused again from memory without asking for one.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Optional

from hivetrain.chain import Chain
from hivetrain.miner.api import RateLimiter

DEFAULT_REFRESHES_PER_MINUTE = 6
REFUSED_TTL_S = 60.0
REFUSED_MAX = 4096  # bounds the memory a flood of refused hotkeys can take


class CallerPolicy:
    """``authorize(hotkey)`` for :func:`hivetrain.miner.api.create_app`.

    :param min_stake: TAO a caller's hotkey must have staked, besides a validator permit.
    """

    def __init__(self, chain: Chain, min_stake: float,
                 refreshes_per_minute: int = DEFAULT_REFRESHES_PER_MINUTE,
                 clock: Callable[[], float] = time.monotonic):
        self.chain, self.min_stake, self.clock = chain, min_stake, clock
        self.refreshes = 0  # metagraph re-reads caused by unknown callers, for logs and tests
        self._budget = RateLimiter(refreshes_per_minute, clock=clock)
        self._refused: OrderedDict[str, float] = OrderedDict()  # hotkey -> when refused
        self._lock = threading.Lock()

    def authorize(self, hotkey: str) -> Optional[str]:
        """None when ``hotkey`` is a registered validator with enough stake, else why not."""
        metagraph = self.chain.metagraph()
        uid = metagraph.uid_of(hotkey)
        if uid is None and self._may_refresh(hotkey):
            metagraph = self.chain.metagraph(refresh=True)  # maybe registered since the last sync
            uid = metagraph.uid_of(hotkey)
        if uid is None:
            self._remember_refused(hotkey)
            return (f"hotkey {hotkey} is not registered on subnet {self.chain.netuid} "
                    f"(as of block {metagraph.block})")
        if not metagraph.validator_permit[uid]:
            return f"uid {uid} has no validator permit"
        if metagraph.stake[uid] < self.min_stake:
            return f"uid {uid} has {metagraph.stake[uid]:.2f} TAO staked, below {self.min_stake}"
        return None

    def _may_refresh(self, hotkey: str) -> bool:
        """Whether this unknown hotkey may cost a metagraph re-read now."""
        with self._lock:
            refused_at = self._refused.get(hotkey)
            if refused_at is not None and self.clock() - refused_at < REFUSED_TTL_S:
                return False
            if not self._budget.allow("refresh"):
                return False
            self.refreshes += 1
            return True

    def _remember_refused(self, hotkey: str) -> None:
        with self._lock:
            self._refused.pop(hotkey, None)
            self._refused[hotkey] = self.clock()
            while len(self._refused) > REFUSED_MAX:
                self._refused.popitem(last=False)
