"""What the swarm's progress counts: admitted, corroborated, bounded reports of peers that can
still take part in the round (hivetrain/swarm/tracker.py)."""

import os

import hivemind
import pytest
from hivemind.p2p import PeerID
from hivemind.utils.timed_storage import ValueWithExpiration, get_dht_time

from hivetrain.swarm.tracker import SwarmProgressTracker

PER_PEER = 40  # samples a peer takes per round: the round's target is PER_PEER x training peers


@pytest.fixture
def tracker():
    dht = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    tracker = SwarmProgressTracker(dht, "tracker-test", PER_PEER, start=False)
    yield tracker
    dht.shutdown()


def record(peer: bytes, epoch: int, samples: int, rate: float = 10.0) -> ValueWithExpiration:
    value = {"peer_id": peer, "epoch": epoch, "samples_accumulated": samples,
             "samples_per_second": rate, "time": get_dht_time(), "client_mode": False}
    return ValueWithExpiration(value, get_dht_time() + 60)


def progress(tracker, reports):
    """The swarm's progress as ``tracker`` reads ``reports`` ((epoch, samples) per other peer),
    with its own peer at epoch 7, after setting the target the way DiLoCo does."""
    own = record(tracker.dht.peer_id.to_bytes(), 7, PER_PEER)
    metadata = {tracker._local_public_key: own}
    metadata.update({os.urandom(8): record(PeerID(os.urandom(34)).to_bytes(), epoch, samples)
                     for epoch, samples in reports})
    tracker.local_progress = tracker.local_progress.copy(update={"epoch": 7})
    first = tracker._parse_swarm_progress_data(dict(metadata))
    tracker.target_batch_size = PER_PEER * (first.num_peers - first.num_clients)
    return tracker._parse_swarm_progress_data(dict(metadata))


def test_peers_two_epochs_behind_do_not_hold_the_round_back(tracker):
    """Measured before this rule: four peers stuck at epoch 5 made the target 7 peers' worth and
    capped each of the three at epoch 7 at 2/7 of it, so their round never ended."""
    done = progress(tracker, [(7, PER_PEER), (7, PER_PEER)] + [(5, 0)] * 4)
    assert (done.epoch, done.num_peers) == (7, 3)
    assert done.samples_accumulated >= tracker.target_batch_size


def test_a_peer_one_epoch_behind_still_counts(tracker):
    """It is finishing the last all-reduce and is about to join this round: ending the round
    without it would leave it out of every group."""
    waiting = progress(tracker, [(7, PER_PEER), (6, 0)])
    assert waiting.num_peers == 3
    assert waiting.samples_accumulated < tracker.target_batch_size


def test_a_peer_not_admitted_is_a_newcomer_and_an_excluded_one_is_not(tracker):
    """A newcomer's records make the miner read the chain again (it may have just committed);
    an excluded peer was admitted and is kept out on purpose, and reading the chain changes
    nothing for it."""
    newcomer, excluded, member = (PeerID(os.urandom(34)) for _ in range(3))
    own = tracker.dht.peer_id
    tracker.admit([own.to_base58(), excluded.to_base58(), member.to_base58()])
    tracker.exclude([excluded.to_base58()])
    metadata = {os.urandom(8): record(peer.to_bytes(), 7, PER_PEER)
                for peer in (own, newcomer, excluded, member)}
    seen = tracker._parse_swarm_progress_data(metadata)
    assert seen.num_peers == 2  # this one and the member
    assert tracker.newcomers == {newcomer.to_base58()}
    tracker.admit([peer.to_base58() for peer in (own, newcomer, excluded, member)])
    assert tracker._parse_swarm_progress_data(metadata).num_peers == 3
    assert tracker.newcomers == frozenset()


def test_the_highest_report_is_kept_beside_the_quorums_epoch(tracker):
    """A joiner at epoch 0 holds the quorum (the second-highest report) back while the leader
    trains on: a state of the leader's epoch is ahead of the quorum but reported, which is not
    what a liar's state is (docs/security.md, state downloads)."""
    done = progress(tracker, [(9, PER_PEER), (0, 0)])
    assert done.epoch == 7  # this peer's own: the quorum of two others reached only epoch 0
    assert tracker.highest_reported_epoch == 9
    liar = PeerID(os.urandom(34))
    tracker.exclude([liar.to_base58()])
    tracker._parse_swarm_progress_data({os.urandom(8): record(liar.to_bytes(), 60, PER_PEER)})
    assert tracker.highest_reported_epoch == 7  # an excluded peer's report counts for nothing


def test_a_peer_whose_own_report_is_not_fetched_yet_counts_itself(tracker):
    """Its first report may not have reached the DHT when it fetches. Counted one trainer short,
    a peer beside one other peer's single sample saw a one-peer target its own sample made up,
    and ended a round alone."""
    tracker.report_local_progress(0, 1)
    other = record(PeerID(os.urandom(34)).to_bytes(), 0, 1)
    seen = tracker._parse_swarm_progress_data({os.urandom(8): other})
    assert (seen.num_peers, seen.samples_accumulated) == (2, 2)
    # With nothing fetched, hivemind's no-peers case: this peer's samples, and a quick refetch
    # (a report of its own would wait out an ETA from its own rate: 10 s for a joiner).
    alone = tracker._parse_swarm_progress_data(None)
    assert (alone.num_peers, alone.samples_accumulated) == (0, 1)
    assert alone.next_fetch_time - get_dht_time() <= tracker.default_refresh_period


def test_an_observer_counts_only_the_trainers(tracker):
    """An observer never reports: ``hivetrain export`` reads num_peers 0 as "nobody trains"."""
    observer = SwarmProgressTracker(tracker.dht, "tracker-test", PER_PEER, start=False,
                                    client_mode=True)
    assert observer._parse_swarm_progress_data(None).num_peers == 0
    other = record(PeerID(os.urandom(34)).to_bytes(), 0, 1)
    seen = observer._parse_swarm_progress_data({os.urandom(8): other})
    assert (seen.num_peers, seen.num_clients) == (1, 0)


def test_a_peer_yet_to_step_does_not_cap_the_others_rates(tracker):
    """Before its first step a peer's rate is hivemind's unmeasured 1e-20 samples/s. As the
    median it capped every rate near 0, and the next fetch went the full max_refresh_period away:
    a joiner read the swarm's epoch 10 s after joining instead of 1-2 s."""
    other = record(PeerID(os.urandom(34)).to_bytes(), 0, 1, rate=10.0)
    seen = tracker._parse_swarm_progress_data({os.urandom(8): other})
    assert seen.num_peers == 2
    assert seen.next_fetch_time - get_dht_time() < tracker.max_refresh_period / 2
