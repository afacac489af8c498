"""Reading the swarm's training progress from the DHT without taking part in training.

Every hivemind.Optimizer publishes its peer's epoch, samples and samples/s under the key
``<run_id>_progress``; a status tool only has to read that key to see the whole swarm.
"""

from __future__ import annotations

from dataclasses import dataclass

import hivemind
from hivemind.p2p import PeerID
from hivemind.dht.schema import RSASignatureValidator, SchemaValidator
from hivemind.optim.progress_tracker import LocalTrainingProgress, TrainingProgressSchema
from hivemind.utils import get_dht_time


@dataclass
class PeerProgress:
    peer_id: str
    epoch: int
    samples_per_second: float
    seconds_since_report: float


def read_progress(dht: hivemind.DHT, run_id: str) -> list[PeerProgress]:
    """Each peer's last progress report for ``run_id``, newest epoch first."""
    # The reports are signed records; the same validators the trainers use strip and check them.
    dht.add_validators([SchemaValidator(TrainingProgressSchema, prefix=run_id),
                        RSASignatureValidator()])
    found = dht.get(f"{run_id}_progress", latest=True)
    entries = found.value if found is not None and isinstance(found.value, dict) else {}
    now = get_dht_time()
    peers = []
    for entry in entries.values():
        if entry.value is None:
            continue
        progress = LocalTrainingProgress.parse_obj(entry.value)
        peers.append(PeerProgress(PeerID(progress.peer_id).to_base58(), progress.epoch,
                                  progress.samples_per_second, now - progress.time))
    return sorted(peers, key=lambda p: (-p.epoch, p.peer_id))
