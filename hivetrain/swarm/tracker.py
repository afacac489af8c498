"""The swarm's progress as only admitted, plausible reports tell it.

hivemind's ``ProgressTracker`` reads every record under ``<run_id>_progress``: anyone who can
write to the DHT may add one (signed by a key of its own, with any ``peer_id`` in it), the swarm's
epoch is the highest epoch any record claims, and a round ends when the records' sample counts
add up to the target. Measured before this module: a peer that was not even registered sent the
swarm's observers to epoch 64, and a spoofed sample total ended rounds after ~5 inner steps
instead of ~23.

:class:`SwarmProgressTracker` reads the same records but counts only

* records whose ``peer_id`` is admitted (committed on chain by a registered hotkey) and not
  excluded (caught sending bad parts), one per peer id: when two records claim the same peer, the
  lower epoch and sample count win, so an impostor can only make that peer look slower;
* epochs that a quorum corroborates: the swarm's epoch is the highest one that at least
  ``min(2, other peers)`` peers other than this one have reached, so a single liar cannot move
  it (in a swarm of two, the one other peer decides, as it must);
* samples up to ``SAMPLE_SPREAD`` x a peer's fair share of the round (``target / peers``), and
  rates up to ``RATE_SPREAD`` x the median measured rate, so no report ends a round early by
  much;
* this peer itself, from its own progress, before its record is back from the DHT (hivemind
  counts only fetched records as peers, so a peer counted one trainer short);
* peers at most ``LAG_EPOCHS`` behind the swarm's epoch. One further behind cannot take part in
  this round (it must load the state first), yet hivemind counts it as a peer, and the round's
  target grows with the peers while the sample cap shrinks: measured in a fresh-clone run of
  ``tests/test_proof_of_training.py``, four peers that could not load a verified state stayed at
  epoch 5, and the three at epoch 7 (capped at 2/7 of the target each) never ended the round.
"""

from __future__ import annotations

import logging
import threading
from typing import Iterable

from hivemind.optim.progress_tracker import GlobalTrainingProgress, ProgressTracker
from hivemind.p2p import PeerID
from hivemind.utils.timed_storage import ValueWithExpiration, get_dht_time

logger = logging.getLogger(__name__)

SAMPLE_SPREAD = 2.0
RATE_SPREAD = 4.0
EPOCH_QUORUM = 2
LAG_EPOCHS = 1
EXCLUDE_SECONDS = 600.0
# How long a peer's progress record outlives its last report. A peer gone without withdrawing it
# (killed, or its withdrawal lost on the way out) still counts as a trainer until then: it caps
# each live peer's share of the round, and a restarted peer's old record (another signing key,
# the same peer id, the lower count wins) hides its new one. With hivemind's 60 s, a clean stop
# of two miners stalled the third's round 50 s and 51 s in two runs of tests/test_swarm.py.
# A live peer re-reports at least every half of it, even through a long all-reduce (hivemind's
# reporter thread), and every second while it trains (diloco.REPORT_EVERY).
PROGRESS_EXPIRATION = 20.0


class SwarmProgressTracker(ProgressTracker):
    """``ProgressTracker`` over admitted, bounded reports (see the module docstring).

    :param admitted: peer ids (base58) whose reports count; None counts everyone's.
    """

    def __init__(self, dht, prefix: str, target_batch_size: int, *,
                 admitted: Iterable[str] | None = None,
                 metadata_expiration: float = PROGRESS_EXPIRATION, **kwargs):
        self._own_peer = str(dht.peer_id)
        self._admitted = None if admitted is None else set(admitted)
        self._excluded: dict[str, float] = {}
        self._filter_lock = threading.Lock()
        self.newcomers: frozenset[str] = frozenset()  # reporting, not admitted: see _plausible
        # The highest epoch an admitted, not excluded peer (this one included) reports, quorum
        # or not: a state labelled beyond it is one no peer even claims to hold.
        self.highest_reported_epoch = 0
        super().__init__(dht, prefix, target_batch_size,
                         metadata_expiration=metadata_expiration, **kwargs)

    def refresh(self) -> None:
        """Read the swarm's progress now instead of at the next scheduled fetch, which can be
        ``max_refresh_period`` (10 s) away: several epochs of a fast swarm."""
        found = self.dht.get(self.training_progress_key, latest=True)
        metadata = found.value if isinstance(found, ValueWithExpiration) else None
        with self.lock_global_progress:
            self.global_progress = self._parse_swarm_progress_data(metadata)

    def admit(self, peer_ids: Iterable[str] | None) -> None:
        admitted = None if peer_ids is None else set(peer_ids)
        with self._filter_lock:
            previous, self._admitted = self._admitted, admitted
        new = sorted(admitted - previous) if admitted is not None and previous is not None else []
        if new:
            logger.info("admitting %d more peers, committed on chain: %s", len(new), ", ".join(new))

    def exclude(self, peer_ids: Iterable[str], seconds: float = EXCLUDE_SECONDS) -> None:
        until = get_dht_time() + seconds
        with self._filter_lock:
            self._excluded.update({peer: until for peer in peer_ids})

    def counts(self, peer: str) -> bool:
        """Whether ``peer``'s reports count towards the swarm's progress."""
        with self._filter_lock:
            if peer == self._own_peer:
                return True
            return self._admits(peer) and self._excluded.get(peer, -1.0) <= get_dht_time()

    def _admits(self, peer: str) -> bool:
        return self._admitted is None or peer in self._admitted

    def _parse_swarm_progress_data(self, metadata) -> GlobalTrainingProgress:
        metadata = self._with_own_report(metadata if isinstance(metadata, dict) else {})
        return super()._parse_swarm_progress_data(self._plausible(metadata))

    def _with_own_report(self, metadata: dict) -> dict:
        """``metadata`` with this peer's current progress where its own record is not in it yet.

        hivemind adds this peer's samples to what it fetched (``report_local_progress``) but
        counts only the fetched records as peers. A peer that fetched before its own first report
        reached the DHT counted one trainer short, and the samples of the others plus its own
        made up that smaller target: four peers taking one step each, 4 s apart, left the last
        three an epoch ahead of the first, each having ended round 0 alone (3 of 3 runs; none
        with this). A CI run of tests/test_robust_averaging.py fits one peer having done so:
        for 90 s the four counted [3, 4, 3, 3] peers, since the other three count an epoch only
        a quorum has reached.

        Left as fetched where nothing was: hivemind's no-peers case already takes this peer's
        samples alone and fetches again within ``default_refresh_period`` (3 s), where a report
        of its own, at the unmeasured rate of a peer yet to step, would put the next fetch
        ``max_refresh_period`` (10 s) away. And an observer (client mode) is no trainer and never
        reports: it is left out, so that ``num_peers`` still tells it whether anyone trains
        (``hivetrain export``).
        """
        own = metadata.get(self._local_public_key)
        if self.client_mode or not metadata or isinstance(getattr(own, "value", None), dict):
            return metadata
        report = ValueWithExpiration(self.local_progress.dict(),
                                     get_dht_time() + self.metadata_expiration)
        return {**metadata, self._local_public_key: report}

    def _plausible(self, metadata: dict) -> dict:
        """The admitted, de-duplicated, quorum-corroborated and bounded subset of ``metadata``.

        Also notes the peers that report progress but are not admitted (:attr:`newcomers`): one
        that registered and committed its address since the admitted set was last read from the
        chain is turned away from every group until it is read again.
        """
        by_peer: dict[str, tuple[object, dict]] = {}
        newcomers: set[str] = set()
        for subkey, entry in metadata.items():
            value = getattr(entry, "value", None)
            if not isinstance(value, dict):
                continue
            try:
                peer = PeerID(value["peer_id"]).to_base58()
            except (KeyError, TypeError, ValueError):
                continue
            if not self.counts(peer):
                with self._filter_lock:
                    if not self._admits(peer):
                        newcomers.add(peer)
                continue
            previous = by_peer.get(peer)
            key = (value.get("epoch", 0), value.get("samples_accumulated", 0))
            if previous is None or key < (previous[1]["epoch"], previous[1]["samples_accumulated"]):
                by_peer[peer] = (subkey, dict(value))
        self.newcomers = frozenset(newcomers)
        trainers = {peer: v for peer, (_, v) in by_peer.items() if not v.get("client_mode")}
        others = sorted((v["epoch"] for peer, v in trainers.items() if peer != self._own_peer),
                        reverse=True)
        own_epoch = self.local_progress.epoch
        self.highest_reported_epoch = max([own_epoch, *others])
        quorum = min(EPOCH_QUORUM, len(others))
        epoch = max(own_epoch, others[quorum - 1] if quorum else own_epoch)
        by_peer = {peer: entry for peer, entry in by_peer.items()
                   if peer == self._own_peer or entry[1].get("client_mode")
                   or entry[1].get("epoch", 0) >= epoch - LAG_EPOCHS}
        trainers = {peer: v for peer, v in trainers.items() if peer in by_peer}
        share = self.target_batch_size / max(1, len(trainers))
        # The median of the rates peers measured: before its first step a peer reports hivemind's
        # unmeasured 1e-20 samples/s, and as the lower median of two such a rate capped every
        # rate near 0, the ETA ran out to max_refresh_period and a joiner (counting itself before
        # its record was back) read the swarm's epoch 10 s after joining instead of 1-2 s.
        rates = sorted(rate for rate in (v["samples_per_second"] for _, v in by_peer.values())
                       if rate > self.performance_ema.eps)
        rate_cap = RATE_SPREAD * rates[(len(rates) - 1) // 2] if rates else 0.0
        kept = {}
        for peer, (subkey, value) in by_peer.items():
            if value["epoch"] > epoch:  # not corroborated: ignored until a quorum is there too
                continue
            value["samples_accumulated"] = int(min(value["samples_accumulated"],
                                                   SAMPLE_SPREAD * share))
            value["samples_per_second"] = float(min(value["samples_per_second"], rate_cap))
            expiration = getattr(metadata[subkey], "expiration_time", get_dht_time())
            kept[subkey] = ValueWithExpiration(value, expiration)
        return kept
