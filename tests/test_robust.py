"""The robust reduction rule on one part, sender by sender: what is kept, bounded, dropped, banned."""

import torch

import pytest

from hivemind.averaging.partition import TensorPartContainer
from hivemind.compression import Float16Compression, NoCompression

from hivetrain.swarm.robust import (CLIP_FACTOR, NETWORK_MEDIAN_MAX, WEIGHT_SPREAD, Verdicts,
                                   coordinate_median, part_sizes, robust_mean)

NAMES = ["honest-a", "honest-b", "honest-c", "attacker"]


def honest_copies(seed: int = 0, n: int = 3, size: int = 256) -> dict:
    """Copies of one part as honest DiLoCo peers send them: a shared direction plus noise."""
    generator = torch.Generator().manual_seed(seed)
    shared = torch.randn(size, generator=generator)
    return {i: (shared + 0.5 * torch.randn(size, generator=generator), 100.0) for i in range(n)}


def plain_mean(copies: dict) -> torch.Tensor:
    total = sum(w for _, w in copies.values())
    return sum(t * w for t, w in copies.values()) / total


def test_honest_copies_give_the_plain_weighted_mean():
    copies = honest_copies()
    copies[1] = (copies[1][0], 180.0)  # a peer with nearly twice the compute
    verdicts = Verdicts()
    result = robust_mean(copies, NAMES, verdicts)
    assert torch.allclose(result, plain_mean(copies), atol=1e-6)
    assert not verdicts.offenders and not verdicts.notes


def test_non_finite_copies_are_dropped_and_their_sender_banned():
    for bad in (float("nan"), float("inf")):
        copies = honest_copies()
        poisoned = torch.ones(256)
        poisoned[7] = bad
        copies[3] = (poisoned, 100.0)
        verdicts = Verdicts()
        result = robust_mean(copies, NAMES, verdicts)
        honest = {i: c for i, c in copies.items() if i < 3}
        assert torch.isfinite(result).all()
        assert torch.allclose(result, plain_mean(honest), atol=1e-6)
        assert set(verdicts.offenders) == {"attacker"}


def test_a_scaled_copy_is_clipped_to_the_median_norm_and_banned():
    copies = honest_copies()
    copies[3] = (copies[0][0] * 1e4, 100.0)
    verdicts = Verdicts()
    result = robust_mean(copies, NAMES, verdicts)
    honest = {i: c for i, c in copies.items() if i < 3}
    assert torch.allclose(result, plain_mean(honest), atol=1e-6)
    assert set(verdicts.offenders) == {"attacker"}


def test_a_copy_within_reach_of_honest_peers_is_clipped_not_banned():
    copies = honest_copies()
    copies[3] = (copies[0][0] * 3, 100.0)
    verdicts = Verdicts()
    result = robust_mean(copies, NAMES, verdicts)
    median_norm = sorted(t.norm().item() for t, _ in copies.values())[1]
    clipped = dict(copies)
    clipped[3] = (copies[3][0] * (CLIP_FACTOR * median_norm / copies[3][0].norm().item()), 100.0)
    assert torch.allclose(result, plain_mean(clipped), atol=1e-5)
    assert "attacker" in verdicts.notes and not verdicts.offenders


def test_an_inflated_weight_is_dropped_and_banned_a_larger_one_capped():
    copies = honest_copies()
    copies[3] = (copies[0][0].clone(), 1e6)
    verdicts = Verdicts()
    result = robust_mean(copies, NAMES, verdicts)
    honest = {i: c for i, c in copies.items() if i < 3}
    assert torch.allclose(result, plain_mean(honest), atol=1e-5)
    assert set(verdicts.offenders) == {"attacker"}
    copies[3] = (copies[0][0].clone(), 600.0)  # 6x the median: bounded to WEIGHT_SPREAD x
    verdicts = Verdicts()
    capped = dict(copies)
    capped[3] = (copies[3][0], WEIGHT_SPREAD * 100.0)
    assert torch.allclose(robust_mean(copies, NAMES, verdicts), plain_mean(capped), atol=1e-5)
    assert "attacker" in verdicts.notes and not verdicts.offenders


def test_a_sign_flipped_sender_is_banned_when_the_round_ends():
    """A flipped copy keeps an honest norm, so it is only bounded in its round; over the round's
    parts it points against the median, which bans it from the next."""
    verdicts = Verdicts()
    for part in range(3):
        copies = honest_copies(seed=part)
        copies[3] = (-copies[0][0], 100.0)
        robust_mean(copies, NAMES, verdicts)
    assert not verdicts.offenders
    verdicts.judge_directions()
    assert set(verdicts.offenders) == {"attacker"}


def test_honest_copies_against_the_median_in_one_part_are_not_banned():
    verdicts = Verdicts()
    for part in range(4):
        copies = honest_copies(seed=10 + part)
        if part == 0:  # one part where an honest peer happens to point the other way
            copies[2] = (-copies[2][0], 100.0)
        robust_mean(copies, NAMES, verdicts)
    verdicts.judge_directions()
    assert not verdicts.offenders


def test_with_two_senders_only_non_finite_copies_are_dropped():
    """No majority exists between two peers: a faster honest peer and a liar look alike."""
    copies = honest_copies(n=2)
    copies[1] = (copies[1][0] * 5, 700.0)
    verdicts = Verdicts()
    assert torch.allclose(robust_mean(copies, NAMES, verdicts), plain_mean(copies), atol=1e-5)
    assert not verdicts.offenders
    copies[1] = (torch.full((256,), float("nan")), 100.0)
    assert torch.allclose(robust_mean(copies, NAMES, verdicts), copies[0][0])
    assert set(verdicts.offenders) == {"honest-b"}


def test_banned_senders_are_ignored():
    copies = honest_copies()
    copies[3] = (copies[0][0] * 3, 100.0)
    verdicts = Verdicts()
    result = robust_mean(copies, NAMES, verdicts, banned=lambda peer: peer == "attacker")
    honest = {i: c for i, c in copies.items() if i < 3}
    assert torch.allclose(result, plain_mean(honest), atol=1e-6)
    assert "attacker" in verdicts.notes and not verdicts.offenders


def test_nothing_left_means_no_change():
    copies = {0: (torch.full((8,), float("nan")), 1.0)}
    assert torch.equal(robust_mean(copies, NAMES, Verdicts()), torch.zeros(8))


def test_a_majority_that_sent_next_to_nothing_cannot_ban_the_peer_that_trained():
    """The swarm's last average floors the median: without it, the trainer below is 25 x the
    median of three near-empty copies and banned (measured in a real-process run)."""
    trained = honest_copies(n=1)[0]
    copies = {0: trained, **{i: (trained[0] * 0.04, 100.0) for i in (1, 2, 3)}}
    rms = trained[0].norm().item() / 256 ** 0.5
    unfloored = Verdicts()
    robust_mean(copies, NAMES, unfloored)
    assert set(unfloored.offenders) == {"honest-a"}
    floored = Verdicts()
    result = robust_mean(copies, NAMES, floored, reference_rms=0.5 * rms)
    assert not floored.offenders and not floored.notes
    assert torch.allclose(result, plain_mean(copies), atol=1e-6)
    # A scaled copy is still far outside the bound set by the peer that trained.
    copies[3] = (trained[0] * 1e4, 100.0)
    scaled = Verdicts()
    robust_mean(copies, NAMES, scaled, reference_rms=0.5 * rms)
    assert set(scaled.offenders) == {"attacker"}


def test_a_group_whose_majority_did_not_move_bounds_the_trainer_however_far_it_is():
    """Measured in a loaded fresh-clone run: peers that trained nothing averaged among
    themselves, so their floor shrank to 1/18 of the honest miner's change, and 4 of 5 of them
    banned it ("norm 0.0868 > 2 x median 0.0049"). Bans compare with the senders that moved."""
    trained = honest_copies(n=1)[0]
    rms = trained[0].norm().item() / 256 ** 0.5
    copies = {0: trained, 1: (trained[0] * 0.3, 100.0), 2: (torch.zeros(256), 100.0),
              3: (torch.zeros(256), 100.0)}
    for floor in (0.0, rms / 18, rms / 1000):
        verdicts = Verdicts()
        result = robust_mean(copies, NAMES, verdicts, reference_rms=floor)
        assert not verdicts.offenders, (floor, verdicts.offenders)
        assert torch.isfinite(result).all()
    # In the same group a scaled copy is judged against the trainer, and banned.
    copies[3] = (trained[0] * 1e4, 100.0)
    scaled = Verdicts()
    robust_mean(copies, NAMES, scaled, reference_rms=rms / 18)
    assert set(scaled.offenders) == {"attacker"}


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 8, 15, NETWORK_MEDIAN_MAX, NETWORK_MEDIAN_MAX + 1])
def test_the_fast_coordinate_median_is_torch_median_exactly(count):
    """The sorting network must pick the very value torch's lower median picks, ties included."""
    generator = torch.Generator().manual_seed(count)
    tensors = [torch.randn(4, 333, generator=generator) for _ in range(count)]
    for tensor in tensors[1:]:
        tensor[0, :50] = tensors[0][0, :50]  # ties across all copies
    if count > 2:
        tensors[2][1, :40] = tensors[1][1, :40]  # ties within a pair
    expected = torch.stack(tensors).median(dim=0).values
    assert torch.equal(coordinate_median(tensors), expected)


@pytest.mark.parametrize("compression", [NoCompression(), Float16Compression()])
def test_the_parts_are_the_ones_hivemind_cuts(compression):
    """A validator makes the all-reduce's cut itself (validator/consistency.py), so it must be
    hivemind's: checked against its ``TensorPartContainer`` with tensors under, at and over one
    part (2 ** 19 bytes after compression) and a group of three."""
    tensors = [torch.zeros(7, 5), torch.zeros(2 ** 17), torch.zeros(300_001), torch.zeros(3)]
    container = TensorPartContainer(tensors, peer_fractions=(1.0, 1.0, 1.0),
                                    compression=compression)
    cut = [part.numel() for peer in range(3) for part in container.get_raw_input_parts(peer)]
    assert part_sizes(tensors, compression) == cut
    assert len(cut) > len(tensors)
