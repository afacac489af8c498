"""Which peers the swarm's published ban lists exclude: a quorum and a majority, never one voice.

The records are what each admitted peer publishes with its epoch's sketch
(:meth:`hivetrain.swarm.state_check.SketchBoard.publish`); validators score the excluded miners
0.3 (:meth:`hivetrain.validator.loop.Validator.swarm_exclusions`).
"""

from hivetrain.swarm.state_check import excluded_by_majority


def record(peer, *banned):
    return {"peer_id": peer, "banned": list(banned)}


def test_a_sender_every_honest_reducer_banned_is_excluded():
    verdicts = excluded_by_majority([record("a", "x"), record("b", "x"), record("c", "x"),
                                     record("x")])
    assert verdicts == {"x": "excluded from the all-reduce by 3 of 3 peers"}


def test_one_accuser_cannot_exclude_a_peer_even_of_two():
    assert excluded_by_majority([record("a"), record("x", "a")]) == {}
    assert excluded_by_majority([record("a", "x"), record("x", "a")]) == {}


def test_a_colluding_minority_cannot_frame_an_honest_peer():
    honest = [record(p) for p in "abcd"]
    colluders = [record("x", "a"), record("y", "a")]
    assert excluded_by_majority(honest + colluders) == {}  # 2 of 5 others


def test_half_is_not_a_majority():
    assert excluded_by_majority([record("a", "x"), record("b", "x"), record("c"), record("d"),
                                 record("x")]) == {}


def test_a_peer_banning_itself_or_malformed_lists_count_for_nothing():
    assert excluded_by_majority([record("a", "a"), record("b", "a"),
                                 {"peer_id": "c", "banned": "a"}, {"peer_id": "d"}]) == {}
