"""The swarm's outer step against the updates its group published (validator/consistency.py).

The derivation of the averaged change is tested against torch's own Nesterov SGD step; the
attribution on synthetic groups with one member that sent something other than it published
(averaged where the reducers bound copies by the reducers' own ``robust_mean``). The same check
against real processes (a miner that averages noise beside two honest ones) is in
tests/test_consistency_swarm.py.
"""

import math

import pytest
import torch

from hivetrain.swarm.diloco import OuterState
from hivetrain.swarm.robust import Verdicts, robust_mean
from hivetrain.validator.consistency import Published, averaged_change, check

LR, MU = 0.7, 0.9
PEERS = {1: {"PeerAAAAAAAAAAAAAAAAA1"}, 2: {"PeerAAAAAAAAAAAAAAAAA2"},
         3: {"PeerAAAAAAAAAAAAAAAAA3"}, 4: {"PeerAAAAAAAAAAAAAAAAA4"}}
GROUP = frozenset(next(iter(p)) for p in PEERS.values())
HOLDING = set(PEERS)  # every uid published the sketch of the validator's later copy
PARTS = (400, 600)  # the all-reduce's cut of a 1000-value vector: each part is bounded alone


def outer_steps(changes):
    """OuterStates before and after each of ``changes``, stepped by torch's Nesterov SGD."""
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(1000))
    opt = torch.optim.SGD([param], lr=LR, momentum=MU, nesterov=True)
    states = []

    def snapshot(epoch):
        momentum = opt.state.get(param, {}).get("momentum_buffer")
        states.append(OuterState(epoch, [param.detach().clone()],
                                 None if momentum is None else [momentum.clone()], LR, MU))

    snapshot(0)
    for epoch, change in enumerate(changes, start=1):
        param.grad = change.clone()
        opt.step()
        snapshot(epoch)
    return states


def test_the_averaged_change_is_recovered_from_two_consecutive_outer_states():
    changes = [torch.randn(1000) * 0.01 for _ in range(3)]
    states = outer_steps(changes)
    for epoch, change in enumerate(changes):  # the first step has no momentum before it
        derived, gap = averaged_change(states[epoch], states[epoch + 1])
        assert torch.allclose(derived, change, atol=1e-5), epoch
        assert gap < 1e-3
    # Two epochs apart (the validator missed one): the derivations disagree, nothing is judged.
    _, gap = averaged_change(states[1], states[3])
    assert gap > 0.1


def updates(n=4, numel=1000, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(numel, generator=generator) * 0.01 for _ in range(n)]


def published(vectors, samples, groups=None):
    return {uid: Published(vector, samples[uid - 1], groups.get(uid, GROUP) if groups else GROUP)
            for uid, vector in enumerate(vectors, start=1)}


def test_an_honest_group_is_consistent_with_shares_near_one():
    vectors, samples = updates(), [40, 80, 40, 40]
    average = sum(s * v for s, v in zip(samples, vectors)) / sum(samples)
    found = check(average, 0.0, published(vectors, samples), PEERS, HOLDING, PARTS)
    assert found.status == "consistent", found
    assert all(abs(share - 1) < 1e-3 for share in found.shares.values()), found.shares
    assert found.residual < 1e-3


@pytest.mark.parametrize("sent", ["sign_flipped", "other_vector", "zeros"])
def test_a_member_that_averaged_something_else_is_named(sent):
    vectors, samples = updates(), [40, 40, 40, 40]
    actually = {"sign_flipped": -vectors[3], "other_vector": updates(1, seed=7)[0],
                "zeros": torch.zeros(1000)}[sent]
    average = (vectors[0] + vectors[1] + vectors[2] + actually) / 4
    found = check(average, 0.0, published(vectors, samples), PEERS, HOLDING, PARTS)
    assert found.status == "inconsistent", found
    assert set(found.flagged) == {4}, found.shares
    assert "outer step" in found.flagged[4]


def test_in_a_pair_the_member_whose_share_fits_is_believed():
    """Two members, one sign-flipped: one share fits, so the other is the one that lied."""
    vectors, samples = updates(2), [40, 40]
    pair = frozenset(next(iter(PEERS[uid])) for uid in (1, 2))
    found = check((vectors[0] - vectors[1]) / 2, 0.0,
                  published(vectors, samples, {1: pair, 2: pair}), PEERS, HOLDING, PARTS)
    assert found.status == "inconsistent" and set(found.flagged) == {2}, found


def test_a_copier_or_a_freeloader_beside_its_source_frames_nobody():
    """Uid 3 republishes uid 1's update and averaged nothing (zeros, full claim); uid 4 trained
    nothing and published zeros. No fit tells 1 from 3, so neither is flagged here."""
    vectors, samples = updates(), [40, 40, 40, 40]
    vectors[2], vectors[3] = vectors[0].clone(), torch.zeros(1000)
    average = (vectors[0] + vectors[1]) / 4
    found = check(average, 0.0, published(vectors, samples), PEERS, HOLDING, PARTS)
    assert found.status == "consistent" and not found.flagged, found
    assert found.shares[2] == pytest.approx(1.0, abs=1e-3), found.shares


def test_a_group_named_by_one_member_only_frames_nobody():
    """Uid 4 names 1, 2, 3 into its group; they averaged without it. The group {1, 2, 3, 4}
    has one vote of four, the group {1, 2, 3} three of three: only that one is checked."""
    vectors, samples = updates(), [40, 40, 40, 40]
    trio = frozenset(next(iter(PEERS[uid])) for uid in (1, 2, 3))
    groups = {1: trio, 2: trio, 3: trio}
    average = (vectors[0] + vectors[1] + vectors[2]) / 3
    found = check(average, 0.0, published(vectors, samples, groups), PEERS, HOLDING, PARTS)
    assert found.status == "consistent" and found.members == (1, 2, 3), found


def test_nothing_is_judged_when_the_copies_are_not_one_step_apart_or_a_member_is_unfetched():
    vectors, samples = updates(), [40, 40, 40, 40]
    average = -sum(vectors) / 4  # would flag everyone if judged
    assert check(average, 0.5, published(vectors, samples), PEERS, HOLDING,
                 PARTS).status == "inconclusive"
    partial = {uid: p for uid, p in published(vectors, samples).items() if uid != 2}
    assert check(average, 0.0, partial, PEERS, HOLDING, PARTS).status == "inconclusive"
    # Most shares off: the average is not this group's (another group's state was fetched).
    found = check(average, 0.0, published(vectors, samples), PEERS, HOLDING, PARTS)
    assert found.status == "inconclusive" and not found.flagged, found
    assert all(math.isfinite(s) for s in found.shares.values())


def test_a_group_that_averaged_apart_is_not_judged_against_another_groups_step():
    """A split swarm: 1 and 2 averaged as a pair, 3 and 4 as another, and the validator holds
    the second pair's result (only 3 and 4 published its sketch). With 4's update not fetched,
    the only fittable group is the pair that did not make this step: measured on processes, a
    fit there flagged an honest miner. It is not judged."""
    vectors, samples = updates(), [40, 40, 40, 40]
    pairs = [frozenset(next(iter(PEERS[uid])) for uid in pair) for pair in ((1, 2), (3, 4))]
    groups = {1: pairs[0], 2: pairs[0], 3: pairs[1], 4: pairs[1]}
    step = (vectors[2] + vectors[3]) / 2
    vectors[1] = vectors[1] / 2 + step / 2  # updates of one model point partly the same way
    unfetched = {uid: p for uid, p in published(vectors, samples, groups).items() if uid != 4}
    found = check(step, 0.0, unfetched, PEERS, {3, 4}, PARTS)
    assert found.status == "inconclusive" and not found.flagged, found
    found = check(step, 0.0, published(vectors, samples, groups), PEERS, {3, 4}, PARTS)
    assert found.status == "consistent" and found.members == (3, 4), found
    # the control: without the holders' filter the wrong pair is fitted, and 1 is flagged
    assert set(check(step, 0.0, unfetched, PEERS, HOLDING, PARTS).flagged) == {1}


def reduced(sent, samples, parts=PARTS):
    """The swarm's average of what each member ``sent``: the reducers' own ``robust_mean``,
    part by part, as hivemind's butterfly all-reduce runs it."""
    names, pieces, start = [f"peer{i}" for i in range(len(sent))], [], 0
    for size in parts:
        copies = {i: (vector[start:start + size], float(claim))
                  for i, (vector, claim) in enumerate(zip(sent, samples))}
        pieces.append(robust_mean(copies, names, Verdicts()))
        start += size
    return torch.cat(pieces)


def test_a_liar_is_named_when_the_reducers_bound_an_honest_member():
    """A swarm's first epochs of three, where one honest member has trained far longer than the
    others (one way the earlier fit failed; a CI run let the liar pass at 0.124). The reducers
    cap its claim (200 > 4 x the median 40) and clip its copies of the tensors it changed most
    (here the first part), while the third member sends noise of its update's norm. Fitted to
    the claimed-sample mean, as before the fit took the reducers' bounds, the same numbers gave
    the noise sender a share of 0.81 (in the band: it passed) and the honest members 0.42 and
    2.04."""
    parts = (4000, 6000)
    generator = torch.Generator().manual_seed(0)
    common = torch.randn(sum(parts), generator=generator)  # updates of one model point alike
    vectors = [common + 0.5 * torch.randn(sum(parts), generator=generator) for _ in range(3)]
    vectors[0] = torch.cat([vectors[0][:parts[0]] * 4, vectors[0][parts[0]:]])
    samples = [200, 40, 40]
    noise = torch.randn(sum(parts), generator=generator).split(parts)
    sent = vectors[:2] + [torch.cat([n * (v.norm() / n.norm())
                                     for n, v in zip(noise, vectors[2].split(parts))])]
    trio = frozenset(next(iter(PEERS[uid])) for uid in (1, 2, 3))
    group = published(vectors, samples, {1: trio, 2: trio, 3: trio})
    found = check(reduced(sent, samples, parts), 0.0, group, PEERS, HOLDING, parts)
    assert found.status == "inconsistent" and set(found.flagged) == {3}, found
    assert abs(found.shares[3]) < 0.05, found.shares
    assert found.shares[1] == pytest.approx(1, abs=0.02), found.shares
    assert found.shares[2] == pytest.approx(1, abs=0.02), found.shares
    # Honest, the same group is consistent, its shares 1, with nothing left unexplained.
    found = check(reduced(vectors, samples, parts), 0.0, group, PEERS, HOLDING, parts)
    assert found.status == "consistent", found
    assert all(share == pytest.approx(1, abs=1e-4) for share in found.shares.values()), found
    assert found.residual < 1e-4


def test_a_member_that_gave_its_round_up_is_not_judged_and_the_others_are():
    """Uid 4 was gathered into the group of four, then gave its round up (the swarm moved on
    first) and names no group. Measured on processes: the others' average then held anything
    from none of its update to 30 x its claim. Here it added nothing: fitted as if it had sent
    its update, its share is ~0, the only one out of the band: the earlier check flagged it,
    though honest. It is now not judged; a liar beside it still is."""
    vectors, samples = updates(), [40, 40, 40, 40]
    groups = {1: GROUP, 2: GROUP, 3: GROUP, 4: frozenset()}
    step = reduced(vectors[:3], samples[:3])  # 4 added nothing
    found = check(step, 0.0, published(vectors, samples, groups), PEERS, HOLDING, PARTS)
    assert found.status == "consistent" and found.unjudged == (4,), found
    assert abs(found.shares[4]) < 0.1, found.shares
    # the control: had 4 named the group, the same numbers flag it
    found = check(step, 0.0, published(vectors, samples), PEERS, HOLDING, PARTS)
    assert found.status == "inconsistent" and set(found.flagged) == {4}, found
    # 3 sent noise instead of its update: named beside the member that gave up
    noise = updates(1, seed=7)[0]
    step = reduced([vectors[0], vectors[1], noise * (vectors[2].norm() / noise.norm())],
                   samples[:3])
    found = check(step, 0.0, published(vectors, samples, groups), PEERS, HOLDING, PARTS)
    assert found.status == "inconsistent" and set(found.flagged) == {3}, found
