"""A plain, bittensor-free snapshot of one subnet, for miners, validators and the CLI.

Neurons outside this package never see SDK types: they get lists indexed by uid, with stake
in the subnet's token units and scores as 0..1 floats.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import bittensor as bt


@dataclass(frozen=True)
class MetagraphSnapshot:
    """One subnet at one block. Every list is indexed by uid."""

    netuid: int
    block: int
    tempo: int
    hotkeys: list[str]
    coldkeys: list[str]
    stake: list[float]
    validator_permit: list[bool]
    axons: list[Optional[str]]  # served "ip:port", None when nothing is served
    commitments: list[Optional[str]]  # the hotkey's visible commitment text, if any
    last_update: list[int]
    incentive: list[float]
    dividends: list[float]
    fetched_at: float = field(default_factory=time.monotonic, compare=False)

    @property
    def uids(self) -> list[int]:
        return list(range(len(self.hotkeys)))

    def uid_of(self, hotkey: str) -> Optional[int]:
        try:
            return self.hotkeys.index(hotkey)
        except ValueError:
            return None

    def __len__(self) -> int:
        return len(self.hotkeys)

    @classmethod
    def from_sdk(cls, graph: bt.Metagraph) -> "MetagraphSnapshot":
        neurons = graph.neurons
        return cls(
            netuid=graph.netuid,
            block=graph.block,
            tempo=graph.tempo,
            hotkeys=[n.hotkey for n in neurons],
            coldkeys=[n.coldkey for n in neurons],
            stake=[float(n.total_stake.amount) for n in neurons],
            validator_permit=[n.validator_permit for n in neurons],
            axons=[n.axon for n in neurons],
            commitments=[n.commitment.value if n.commitment else None for n in neurons],
            last_update=[n.last_update for n in neurons],
            incentive=[n.incentive for n in neurons],
            dividends=[n.dividends for n in neurons],
        )
