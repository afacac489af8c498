"""Signed per-epoch sketches of the global parameters, and the check every state download passes.

A peer that downloads the swarm's global state (a late joiner, a lagging peer, a validator,
``hivetrain export``) used to take whatever the peer with the highest advertised priority sent.
Measured: a peer that was not registered advertised priority 1e12 and served the initial weights
(every miner's and the validator's held-out loss reset to 8.30, 5 times in 100 s) or NaN weights
(every miner NaN, the validator crashed).

Now every training peer publishes, after each outer step, the sketch of its ``G`` (the chunk-norm
sketch peers already compare in the all-reduce) under ``<run_id>_sketch_<epoch>``, in a subkey
signed by its own key so nobody can overwrite it. A downloaded state is accepted only when its
sketch matches the one that the most distinct admitted peers published for its epoch, and at
least ``min(QUORUM, peers training)`` of them did; otherwise the sender is skipped and another
is tried. Records claiming a peer id that another record also claims with a
different sketch are void, so an impostor can withhold a peer's vote but not forge it: to get a
poisoned state accepted an attacker needs ``QUORUM`` admitted identities, i.e. ``QUORUM``
registered hotkeys whose miners commit DHT identities.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable, Sequence

import hivemind
import torch
from hivemind.dht.crypto import RSASignatureValidator
from hivemind.utils.crypto import RSAPrivateKey
from hivemind.utils.timed_storage import get_dht_time

logger = logging.getLogger(__name__)

SKETCH_SIZE = 64
# Peers compare their global parameters as these sketches, to this relative tolerance. An
# all-reduce part that did not arrive (hivemind logs "received 82.7% results" and goes on) leaves
# a peer with its own change over a whole chunk: a relative difference of 1e-3 or more in that
# chunk's norm. Float rounding and fp16 compression of the averaged change move norms by ~1e-6 per
# round; when that drift adds up past the tolerance, the minority simply reloads the state.
SKETCH_RTOL = 1e-4
QUORUM = 2
RECORD_SECONDS = 600.0
# How long a download waits for the swarm's sketches of a fresh epoch to appear.
WAIT_SECONDS = 8.0


def sketch(tensors: Sequence[torch.Tensor]) -> list[float]:
    """L2 norms of ``SKETCH_SIZE`` contiguous chunks of the concatenated tensors."""
    flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors])
    return [chunk.norm().item() for chunk in flat.tensor_split(SKETCH_SIZE)]


def sketches_agree(a: Sequence[float], b: Sequence[float], rtol: float = SKETCH_RTOL) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= rtol * max(abs(x), abs(y), 1e-12)
                                    for x, y in zip(a, b))


class SketchBoard:
    """Publish this peer's sketch per epoch; judge a downloaded state against everyone's.

    :param counts: ``peer id -> bool``, whether a peer's record counts (admitted, not excluded).
    """

    def __init__(self, dht: hivemind.DHT, run_id: str, counts: Callable[[str], bool],
                 private_key: RSAPrivateKey | None = None):
        self.dht, self.prefix, self.counts = dht, f"{run_id}_sketch", counts
        validator = RSASignatureValidator(private_key or RSAPrivateKey())
        self._subkey = validator.local_public_key
        dht.add_validators([validator])
        self.peer_id = str(dht.peer_id)

    def publish(self, epoch: int, values: list[float], banned: Sequence[str] = ()) -> None:
        """Store the sketch of this peer's ``G`` at ``epoch`` and the peers it has banned (what
        validators read to score the offenders), in the background."""
        self.dht.store(f"{self.prefix}_{epoch}",
                       {"peer_id": self.peer_id, "sketch": values, "banned": list(banned)},
                       expiration_time=get_dht_time() + RECORD_SECONDS, subkey=self._subkey,
                       return_future=True)

    def excluded(self, epoch: int) -> dict[str, str]:
        """Peer id -> why, for each peer the swarm's reducers excluded by ``epoch``: see
        :func:`excluded_by_majority`."""
        return excluded_by_majority(self._records(epoch))

    def _records(self, epoch: int) -> list[dict]:
        """The well-formed records of admitted peers for ``epoch``."""
        found = self.dht.get(f"{self.prefix}_{epoch}", latest=True)
        entries = found.value if found is not None and isinstance(found.value, dict) else {}
        records = []
        for entry in entries.values():
            value = getattr(entry, "value", None)
            if not isinstance(value, dict) or not isinstance(value.get("peer_id"), str):
                continue
            values = value.get("sketch")
            if not isinstance(values, list) or len(values) != SKETCH_SIZE \
                    or not all(isinstance(x, (int, float)) for x in values):
                continue
            if self.counts(value["peer_id"]):
                records.append(value)
        return records

    def votes(self, epoch: int) -> dict[str, list[float]]:
        """Admitted peer id -> the sketch it published for ``epoch`` (impostor-voided ids left out)."""
        claims: dict[str, list[list[float]]] = {}
        for value in self._records(epoch):
            claims.setdefault(value["peer_id"], []).append([float(x) for x in value["sketch"]])
        return {peer: sketches[0] for peer, sketches in claims.items()
                if all(sketches_agree(sketches[0], other) for other in sketches[1:])}

    def holding(self, epoch: int, values: list[float]) -> set[str]:
        """The peers whose published sketch of ``epoch`` is ``values``: those that hold that ``G``."""
        return _agreeing(self.votes(epoch), values)

    def holders(self, epoch: int, trainers: int) -> set[str]:
        """The peers that published the best-supported sketch of ``epoch``, when at least
        ``min(QUORUM, trainers)`` did (else none): where a download should look first.

        A split swarm (groups that averaged apart under load) holds several ``G`` per epoch, and
        asking the peer with the best priority first meant downloading, and waiting out the
        sketches of, up to four minority states: measured, a validator's state fetch then took
        30-50 s and its round fell behind the swarm. A claim here only orders the sources: what
        arrives is still judged (:meth:`judge`)."""
        best = _best_supported(self.votes(epoch))
        return best if len(best) >= _quorum(trainers) else set()

    def judge(self, epoch: int, values: list[float], trainers: int,
              wait: float = WAIT_SECONDS, vouched: frozenset[str] = frozenset(),
              corroborated: bool = False) -> str | None:
        """None when ``values`` is what the swarm holds at ``epoch``, else why not.

        The state must match the sketch with the most support among the admitted peers'
        records for ``epoch``, with at least ``min(QUORUM, trainers)`` votes, or with one vote
        from a peer in ``vouched``: those that held the reference ``G`` of the all-reduce this peer
        just took part in, when this peer's own ``G`` differed from it. A peer that differs does
        not publish, so a group of three that all differed left the reference one vote: measured
        in a fresh-clone run of ``tests/test_proof_of_training.py``, the other two then rejected
        it every round and the swarm stayed split (and the validator at an older epoch).

        When no record for that epoch can be read at all (a DHT lookup that found none within
        ``wait``, seen on loaded machines) and the swarm's progress quorum has reached the epoch
        (``corroborated``), the state is let through unverified with a warning: refusing it would
        leave an honest joiner training alone. An epoch the quorum has not reached gets no such
        pass: a registered peer could label stale or initial weights one epoch ahead, where no
        honest peer has published yet.

        :param trainers: training peers other than this one in the swarm's progress.
        """
        quorum = _quorum(trainers)
        deadline = time.monotonic() + wait
        while True:
            votes = self.votes(epoch)
            agreeing = _agreeing(votes, values)
            support, best = len(agreeing), len(_best_supported(votes))
            if support >= best and (support >= quorum or agreeing & vouched):
                return None
            if time.monotonic() >= deadline:
                if not votes:
                    if not corroborated:
                        return (f"no peer's sketch of epoch {epoch} could be read, and the "
                                f"swarm's progress has not reached that epoch")
                    logger.warning("no peer's sketch of epoch %d could be read: accepting the "
                                   "state unverified", epoch)
                    return None
                return (f"{support} of {len(votes)} peers published this state's sketch for epoch "
                        f"{epoch} (needs {quorum} and the most support, {best})")
            time.sleep(0.5)  # the sketches of a fresh epoch are still being stored


def _quorum(trainers: int) -> int:
    """Votes a sketch needs: ``QUORUM``, or every other training peer when there are fewer."""
    return max(1, min(QUORUM, trainers))


def _agreeing(votes: dict[str, list[float]], values: list[float]) -> set[str]:
    """The peers in ``votes`` whose sketch agrees with ``values``."""
    return {peer for peer, other in votes.items() if sketches_agree(values, other)}


def _best_supported(votes: dict[str, list[float]]) -> set[str]:
    """The peers agreeing with the sketch that the most peers in ``votes`` agree with."""
    best: set[str] = set()
    for values in votes.values():
        agreeing = _agreeing(votes, values)
        if len(agreeing) > len(best):
            best = agreeing
    return best


def excluded_by_majority(records: Iterable[dict]) -> dict[str, str]:
    """Peer id -> why, for the peers banned by at least ``QUORUM`` publishers of one epoch's
    records and by a strict majority of the publishers other than themselves.

    Each record is one admitted peer's ``{"peer_id", "banned"}``. The peers that reduced a
    sender's parts saw what it put into the all-reduce, which no validator sees; requiring a
    quorum and a majority keeps one accuser, or a colluding minority, from excluding an honest
    peer (with two peers, neither can exclude the other).
    """
    publishers: set[str] = set()
    accusers: dict[str, set[str]] = {}
    for value in records:
        publishers.add(value["peer_id"])
        banned = value.get("banned")
        for peer in banned if isinstance(banned, list) else ():
            if isinstance(peer, str) and peer != value["peer_id"]:
                accusers.setdefault(peer, set()).add(value["peer_id"])
    verdicts = {}
    for peer, by in accusers.items():
        others = len(publishers - {peer})
        if len(by) >= QUORUM and 2 * len(by) > others:
            verdicts[peer] = f"excluded from the all-reduce by {len(by)} of {others} peers"
    return verdicts


def finite(tensors: Iterable[torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)
