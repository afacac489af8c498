"""The signed per-epoch sketches on real hivemind DHTs on loopback: where a state download looks
first, and which exclusions the records carry (what validators score and every peer adopts)."""

import pytest
from hivemind.utils.crypto import RSAPrivateKey

from hivetrain.swarm.dht import loopback_dhts
from hivetrain.swarm.state_check import SketchBoard
from helpers.polling import wait_until

RUN = "sketch-test"
G = [1.0] * 64
SPLIT = [2.0] * 64


@pytest.fixture(scope="module")
def boards():
    dhts = loopback_dhts(4)
    try:
        yield [SketchBoard(dht, RUN, lambda peer: True, RSAPrivateKey()) for dht in dhts]
    finally:
        for dht in reversed(dhts):
            dht.shutdown()


def test_a_download_looks_first_at_the_peers_holding_the_best_supported_state(boards):
    a, b, c, d = boards
    a.publish(1, G)
    b.publish(1, G)
    c.publish(1, SPLIT)  # a group that averaged apart
    assert wait_until(lambda: a.holders(1, trainers=3) == {a.peer_id, b.peer_id}, 30,
                      "the two peers holding the majority's G")
    # One peer's sketch alone is no quorum when others train: nobody to prefer.
    d.publish(2, SPLIT)
    wait_until(lambda: d.peer_id in a.votes(2), 30, "the lone sketch of epoch 2")
    assert a.holders(2, trainers=3) == set()


def test_a_lone_vote_is_enough_only_from_the_reference_of_the_group_this_peer_left(boards):
    """A group whose other members all differed from it leaves the reference ``G`` one vote."""
    a, b, c, _ = boards
    a.publish(3, G)
    b.publish(3, SPLIT)  # sketches with one vote each: no quorum, the most support is a tie
    wait_until(lambda: len(c.votes(3)) == 2, 30, "both records of epoch 3")
    assert "needs 2" in c.judge(3, G, trainers=3, wait=0)
    assert c.judge(3, G, trainers=3, wait=0, vouched=frozenset({a.peer_id})) is None
    # A voucher does not make a state the swarm holds less of acceptable.
    c.publish(3, SPLIT)
    wait_until(lambda: len(a.votes(3)) == 3, 30, "the third record of epoch 3")
    assert "the most support, 2" in a.judge(3, G, trainers=3, wait=0,
                                            vouched=frozenset({a.peer_id}))


def test_a_ban_by_a_majority_of_the_other_publishers_excludes_and_a_lone_one_does_not(boards):
    a, b, c, d = boards
    a.publish(5, G, banned=[d.peer_id])
    b.publish(5, G, banned=[d.peer_id])
    c.publish(5, G, banned=[a.peer_id])  # one accuser each: no quorum
    d.publish(5, G, banned=[b.peer_id])
    wait_until(lambda: len(a.votes(5)) == 4, 30, "all four records of epoch 5")
    excluded = a.excluded(5)
    assert set(excluded) == {d.peer_id}, excluded
    assert "by 2 of 3 peers" in excluded[d.peer_id]


def test_an_epoch_without_records_passes_unverified_only_once_the_swarm_has_reached_it(boards):
    """No sketch of epoch 40 was published: a state labelled with it is let through (with a
    warning) only when the progress quorum corroborates the epoch, not one epoch beyond it."""
    a = boards[0]
    assert a.votes(40) == {}
    assert "has not reached that epoch" in a.judge(40, G, trainers=3, wait=0)
    assert a.judge(40, G, trainers=3, wait=0, corroborated=True) is None
